"""``nta bench``: the allocator against the ones people use (no root), and real traffic (root).

The work is in harness.bench.alloc and harness.bench.traffic; this module is the parsers and handlers.
"""

from __future__ import annotations

import argparse
import os

from harness import jsonfile
from harness.commands import csv, examples, positive_float, positive_int, write_doc
from harness.errors import NtaError


def _out(args, doc) -> int:
    write_doc(args, doc)
    return 0


def cmd_bench_alloc(args) -> int:
    jsonfile.check_writable(args.json)
    bad = [t for t in args.traces if t not in ("imix", "uniform", "pcap")]
    if bad:
        raise NtaError(f"unknown trace {bad[0]!r}: choose imix, uniform, pcap")
    from harness.bench import alloc
    from harness.pcapfile import check_replayable, load

    allocators = args.allocators or [a for a in ("nta", "pow2", *alloc.PEERS)
                                     if args.pattern == "single" or a != "pow2"]
    bad = [a for a in allocators if a not in ("nta", "pow2", *alloc.PEERS)]
    if bad:
        raise NtaError(f"unknown allocator {bad[0]!r}: choose nta, pow2, {', '.join(alloc.PEERS)}")
    if args.pattern != "single" and "pow2" in allocators:
        raise NtaError(f"--pattern {args.pattern}: pow2 runs one thread only")
    if args.threads and args.pattern == "single":
        raise NtaError(f"--threads {args.threads}: with --pattern producer-consumer (pairs) or per-thread")
    if any(w < 1 for w in args.windows):
        raise NtaError(f"bad --windows {','.join(map(str, args.windows))}: each must be 1 or more")
    if "pcap" in args.traces:
        check_replayable(load(args.pcap or alloc.DEFAULT_PCAP, keep_frames=False))  # fails here, in one line
    doc = alloc.bench_alloc(traces=args.traces, windows=args.windows, steps=args.steps, repeats=args.repeats,
                            allocators=allocators, pcap=args.pcap, seed=args.seed,
                            processes=args.processes, pattern=args.pattern, threads=args.threads)
    return _out(args, doc)


def cmd_bench_frag(args) -> int:
    from harness.bench import alloc

    jsonfile.check_writable(args.json)
    return _out(args, alloc.bench_frag(pages=args.pages, seed=args.seed, plot_dir=args.plot))


def cmd_bench_bulk(args) -> int:
    from harness.bench import alloc

    jsonfile.check_writable(args.json)
    return _out(args, alloc.bench_bulk(batch=args.batch, seconds=args.seconds))


def cmd_bench_pool(args) -> int:
    from harness.bench import alloc

    jsonfile.check_writable(args.json)
    from harness.nta import pool_allocator

    allocators = list(dict.fromkeys(pool_allocator(x) for x in args.allocators))
    return _out(args, alloc.bench_pool(loops=args.loops, repeats=args.repeats, allocators=allocators))


def cmd_bench_e2e(args) -> int:
    from harness.bench import traffic

    jsonfile.check_writable(args.json)
    return _out(args, traffic.bench_e2e(loops=args.loops, hold=args.hold, repeats=args.repeats))


def cmd_bench_replay(args) -> int:
    from harness.bench import traffic

    jsonfile.check_writable(args.json)
    return _out(args, traffic.bench_replay(loops=args.loops, repeats=args.repeats, napi=args.napi,
                                               batch=args.batch))


def cmd_bench_real(args) -> int:
    from harness.bench import traffic

    jsonfile.check_writable(args.json)
    if args.plot is not None and not os.path.isdir(args.plot):
        raise NtaError(f"--plot {args.plot}: not a directory")
    return _out(args, traffic.bench_real(loops=args.loops, pps=args.pps, holds=args.holds,
                                         allocators=args.allocators, pcap=args.pcap, plot_dir=args.plot,
                                         rx=args.rx, copybreak=args.copybreak))


def cmd_bench_pressure(args) -> int:
    from harness.bench import pressure

    jsonfile.check_writable(args.json)
    if args.plot is not None and not os.path.isdir(args.plot):
        raise NtaError(f"--plot {args.plot}: not a directory")
    if args.permit:
        from harness.permit import Filter

        Filter(args.permit)  # a bad filter: one line, exit 2, before any run
    return _out(args, pressure.bench_pressure(pcap=args.pcap, loops=args.loops, pps=args.pps, hold=args.hold,
                                              allocators=args.allocators, budget=args.budget, permit=args.permit,
                                              stuck=args.stuck, permit_budget=args.permit_budget,
                                              replayer=args.replayer, rx=args.rx,
                                              plot_dir=args.plot))


def add(sub) -> None:
    p = sub.add_parser(
        "bench", help="benchmarks: allocators against peers, the page pool, and real traffic (root)",
        description="Benchmarks print a table and, with --json FILE, write the same figures. "
                    "'make bench' runs them all.",
        epilog=examples("""
            nta bench alloc                          # NTA vs pow2, glibc, jemalloc, tcmalloc, mimalloc
            nta bench alloc --traces imix --windows 1024 --steps 200000
            nta bench frag --plot build              # the NTA author's test, with page maps
            nta bench bulk --json bulk.json
            nta bench pool                           # the kernel's bench_page_pool_simple shapes
            nta bench e2e                            # root: XDP alone vs the whole harness
            nta bench replay                         # root: tcpreplay vs the built-in replayer
            nta bench real --plot build              # root: the pool's four allocators on real traffic
            nta bench pressure --permit 'udp port 10003' --plot build  # root: the memory each needs"""),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    bsub = p.add_subparsers(dest="bench_cmd", metavar="{alloc,frag,bulk,pool,e2e,replay,real,pressure}", required=True)
    a = bsub.add_parser("alloc", help="ns per alloc+free and space on packet-size traces, against peers")
    a.add_argument("--traces", type=csv(str), default=["imix", "uniform", "pcap"],
                   help="comma list of imix, uniform, pcap (default all)")
    a.add_argument("--windows", type=csv(int), default=[1024, 16384],
                   help="live blocks (default 1024,16384)")
    a.add_argument("--steps", type=positive_int, default=2_000_000,
                   help="timed steps per trace (default 2M)")
    a.add_argument("--repeats", type=positive_int, default=7, help="timed slices a process (default 7)")
    a.add_argument("--processes", type=positive_int, default=3,
                   help="processes per allocator and trace; medians are shown (default 3)")
    a.add_argument("--allocators", type=csv(str), default=None,
                   help="comma list (default nta, pow2 (single only), glibc, jemalloc, tcmalloc, mimalloc)")
    a.add_argument("--pattern", choices=("single", "producer-consumer", "per-thread"), default="single",
                   help="single: one thread (default); producer-consumer: one thread allocates, another frees "
                        "(the NTA's free posted to the owner lock-free); per-thread: two threads, each its own "
                        "blocks (the NTA: an arena each)")
    a.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="producer-consumer: N pairs of threads, each pair with its own ring (the NTA: its own "
                        "pool and arena), ns per pair over all pairs' steps (default 1); per-thread: N threads "
                        "(default 2). Scaling past two CPUs, where more CPUs exist")
    a.add_argument("--pcap", metavar="FILE", help="capture whose frame sizes make the pcap trace "
                                                  "(default ../shared/pcaps/tcpreplay-test.pcap)")
    a.add_argument("--seed", type=int, default=1)
    a.add_argument("--json", metavar="FILE")
    a.set_defaults(func=cmd_bench_alloc)
    f = bsub.add_parser("frag", help="fill 4094 pages with random sizes, halving the maximum at each failure")
    f.add_argument("--pages", type=positive_int, default=4094)
    f.add_argument("--seed", type=int, default=1)
    f.add_argument("--plot", metavar="DIR", help="write the page maps as DIR/frag-page-maps.png")
    f.add_argument("--json", metavar="FILE")
    f.set_defaults(func=cmd_bench_frag)
    b = bsub.add_parser("bulk", help="allocations and frees per second through the numpy bulk calls")
    b.add_argument("--batch", type=positive_int, default=1024)
    b.add_argument("--seconds", type=positive_float, default=3.0)
    b.add_argument("--json", metavar="FILE")
    b.set_defaults(func=cmd_bench_bulk)
    pp = bsub.add_parser("pool",
                         help="page pool: fast path, ring, slow path, fragments (the kernel's shapes)")
    pp.add_argument("--loops", type=positive_int, default=2_000_000)
    pp.add_argument("--repeats", type=positive_int, default=5)
    pp.add_argument("--allocators", type=csv(str), default=["nta", "slab", "ppfrag", "page"],
                    help="who places the frag shape's fragments, comma-separated (default all four)")
    pp.add_argument("--json", metavar="FILE")
    pp.set_defaults(func=cmd_bench_pool)
    e = bsub.add_parser("e2e", help="bare XDP_DROP pps vs the full harness, and latency at half rate (root)")
    e.add_argument("--loops", type=positive_int, default=15000,
                   help="loops of the IMIX capture (default 15000)")
    e.add_argument("--hold", default="flow:16", help="the controller's hold policy (default flow:16)")
    e.add_argument("--repeats", type=positive_int, default=3, help="rounds of the three runs (default 3)")
    e.add_argument("--json", metavar="FILE")
    e.set_defaults(func=cmd_bench_e2e)
    rp = bsub.add_parser("replay", help="tcpreplay vs the built-in and xdp replayers, pps at the XDP hook (root)")
    rp.add_argument("--loops", type=positive_int, default=1000,
                    help="loops of 1,200 frames per run (default 1000)")
    rp.add_argument("--repeats", type=positive_int, default=3, help="runs per replayer (default 3)")
    rp.add_argument("--napi", type=csv(str), default=["softirq", "threaded"],
                    help="NAPI modes to measure, comma-separated (default softirq,threaded)")
    rp.add_argument("--batch", type=positive_int, default=None,
                    help="frames per call of the built-in replayers (default 64; xdp 4096)")
    rp.add_argument("--json", metavar="FILE")
    rp.set_defaults(func=cmd_bench_replay)
    rl = bsub.add_parser("real", help="the pool's four allocators on the same replayed traffic: pages and "
                                      "utilisation at the peak, page maps (root)")
    rl.add_argument("--pcap", metavar="FILE", help="capture to replay (default the bundled IMIX)")
    rl.add_argument("--loops", type=positive_int, default=300,
                    help="loops of the capture per run (default 300)")
    rl.add_argument("--pps", type=positive_float, default=200_000, help="replay rate (default 200000)")
    rl.add_argument("--holds", type=csv(str), default=["flow:16", "packets:3000", "random:3000"],
                    help="hold policies, comma-separated (default flow:16,packets:3000,random:3000)")
    rl.add_argument("--allocators", type=csv(str), default=["nta", "slab", "ppfrag", "page"],
                    help="comma-separated (default nta,slab,ppfrag,page)")
    rl.add_argument("--rx", choices=("ring", "afxdp"), default="ring",
                    help="ring: a metadata record a frame (the default); afxdp: the frames themselves through "
                         "AF_XDP into the arena, the memory the held frames take against 2,048-byte chunks")
    rl.add_argument("--copybreak", type=int, default=0, metavar="BYTES",
                    help="with --rx afxdp: the nta copies frames of at most BYTES out of their buffers")
    rl.add_argument("--plot", metavar="DIR", help="write the page maps of nta and slab at their peak as "
                                                  "DIR/real-page-maps.png")
    rl.add_argument("--json", metavar="FILE")
    rl.set_defaults(func=cmd_bench_real)
    pr = bsub.add_parser("pressure", help="the fewest pages each allocator's pool needs to drop nothing, what each "
                                          "drops with the NTA's, and with --permit the reserve each needs (root)")
    pr.add_argument("--pcap", metavar="FILE", help="capture to replay (default the bundled IMIX)")
    pr.add_argument("--loops", type=positive_int, default=100, help="loops of the capture per run (default 100)")
    pr.add_argument("--pps", type=positive_float, default=200_000, help="replay rate (default 200000)")
    pr.add_argument("--hold", default="random:3000", help="the hold policy (default random:3000)")
    pr.add_argument("--allocators", type=csv(str), default=["nta", "slab", "ppfrag", "page"],
                    help="comma-separated (default nta,slab,ppfrag,page)")
    pr.add_argument("--budget", type=positive_int, default=None, metavar="PAGES",
                    help="the budget every allocator is held to for its drops (default: the NTA's zero-drop budget)")
    pr.add_argument("--permit", metavar="FILTER", default=None,
                    help="also find the smallest reserve that keeps every frame this tcpdump filter permits while "
                         "--stuck flows fill the budget")
    pr.add_argument("--stuck", type=positive_int, default=4, metavar="K",
                    help="with --permit: flows never read, filling the budget (default 4)")
    pr.add_argument("--permit-budget", type=positive_int, default=8, metavar="PAGES",
                    help="with --permit: the budget the stuck flows fill, small so that they fill it at once and "
                         "the permitted traffic lives in the reserve all run (default 8)")
    pr.add_argument("--replayer", choices=("builtin", "xdp", "tcpreplay"), default="builtin",
                    help="one sender, so that the controller sees the capture's order (default builtin)")
    pr.add_argument("--rx", choices=("ring", "afxdp"), default="ring", help="metadata records (default) or AF_XDP")
    pr.add_argument("--plot", metavar="DIR", help="write DIR/pressure.png: drops against budget, a line per allocator")
    pr.add_argument("--json", metavar="FILE")
    pr.set_defaults(func=cmd_bench_pressure)

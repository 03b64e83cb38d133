"""nta: the command line.

Every error a user can cause (a bad flag, a bad capture, a missing
privilege) is one line on stderr and a non-zero exit status; SIGINT, SIGTERM
and SIGHUP unwind through the context managers, so nothing is left behind.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import textwrap

from harness import __version__
from harness.errors import NtaError

EXIT_USAGE = 2
EXIT_UNRECONCILED = 3
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line: 'nta run: error: ...'."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _examples(text: str) -> str:
    return "examples:\n" + textwrap.indent(textwrap.dedent(text).strip("\n"), "  ")


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {v}")
    return v


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {s!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {s}")
    return v


# -- nta run -------------------------------------------------------------------

def cmd_run(args) -> int:
    from harness import run, xdp
    from harness.replay import ReplayOptions

    if args.ebpf:
        print(xdp.describe(args.action))
        return 0
    if args.no_replay or args.iface:
        if not (args.no_replay and args.iface):
            raise NtaError("--iface and --no-replay go together: measure what arrives on a named interface")
        if args.pcap:
            raise NtaError("--pcap has nothing to do with --no-replay")
        from harness import live

        cfg = run.RunConfig(pcap="", mode=args.mode, action=args.action, interval=args.interval,
                            json_path=args.json, quiet=args.quiet, controller=args.controller, hold=args.hold,
                            ring_pages=args.ring_pages, arena_pages=args.arena_pages, drain_us=args.drain_us,
                            allocator=args.allocator)
        doc = live.run_live(cfg, args.iface, args.netns, args.duration)
        return 0 if doc.get("reconciled", True) else EXIT_UNRECONCILED
    # the built-in replayer's options, as given (RunConfig holds their defaults)
    builtin = {k: getattr(args, k) for k in ("send", "threads", "batch") if getattr(args, k) is not None}
    if builtin and args.replayer != "builtin":
        raise NtaError(f"{', '.join(f'--{k}' for k in builtin)}: only with --replayer builtin")
    cfg = run.RunConfig(
        pcap=args.pcap,
        replay=ReplayOptions(loops=args.loops, topspeed=args.topspeed, pps=args.pps, mbps=args.mbps,
                             multiplier=args.multiplier, duration=args.duration, limit=args.limit),
        mode=args.mode, action=args.action, mtu=args.mtu, interval=args.interval,
        json_path=args.json, tag=args.name, quiet=args.quiet, controller=args.controller, hold=args.hold,
        ring_pages=args.ring_pages, arena_pages=args.arena_pages, drain_us=args.drain_us, plot_dir=args.plot,
        allocator=args.allocator, replayer=args.replayer, napi=args.napi, **builtin)
    result = run.run(cfg)
    if result is not None and not result.reconciled:
        print("nta: error: counts did not reconcile (see the summary)", file=sys.stderr)
        return EXIT_UNRECONCILED
    return 0


def add_run(sub) -> None:
    p = sub.add_parser(
        "run", help="replay a capture over a veth pair into an XDP program and count it",
        description="Bring up a veth pair between two new namespaces, attach the counting XDP program "
                    "on the dut end, replay FILE with tcpreplay from the gen end, print one line per "
                    "interval and a summary that reconciles every counting point, then tear it all down.",
        epilog=_examples("""
            nta run --pcap build/imix.pcap --loops 2000 --topspeed
            nta run --pcap capture.pcap --pps 100000 --mode generic --json out.json
            nta run --pcap capture.pcapng --replayer builtin --topspeed --loops 100
            nta run --pcap build/imix.pcap --loops 2000 --topspeed --napi threaded --replayer builtin \\
                    --send tx-ring
            nta run --pcap build/imix.pcap --loops 500 --pps 200000 --controller --hold flow:16
            nta run --iface eth1 --no-replay --mode generic --controller --duration 30
            nta run --ebpf                     # print the XDP program and its flags
            exit status: 0 ok, 1 error, 2 bad usage or a malformed capture, 3 counts did not reconcile"""),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pcap", metavar="FILE",
                   help="capture to replay: pcap or pcapng; Ethernet, or a link type given an Ethernet "
                        "header (Linux cooked, raw IP, BSD loopback); see 'nta inspect FILE'")
    p.add_argument("--replayer", choices=("tcpreplay", "builtin"), default="tcpreplay",
                   help="tcpreplay, or the built-in sendmmsg replayer (default tcpreplay)")
    p.add_argument("--send", choices=("sendmmsg", "tx-ring"), default=None,
                   help="with --replayer builtin: a sendmmsg call per batch (default), or a PACKET_TX_RING "
                        "and a send call per batch (faster with --napi threaded, slower without)")
    p.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help="with --replayer builtin: N senders, each on its own CPU and veth queue, each "
                        "with whole conversations of the capture (default 1)")
    p.add_argument("--batch", type=_positive_int, default=None, metavar="N",
                   help="with --replayer builtin: frames per call, 1..1024 (default 64)")
    p.add_argument("--loops", type=_positive_int, default=1, help="replay the capture N times (default 1)")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--topspeed", action="store_true", help="replay as fast as possible")
    rate.add_argument("--pps", type=_positive_float, help="replay at R packets per second")
    rate.add_argument("--mbps", type=_positive_float, help="replay at R Mbit/s")
    rate.add_argument("--multiplier", type=_positive_float, help="replay at X times the capture's timing")
    p.add_argument("--duration", type=_positive_int, metavar="S",
                   help="stop the replay (or with --no-replay, the measurement) after S seconds")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="stop the replay after N packets")
    p.add_argument("--mode", choices=("native", "generic"), default="native",
                   help="XDP attach mode (default native)")
    p.add_argument("--napi", choices=("softirq", "threaded"), default="softirq",
                   help="where the dut veth runs XDP: in the softirq of the sending CPU (default), or in a "
                        "NAPI kernel thread the scheduler may put on another CPU (native mode)")
    p.add_argument("--action", choices=("drop", "pass"), default="drop", help="XDP verdict (default drop)")
    p.add_argument("--mtu", type=int, default=None,
                   help="veth MTU; larger frames are skipped and counted (default: the smallest that "
                        "carries every frame, at least 1500)")
    p.add_argument("--interval", type=_positive_float, default=1.0, help="seconds between lines (default 1)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON ('-' for stdout)")
    p.add_argument("--plot", metavar="DIR",
                   help="write pps.png (and with --controller pool.png, pagemap.png) into DIR")
    p.add_argument("--name", metavar="TAG", help="topology name (default: this process id)")
    p.add_argument("--iface", metavar="IFACE",
                   help="with --no-replay: attach to this interface (a real NIC, or any you name)")
    p.add_argument("--netns", metavar="NS", help="with --iface: the interface's network namespace")
    p.add_argument("--no-replay", action="store_true",
                   help="no topology, no replay: measure traffic from an external generator until "
                        "--duration or Ctrl-C")
    p.add_argument("--controller", action="store_true",
                   help="XDP hands each frame's metadata through a ring buffer to the controller, which "
                        "allocates it from the dut's page pool on an NTA arena and holds it (--hold)")
    p.add_argument("--hold", default="immediate", metavar="POLICY",
                   help="with --controller: immediate, packets:N, usec:T, flow:K or random:N")
    p.add_argument("--allocator", choices=("nta", "pow2"), default="nta",
                   help="with --controller: fragments at exact size (nta) or rounded to a power of two "
                        "(pow2)")
    p.add_argument("--ring-pages", type=_positive_int, default=256, metavar="N",
                   help="metadata ring size in pages, a power of two (default 256)")
    p.add_argument("--arena-pages", type=_positive_int, default=65536, metavar="N",
                   help="arena size in 4 KiB pages, reserved, committed as used (default 65536)")
    p.add_argument("--drain-us", type=_positive_int, default=200, metavar="US",
                   help="drain the metadata ring every US microseconds (default 200)")
    p.add_argument("-q", "--quiet", action="store_true", help="no interval lines or summary")
    p.add_argument("--ebpf", action="store_true", help="print the XDP program as compiled, then exit")
    p.set_defaults(func=cmd_run, needs_pcap=True)


# -- nta topo --------------------------------------------------------------------

def cmd_topo_up(args) -> int:
    from harness import run, topology

    run.require_root("nta topo up")
    topo = topology.Topology(args.name, mtu=args.mtu, persistent=True).create()
    print(f"{topo.gen_ns}:{topo.gen_if} <=> {topo.dut_ns}:{topo.dut_if}, mtu {topo.mtu}, IPv6 off "
          f"(remove with 'nta topo down {topo.tag}')")
    return 0


def cmd_topo_down(args) -> int:
    from harness import run, topology

    run.require_root("nta topo down")
    for tag in args.names:
        topology.check_tag(tag)
    topos = topology.list_topologies(probe=False)
    known = {t.tag: t for t in topos}
    if args.names:
        missing = [tag for tag in args.names if tag not in known]
        if missing:
            raise NtaError(f"no topology named {', '.join(missing)} (see 'nta topo status')")
        topos = [known[tag] for tag in args.names]
    status = 0
    for t in topos:
        if t.state == "live" and not args.force:
            print(f"nta: skipped {t.tag}: in use by pid {t.owner_pid} (--force removes it anyway)",
                  file=sys.stderr)
            status = 1
            continue
        removed = topology.remove_namespaces(t.tag)
        print(f"removed {t.tag} ({t.state}): {', '.join(removed) or 'owner record only'}")
    if not topos:
        print("no nta topologies")
    return status


def cmd_topo_status(args) -> int:
    from harness import report, topology

    report.check_writable(args.json)
    topos = topology.list_topologies()
    if args.json:
        import dataclasses
        report.write_json(args.json, {"tool": "nta", "version": __version__, "command": "topo status",
                                      "topologies": [dataclasses.asdict(t) for t in topos]})
        if args.json == "-":
            return 0
    if not topos:
        print("no nta topologies")
        return 0
    rows = [[t.tag, t.state, str(t.owner_pid or "-"), " ".join(t.namespaces) or "-", str(t.mtu or "-"),
             f"{t.xdp} (id {t.xdp_prog_id})" if t.xdp else "-"] for t in topos]
    report.table(rows, ["name", "state", "owner", "namespaces", "mtu", "xdp"])
    return 0


def add_topo(sub) -> None:
    p = sub.add_parser(
        "topo", help="create, remove and list the harness's namespaces and veth pairs",
        description="Topologies are two namespaces (nta-gen-NAME, nta-dut-NAME) joined by a veth pair "
                    "(veth-gen <=> veth-dut), IPv6 off. 'nta run' makes its own and removes it; these "
                    "commands are for a topology that outlives a command, and for clean-up after a "
                    "killed run.",
        epilog=_examples("""
            nta topo up --name lab --mtu 9000   # persistent, until 'nta topo down lab'
            nta topo status
            nta topo down                      # every stale or persistent topology
            nta topo down lab"""),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    tsub = p.add_subparsers(dest="topo_cmd", metavar="{up,down,status}", required=True)
    up = tsub.add_parser("up", help="create a persistent topology")
    up.add_argument("--name", default="manual", help="topology name (default 'manual')")
    up.add_argument("--mtu", type=int, default=1500, help="veth MTU (default 1500)")
    up.set_defaults(func=cmd_topo_up)
    down = tsub.add_parser("down", help="remove topologies (default: all stale and persistent ones)")
    down.add_argument("names", nargs="*", metavar="NAME")
    down.add_argument("--force", action="store_true", help="also remove topologies of running commands")
    down.set_defaults(func=cmd_topo_down)
    st = tsub.add_parser("status", help="list topologies, their owners and XDP programs")
    st.add_argument("--json", metavar="FILE", help="also write the list as JSON ('-' for stdout)")
    st.set_defaults(func=cmd_topo_status)


# -- nta pcap --------------------------------------------------------------------

def cmd_inspect(args) -> int:
    from harness import pcapfile, report

    report.check_writable(args.json)
    docs, failed = [], 0
    human = args.json != "-"
    for path in args.files:
        try:
            c = pcapfile.load(path, mtu=args.mtu, keep_frames=False)
        except pcapfile.CaptureError as exc:
            print(f"nta: error: {exc}", file=sys.stderr)
            docs.append({"path": path, "error": str(exc)})
            failed += 1
            continue
        docs.append(c.as_dict())
        if not human:
            continue
        n = report.n
        hist = ", ".join(f"{k}: {n(v)}" for k, v in c.sizes_hist.items()) or "-"
        print(f"{path}\n"
              f"  format       {c.format}, {c.byte_order}-endian"
              + (f", {c.interfaces} interface{'s' if c.interfaces != 1 else ''}" if c.format == "pcapng"
                 else "") + "\n"
              f"  link types   {c.linktype_text() or '-'}\n"
              f"  packets      {n(c.packets)} ({n(c.bytes)} bytes captured) over {c.duration:.6f} s"
              + (f"; {n(c.ts_backwards)} timestamps go backwards" if c.ts_backwards else "") + "\n"
              f"  to send      {n(c.frames)} frames, {n(c.frame_bytes)} bytes"
              + (f", {c.min_frame}..{c.max_frame} bytes each" if c.frames else "") + "\n"
              f"  frame sizes  {hist}\n"
              f"  VLAN         {n(c.vlan)} tagged, {n(c.qinq)} with two or more tags\n"
              f"  IPv4, IPv6   {n(c.ipv4)}, {n(c.ipv6)}\n"
              f"  truncated    {n(c.truncated)} (captured shorter than on the wire; sent as captured)\n"
              f"  MTU          {c.mtu} ({'given' if args.mtu else 'chosen'}; the frames need {c.mtu_needed})")
        print(f"  converted    {n(c.converted)} given an Ethernet header"
              + (f"; {n(c.fcs_stripped)} without the FCS the capture kept" if c.fcs_stripped else ""))
        for why, k in sorted(c.skipped.items()):
            print(f"  skipped      {n(k)}: {why}")
    if args.json:
        report.write_json(args.json, {"tool": "nta", "version": __version__, "command": "inspect",
                                      "captures": docs})
    return pcapfile.CaptureError.exit_code if failed else 0


def cmd_pcap_imix(args) -> int:
    from harness import imix

    count = imix.write_imix(args.out, cycles=args.cycles)
    print(f"wrote {args.out}: {count} packets (64/576/1500-byte UDP frames, 7:4:1)")
    return 0


def _inspect_args(p) -> None:
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--mtu", type=int, default=None,
                   help="the veth MTU to plan for (default: the smallest that carries every frame)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON ('-' for stdout only)")
    p.set_defaults(func=cmd_inspect)


def add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="what a capture holds and what of it a replay sends",
                       description="Read each FILE as 'nta run' does and summarise it: format, link types, "
                                   "packets, frames to send after conversion and skips, frame sizes, VLAN, "
                                   "IPv4/IPv6 and truncated counts, the MTU. Exit status 2 if a file is "
                                   "malformed.",
                       epilog=_examples("""
                           nta inspect ../shared/pcaps/pcpp-pcapng-example.pcapng
                           nta inspect --json - capture.pcap"""),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _inspect_args(p)


def add_pcap(sub) -> None:
    p = sub.add_parser("pcap", help="write the bundled IMIX capture ('pcap info' = 'inspect')",
                       epilog=_examples("""
                           nta pcap imix build/imix.pcap --cycles 100"""),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    psub = p.add_subparsers(dest="pcap_cmd", metavar="{info,imix}", required=True)
    _inspect_args(psub.add_parser("info", help="the same as 'nta inspect'"))
    im = psub.add_parser("imix", help="write the deterministic IMIX capture (64/576/1500 bytes, 7:4:1)")
    im.add_argument("out", metavar="OUT")
    im.add_argument("--cycles", type=_positive_int, default=100,
                    help="rounds of 12 frames (default 100: 1,200 packets)")
    im.set_defaults(func=cmd_pcap_imix)


# -- nta bench -------------------------------------------------------------------

def _csv(kind):
    def parse(s: str):
        items = [x.strip() for x in s.split(",") if x.strip()]
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        return [kind(x) for x in items] if kind is not str else items
    return parse


def _bench_out(args, doc) -> int:
    from harness import report

    if args.json:
        report.write_json(args.json, doc)
    return 0


def cmd_bench_alloc(args) -> int:
    from harness import bench, report

    report.check_writable(args.json)
    bad = [t for t in args.traces if t not in ("imix", "uniform", "pcap")]
    if bad:
        raise NtaError(f"unknown trace {bad[0]!r}: choose imix, uniform, pcap")
    bad = [a for a in args.allocators if a not in ("nta", "pow2", *bench.PEERS)]
    if bad:
        raise NtaError(f"unknown allocator {bad[0]!r}: choose nta, pow2, {', '.join(bench.PEERS)}")
    if any(w < 1 for w in args.windows):
        raise NtaError(f"bad --windows {','.join(map(str, args.windows))}: each must be 1 or more")
    if "pcap" in args.traces:
        from harness.pcapfile import check_replayable, load

        check_replayable(load(args.pcap or bench.DEFAULT_PCAP, keep_frames=False))  # fails here, in one line
    doc = bench.bench_alloc(traces=args.traces, windows=args.windows, steps=args.steps, repeats=args.repeats,
                            allocators=args.allocators, pcap=args.pcap, seed=args.seed,
                            processes=args.processes)
    return _bench_out(args, doc)


def cmd_bench_frag(args) -> int:
    from harness import bench, report

    report.check_writable(args.json)
    return _bench_out(args, bench.bench_frag(pages=args.pages, seed=args.seed, plot_dir=args.plot))


def cmd_bench_bulk(args) -> int:
    from harness import bench, report

    report.check_writable(args.json)
    return _bench_out(args, bench.bench_bulk(batch=args.batch, seconds=args.seconds))


def cmd_bench_pool(args) -> int:
    from harness import bench, report

    report.check_writable(args.json)
    return _bench_out(args, bench.bench_pool(loops=args.loops, repeats=args.repeats))


def cmd_bench_e2e(args) -> int:
    from harness import bench, report

    report.check_writable(args.json)
    return _bench_out(args, bench.bench_e2e(loops=args.loops, hold=args.hold))


def cmd_bench_replay(args) -> int:
    from harness import bench, report

    report.check_writable(args.json)
    from harness.run import NAPI_MODES

    bad = [m for m in args.napi if m not in NAPI_MODES]
    if bad:
        raise NtaError(f"bad --napi {bad[0]!r}: choose {', '.join(NAPI_MODES)}")
    return _bench_out(args, bench.bench_replay(loops=args.loops, repeats=args.repeats, napi=args.napi,
                                               batch=args.batch))


def add_bench(sub) -> None:
    p = sub.add_parser(
        "bench", help="allocator benchmarks: speed and space, fragmentation, bulk calls, page pool",
        description="Benchmarks print a table and, with --json FILE, write the same figures. "
                    "'make bench' runs them all.",
        epilog=_examples("""
            nta bench alloc                          # NTA vs pow2, glibc, jemalloc, tcmalloc, mimalloc
            nta bench alloc --traces imix --windows 1024 --steps 200000
            nta bench frag --plot build              # the NTA author's test, with page maps
            nta bench bulk --json bulk.json
            nta bench pool                           # the kernel's bench_page_pool_simple shapes
            nta bench e2e                            # root: XDP alone vs the whole harness"""),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    bsub = p.add_subparsers(dest="bench_cmd", metavar="{alloc,frag,bulk,pool,e2e,replay}", required=True)
    a = bsub.add_parser("alloc", help="ns per alloc+free and space on packet-size traces, against peers")
    a.add_argument("--traces", type=_csv(str), default=["imix", "uniform", "pcap"],
                   help="comma list of imix, uniform, pcap (default all)")
    a.add_argument("--windows", type=_csv(int), default=[1024, 16384],
                   help="live blocks (default 1024,16384)")
    a.add_argument("--steps", type=_positive_int, default=2_000_000,
                   help="timed steps per trace (default 2M)")
    a.add_argument("--repeats", type=_positive_int, default=7, help="timed slices a process (default 7)")
    a.add_argument("--processes", type=_positive_int, default=3,
                   help="processes per allocator and trace; medians are shown (default 3)")
    a.add_argument("--allocators", type=_csv(str), default=["nta", "pow2", "glibc", "jemalloc", "tcmalloc",
                                                             "mimalloc"])
    a.add_argument("--pcap", metavar="FILE", help="capture whose frame sizes make the pcap trace "
                                                  "(default ../shared/pcaps/tcpreplay-test.pcap)")
    a.add_argument("--seed", type=int, default=1)
    a.add_argument("--json", metavar="FILE")
    a.set_defaults(func=cmd_bench_alloc)
    f = bsub.add_parser("frag", help="fill 4094 pages with random sizes, halving the maximum at each failure")
    f.add_argument("--pages", type=_positive_int, default=4094)
    f.add_argument("--seed", type=int, default=1)
    f.add_argument("--plot", metavar="DIR", help="write the page maps as DIR/frag-page-maps.png")
    f.add_argument("--json", metavar="FILE")
    f.set_defaults(func=cmd_bench_frag)
    b = bsub.add_parser("bulk", help="allocations and frees per second through the numpy bulk calls")
    b.add_argument("--batch", type=_positive_int, default=1024)
    b.add_argument("--seconds", type=_positive_float, default=3.0)
    b.add_argument("--json", metavar="FILE")
    b.set_defaults(func=cmd_bench_bulk)
    pp = bsub.add_parser("pool",
                         help="page pool: fast path, ring, slow path, fragments (the kernel's shapes)")
    pp.add_argument("--loops", type=_positive_int, default=2_000_000)
    pp.add_argument("--repeats", type=_positive_int, default=5)
    pp.add_argument("--json", metavar="FILE")
    pp.set_defaults(func=cmd_bench_pool)
    e = bsub.add_parser("e2e", help="bare XDP_DROP pps vs the full harness, and latency at half rate (root)")
    e.add_argument("--loops", type=_positive_int, default=2500,
                   help="loops of the IMIX capture (default 2500)")
    e.add_argument("--hold", default="flow:16", help="the controller's hold policy (default flow:16)")
    e.add_argument("--json", metavar="FILE")
    e.set_defaults(func=cmd_bench_e2e)
    rp = bsub.add_parser("replay", help="tcpreplay vs the built-in replayer, pps at the XDP hook (root)")
    rp.add_argument("--loops", type=_positive_int, default=1000,
                    help="loops of 1,200 frames per run (default 1000)")
    rp.add_argument("--repeats", type=_positive_int, default=3, help="runs per replayer (default 3)")
    rp.add_argument("--napi", type=_csv(str), default=["softirq", "threaded"],
                    help="NAPI modes to measure, comma-separated (default softirq,threaded)")
    rp.add_argument("--batch", type=_positive_int, default=64, help="built-in replayer batch (default 64)")
    rp.add_argument("--json", metavar="FILE")
    rp.set_defaults(func=cmd_bench_replay)


# -- nta attach ------------------------------------------------------------------

def cmd_attach(args) -> int:
    from harness import report
    from harness.nta import Arena

    report.check_writable(args.json)
    with Arena.attach(args.path) as a:
        st = a.stats()
        hist, runs = a.free_histogram()
    doc = {"tool": "nta", "version": __version__, "command": "attach", "path": args.path, "kind": a.kind,
           "page_size": a.page_size, "chunk_size": a.chunk_size, "max_pages": a.max_pages,
           "reserve_pages": a.reserve_pages, "cache_depth": a.cache_depth, "stats": st,
           "free_regions": {str(k): int(v) for k, v in enumerate(hist) if v}, "free_page_runs": runs}
    if args.json:
        report.write_json(args.json, doc)
        if args.json == "-":
            return 0
    print(f"{args.path}: {a.kind} arena, {a.max_pages:,} pages of {a.page_size} bytes, "
          f"chunks of {a.chunk_size}, reserve {a.reserve_pages} pages, size cache {a.cache_depth}")
    rows = [[k, report.n(v)] for k, v in st.items()]
    report.table(rows, ["counter", "value"])
    return 0


POOL_GROUPS = (
    ("alloc", ("fast", "slow", "slow_high_order", "empty", "refill", "waive", "alloc_fails")),
    ("recycle", ("cached", "cache_full", "ring", "ring_full", "released_refcnt")),
    ("pages", ("maps", "unmaps", "hold", "release", "inflight", "pages_in_use", "cache_len", "ring_len",
               "reserve_pages")),
    ("fragments", ("frags", "frag_bytes", "pinned", "readers_reclaimed")),
    ("destructor", ("dtor_calls", "dtor_steal", "dtor_release", "dtor_pending")),
)


def cmd_pool(args) -> int:
    from harness import report
    from harness.nta import Arena

    report.check_writable(args.json)
    with Arena.attach(args.path) as a:
        pools = a.pools()
    if args.json:
        report.write_json(args.json, {"tool": "nta", "version": __version__, "command": "pool",
                                      "path": args.path, "pools": pools})
        if args.json == "-":
            return 0
    if not pools:
        print(f"{args.path}: no pools")
        return 0
    header = ["counter"] + [f"if {p['ifindex']} q {p['queue']} (pid {p['pid']})" for p in pools]
    rows = []
    for group, names in POOL_GROUPS:
        for name in names:
            rows.append([f"{group}.{name}"] + [report.n(p["stats"][name]) for p in pools])
    print(f"{args.path}: {len(pools)} pool{'s' if len(pools) > 1 else ''} (counters as last published)")
    report.table(rows, header)
    return 0


def add_pool(sub) -> None:
    p = sub.add_parser("pool", help="print the page pools of an arena, with the kernel's counter names",
                       description="Attach to an arena read-only and print the counters its page pools "
                                   "last published (alloc fast/slow/..., recycle cached/ring/..., maps, "
                                   "in flight).",
                       epilog=_examples("""
                           nta pool /dev/shm/nta-run-1234
                           nta pool /dev/shm/nta-run-1234 --json -"""),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", metavar="PATH")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON ('-' for stdout)")
    p.set_defaults(func=cmd_pool)


def add_attach(sub) -> None:
    p = sub.add_parser("attach", help="attach to an arena read-only and print its counters",
                       description="Map an arena another process created (a file under /dev/shm) read-only, "
                                   "validate its header and print its counters; nothing is changed.",
                       epilog=_examples("""
                           nta attach /dev/shm/nta-run-1234
                           nta attach /dev/shm/nta-run-1234 --json -"""),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", metavar="PATH")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON ('-' for stdout)")
    p.set_defaults(func=cmd_attach)


# -- nta doctor ------------------------------------------------------------------

def cmd_doctor(args) -> int:
    from harness import doctor

    failures = doctor.check(verbose=not args.quiet)
    if failures and args.quiet:
        print(f"nta: error: {failures[0]}", file=sys.stderr)
    return 1 if failures else 0


def add_doctor(sub) -> None:
    p = sub.add_parser("doctor", help="check root, BCC, kernel headers, BPF and tcpreplay",
                       description="Check that this machine can run the harness: root, BCC's Python "
                                   "module, the kernel-headers link BCC compiles against, loading an XDP "
                                   "program, tcpreplay.")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the first failure, on one line")
    p.set_defaults(func=cmd_doctor)


# -- main ------------------------------------------------------------------------

def build_parser() -> Parser:
    parser = Parser(
        prog="nta",
        description="nta-harness: replay captures over a veth pair into XDP and measure them.",
        epilog=_examples("""
            sudo nta run --pcap build/imix.pcap --loops 2000 --topspeed
            sudo nta topo status
            nta pcap info capture.pcap
            nta bench alloc
            nta <command> --help"""),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"nta {__version__}")
    sub = parser.add_subparsers(dest="cmd", metavar="{run,topo,pcap,bench,attach,pool,doctor}",
                                required=True)
    add_run(sub)
    add_topo(sub)
    add_inspect(sub)
    add_pcap(sub)
    add_bench(sub)
    add_attach(sub)
    add_pool(sub)
    add_doctor(sub)
    return parser


def _install_signal_handlers() -> None:
    """SIGINT, SIGTERM, SIGHUP unwind this process through its context managers.

    Only this process: pyroute2 forks helpers (to open sockets inside a
    namespace) and stops them with SIGTERM. A forked copy that raised here would
    unwind through a copy of our stack and run our clean-up against the
    parent's namespaces and sockets. A child just dies of the signal.
    """
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt(None if signum == signal.SIGINT else signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "needs_pcap", False) and not args.pcap and not args.ebpf and not args.no_replay:
        parser.exit(EXIT_USAGE, "nta run: error: the following arguments are required: --pcap "
                                "(see 'nta run --help')\n")
    _install_signal_handlers()
    try:
        return args.func(args) or 0
    except NtaError as exc:
        print(f"nta: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        why = f" by {exc.args[0]}" if exc.args and exc.args[0] else ""
        print(f"nta: interrupted{why}; everything it made was removed", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 1
    except Exception as exc:  # a bug: one line for users, the traceback on request
        if os.environ.get("NTA_DEBUG"):
            raise
        print(f"nta: internal error: {type(exc).__name__}: {exc} (NTA_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 70

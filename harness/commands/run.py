"""``nta run``: replay a capture over a veth pair into XDP and count it; or measure a named interface."""

from __future__ import annotations

import argparse
import sys

from harness.commands import EXIT_UNRECONCILED, examples, natural_int, positive_float, positive_int
from harness.errors import NtaError

EXIT_USAGE = 2


def handle(args) -> int:
    from harness import live, run
    from harness.pressure import check as check_limits
    from harness.replay import ReplayOptions
    from harness.run import RunConfig
    from harness.topology import DUT_IF

    if args.no_replay or args.iface:
        if not (args.no_replay and args.iface):
            raise NtaError("--iface and --no-replay go together: measure what arrives on a named interface")
        if args.pcap:
            raise NtaError("--pcap has nothing to do with --no-replay")
    elif not args.pcap and not args.ebpf:
        args.parser.exit(EXIT_USAGE, "nta run: error: the following arguments are required: --pcap "
                                     "(see 'nta run --help')\n")
    # the built-in replayer's options, as given (RunConfig holds their defaults)
    builtin = {k: getattr(args, k) for k in ("send", "threads", "batch") if getattr(args, k) is not None}
    if builtin and args.replayer == "tcpreplay":
        raise NtaError(f"{', '.join(f'--{k}' for k in builtin)}: only with --replayer builtin or xdp")
    if "send" in builtin and args.replayer != "builtin":
        raise NtaError("--send: only with --replayer builtin (the xdp replayer sends by BPF_PROG_RUN)")
    cfg = RunConfig(
        pcap=args.pcap or "",
        replay=ReplayOptions(loops=args.loops, topspeed=args.topspeed, pps=args.pps, mbps=args.mbps,
                             multiplier=args.multiplier, duration=args.duration, limit=args.limit,
                             unique_flows=args.unique_flows),
        mode=args.mode, action=args.action, mtu=args.mtu, interval=args.interval,
        json_path=args.json, tag=args.name, quiet=args.quiet, controller=args.controller, hold=args.hold,
        arena_pages=args.arena_pages, drain_us=args.drain_us, plot_dir=args.plot,
        allocator=args.allocator, replayer=args.replayer, napi=args.napi, strict=args.strict,
        queues=args.queues or 1, free_on=args.free_on, rx=args.rx, fill=args.fill, copybreak=args.copybreak,
        xdp_mode=args.xdp_mode, umem_chunks=args.umem_chunks,
        budget=args.budget, reserve=args.reserve, permit=args.permit, flow_limit=args.flow_limit, stuck=args.stuck,
        **builtin,
        **({"ring_pages": args.ring_pages} if args.ring_pages is not None else {}))
    if args.ebpf:
        check_limits(cfg.budget, cfg.reserve, cfg.permit, cfg.flow_limit, cfg.stuck, cfg.arena_pages,
                     cfg.controller or cfg.rx == "afxdp")
        print(cfg.program(args.netns, args.iface or DUT_IF).describe())
        if cfg.replayer == "xdp":
            print(run.sender_program(cfg).describe())
        return 0
    if args.no_replay:
        doc = live.run_live(cfg, args.iface, args.netns, args.duration, queues=args.queues)
        return 0 if doc.get("reconciled", True) else EXIT_UNRECONCILED
    result = run.run(cfg)
    if result is not None and not result.reconciled:
        print("nta: error: counts did not reconcile (see the summary)", file=sys.stderr)
        return EXIT_UNRECONCILED
    return 0


def add(sub) -> None:
    p = sub.add_parser(
        "run", help="replay a capture over a veth pair into an XDP program and count it",
        description="Bring up a veth pair between two new namespaces, attach the counting XDP program "
                    "on the dut end, replay FILE with tcpreplay from the gen end, print one line per "
                    "interval and a summary that reconciles every counting point, then tear it all down.",
        epilog=examples("""
            nta run --pcap build/imix.pcap --loops 2000 --topspeed
            nta run --pcap capture.pcap --pps 100000 --mode generic --json out.json
            nta run --pcap capture.pcapng --replayer builtin --topspeed --loops 100
            nta run --pcap build/imix.pcap --loops 2000 --topspeed --napi threaded --replayer builtin \\
                    --send tx-ring
            nta run --pcap build/imix.pcap --loops 500 --pps 200000 --controller --hold flow:16
            nta run --pcap build/imix.pcap --loops 5000 --topspeed --replayer xdp --queues 2 --controller \
                    --hold random:3000 --free-on other
            nta run --pcap build/imix.pcap --loops 300 --pps 200000 --controller --hold random:3000 \
                    --budget 200 --permit 'udp port 10003' --reserve 40 --stuck 4
            nta run --iface eth1 --no-replay --mode generic --controller --duration 30
            nta run --iface eth1 --no-replay --rx afxdp --free-on other --hold random:3000
            nta run --ebpf                     # print the XDP program and its flags
            exit status: 0 ok, 1 error, 2 bad usage or a malformed capture, 3 counts did not reconcile"""),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pcap", metavar="FILE",
                   help="capture to replay: pcap or pcapng; Ethernet, or a link type given an Ethernet "
                        "header (Linux cooked, raw IP, BSD loopback); see 'nta inspect FILE'")
    p.add_argument("--strict", action="store_true",
                   help="refuse a capture that ends inside its last record (default: replay its complete "
                        "records, with a warning, as tcpdump reads them)")
    p.add_argument("--replayer", choices=("tcpreplay", "builtin", "xdp"), default="tcpreplay",
                   help="tcpreplay (default); builtin: the built-in AF_PACKET replayer; xdp: XDP live frames "
                        "(BPF_PROG_RUN, no skb), several times faster, for frames up to the live-frame "
                        "limit (3,408 bytes on x86-64; a capture with longer ones is refused) and captures "
                        "whose frames fit in 512 MiB of BPF maps (larger ones are refused)")
    p.add_argument("--send", choices=("sendmmsg", "tx-ring"), default=None,
                   help="with --replayer builtin: a sendmmsg call per batch (default), or a PACKET_TX_RING "
                        "and a send call per batch (faster with --napi threaded, slower without)")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="with --replayer builtin or xdp: N senders, each on its own CPU and veth queue, each "
                        "with whole conversations of the capture (default 1)")
    p.add_argument("--queues", type=positive_int, default=None, metavar="N",
                   help="N RX/TX queues on the veth pair, up to the CPUs, a sender on each (--replayer builtin "
                        "or xdp; --threads defaults to N), and with --controller a metadata ring, controller "
                        "thread (on the queue's CPU) and page pool on an arena of its own per queue; the "
                        "summary counts each queue (default 1; with --iface, the interface's first N RX queues, "
                        "default all)")
    p.add_argument("--batch", type=positive_int, default=None, metavar="N",
                   help="with --replayer builtin or xdp: frames per call, 1..1024 (default 64); with xdp, runs "
                        "of the program per BPF_PROG_RUN, 1..65536 (default 4096)")
    p.add_argument("--loops", type=positive_int, default=1, help="replay the capture N times (default 1)")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--topspeed", action="store_true", help="replay as fast as possible")
    rate.add_argument("--pps", type=positive_float, help="replay at R packets per second")
    rate.add_argument("--mbps", type=positive_float, help="replay at R Mbit/s")
    rate.add_argument("--multiplier", type=positive_float, help="replay at X times the capture's timing")
    p.add_argument("--duration", type=positive_int, metavar="S",
                   help="stop the replay (or with --no-replay, the measurement) after S seconds")
    p.add_argument("--limit", type=positive_int, metavar="N", help="stop the replay after N packets")
    p.add_argument("--unique-flows", action="store_true",
                   help="new flows every loop, as tcpreplay's --unique-ip: in loop k the two addresses of an "
                        "IPv4 header (of an IPv6 one, their low 32 bits) move k apart, every checksum still "
                        "valid; by every replayer (tcpreplay: its own --unique-ip, which skips what is not IP "
                        "and counts it failed; the others send it unchanged and count it); XDP counts the "
                        "distinct flows")
    p.add_argument("--mode", choices=("native", "generic"), default="native",
                   help="XDP attach mode (default native)")
    p.add_argument("--napi", choices=("softirq", "threaded"), default="softirq",
                   help="where the dut veth runs XDP: in the softirq of the sending CPU (default), or in a "
                        "NAPI kernel thread the scheduler may put on another CPU (native mode)")
    p.add_argument("--action", choices=("drop", "pass"), default="drop", help="XDP verdict (default drop)")
    p.add_argument("--mtu", type=int, default=None,
                   help="veth MTU; larger frames are skipped and counted (default: the smallest that "
                        "carries every frame, at least 1500)")
    p.add_argument("--interval", type=positive_float, default=1.0, help="seconds between lines (default 1)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON ('-' for stdout)")
    p.add_argument("--plot", metavar="DIR",
                   help="write pps.png (and with --controller pool.png, pagemap.png) into DIR")
    p.add_argument("--name", metavar="TAG", help="topology name (default: this process id)")
    p.add_argument("--iface", metavar="IFACE",
                   help="with --no-replay: attach to this interface (a real NIC, or any you name; never one "
                        "with an XDP program on it): every RX queue, as 'nta doctor --iface' shows them")
    p.add_argument("--netns", metavar="NS", help="with --iface: the interface's network namespace")
    p.add_argument("--no-replay", action="store_true",
                   help="no topology, no replay: measure traffic from an external generator until "
                        "--duration or Ctrl-C")
    p.add_argument("--controller", action="store_true",
                   help="XDP hands each frame's metadata through a ring buffer to the controller, which "
                        "allocates it from the dut's page pool on an NTA arena and holds it (--hold)")
    p.add_argument("--hold", default="immediate", metavar="POLICY",
                   help="with --controller: immediate, packets:N, usec:T, flow:K or random:N")
    p.add_argument("--rx", choices=("ring", "afxdp"), default="ring",
                   help="how frames reach the controller: a metadata record each through a BPF ring buffer "
                        "(ring, the default), or the frames themselves through an AF_XDP socket per RX queue "
                        "whose UMEM is the pool's arena, each buffer cut to its frame (afxdp; implies "
                        "--controller)")
    p.add_argument("--fill", type=natural_int, default=0, metavar="N",
                   help=f"with --rx afxdp: buffers posted to each fill ring at most (default: the ring's "
                        f"{2048}); fewer starve the socket, and its drops are counted")
    p.add_argument("--xdp-mode", choices=("auto", "zerocopy", "copy"), default="auto",
                   help="with --rx afxdp: how each socket binds: auto asks for zero-copy (the NIC DMAs frames into "
                        "the arena) and falls back to copy mode when the driver refuses, saying why (the default); "
                        "zerocopy refuses the run instead; copy never asks")
    p.add_argument("--umem-chunks", choices=("auto", "unaligned", "aligned"), default="auto",
                   help="with --rx afxdp: the UMEM's layout: auto registers unaligned chunks (a buffer starts "
                        "anywhere, cut to its frame) and, when a zero-copy driver refuses them, aligned pages "
                        "(the default); aligned always takes a page a buffer, its headroom cut off before it is "
                        "posted (--allocator nta only); unaligned never aligns")
    p.add_argument("--copybreak", type=natural_int, default=0, metavar="BYTES",
                   help="with --rx afxdp: a frame of at most BYTES is copied into a block of its own size and "
                        "its buffer posted again whole, as drivers' rx_copybreak does; longer ones keep their "
                        "buffer, cut to the frame (default 0: every buffer cut, none copied)")
    p.add_argument("--free-on", choices=("self", "other"), default="self",
                   help="with --controller: who frees what the hold policy lets go: the controller itself "
                        "(self, the default), or a reader thread on another CPU (other), as a socket's "
                        "reader would, posting the frees to the pool's owner through its lock-free queue")
    p.add_argument("--allocator", choices=("nta", "slab", "ppfrag", "page", "pow2"), default="nta",
                   help="with --controller: who places each frame's fragment in the pool's pages: nta (exact "
                        "size in chunks, any partly used page, combined on free; the default), slab (powers "
                        "of two, a page per size class; pow2 is its old name), ppfrag (the kernel's "
                        "page_pool_alloc_frag: the current page only) or page (a page per frame)")
    limit = p.add_argument_group(
        "memory at the limit", "with --controller (or --rx afxdp): what each RX queue's pool and controller are held "
        "to; every frame dropped is counted by its reason, and the summary reconciles handled = kept + drops")
    limit.add_argument("--budget", type=positive_int, default=None, metavar="PAGES",
                       help="ordinary pages each pool may hold: holding fragments, idle in its cache and ring, "
                            "posted to an AF_XDP fill ring; at the cap a frame gets no memory and is dropped")
    limit.add_argument("--permit", default=None, metavar="FILTER",
                       help="the frames that may take the reserve once ordinary memory is out, in tcpdump's filter "
                            "language (pcap-filter(7)), e.g. 'tcp port 3260 or tcp port 2049 or tcp port 10809' "
                            "(iSCSI, NFS, NBD); XDP marks them (the filter compiled by libpcap, translated into "
                            "the program: see --ebpf)")
    limit.add_argument("--reserve", type=positive_int, default=None, metavar="PAGES",
                       help="pages of each queue's arena set apart, beside the budget, for the frames --permit "
                            "permits: only they take it, only when ordinary memory is out, and what is taken comes "
                            "back (a reserve page never enters the cache or ring); the summary balances its books")
    limit.add_argument("--flow-limit", type=positive_int, default=None, metavar="BYTES",
                       help="bytes one flow may hold, charged as the pool hands them out (a socket's receive "
                            "buffer); a frame over it is dropped")
    limit.add_argument("--stuck", type=positive_int, default=None, metavar="K",
                       help="K flows of the capture (picked by hash, never permitted ones; named in the summary) "
                            "are never read until the run ends: a reader that stopped")
    p.add_argument("--ring-pages", type=positive_int, default=None, metavar="N",
                   help="metadata ring size in pages, a power of two (default 1024: 4 MiB)")
    p.add_argument("--arena-pages", type=positive_int, default=65536, metavar="N",
                   help="arena size in 4 KiB pages, reserved, committed as used (default 65536)")
    p.add_argument("--drain-us", type=natural_int, default=None, metavar="US",
                   help="when the metadata ring is empty, sleep US microseconds before draining it again; "
                        "0: spin (default 50 when the controller has a CPU of its own, as with one xdp "
                        "sender on two CPUs; else 200)")
    p.add_argument("-q", "--quiet", action="store_true", help="no interval lines or summary")
    p.add_argument("--ebpf", action="store_true",
                   help="print the XDP program this run would load (with --controller, the metadata one) and "
                        "its flags, then exit")
    p.set_defaults(func=handle, parser=p)

"""``nta run``: capture -> replayer -> veth -> XDP (-> metadata ring -> controller -> page pool).

``run(cfg)`` checks everything it can before it makes anything (options, the
capture, privileges), then brings up a topology, attaches XDP on the dut end,
starts the controller when asked and the replayer, measures (harness.measure)
until the replayer is done, waits for what is in flight, and tears it all
down. Its ``RunResult`` builds the run's one document: the summary
(harness.report) and ``--json`` (harness.jsonfile) both come from it. Where
every frame went is reconciled in harness.reconcile.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys

from harness import cpus, pcapfile, reconcile, report, topology
from harness.controller import FREE_ON, Consumers, Place, XskConfig, parse_hold
from harness.controller import lib as ctl_lib
from harness.errors import NtaError, require_root
from harness.jsonfile import check_writable, document, write_json
from harness.measure import Loop
from harness.nta import pool_allocator
from harness.replay import (
    DEFAULT_BATCH,
    DRIVERS,
    BuiltinReplayer,
    Replayer,
    ReplayOptions,
    ReplayResult,
    check_builtin,
    check_live_frames,
)
from harness.xdp import RING_PAGES, GenProgram, MetaProgram, XdpProgram, XdpStats, XskProgram

NAPI_MODES = ("softirq", "threaded")
RX_PATHS = ("ring", "afxdp")  # how frames reach the controller: metadata records, or the frames (AF_XDP)
XSK_RING = ctl_lib.NTA_XSK_RING  # AF_XDP fill and RX ring entries
XDP_PACKET_HEADROOM = ctl_lib.NTA_XSK_HEADROOM  # the kernel's, before a frame in an AF_XDP buffer
DRAIN_US = 200  # the controller's sleep between drains of an empty ring, when it shares a CPU
DRAIN_US_OWN_CPU = 50  # and when it has one of its own
RATE_TOLERANCE = 0.01  # a --pps or --mbps rate is held when reached within 1%
# A controller sharing its CPU with a sender runs at this nice: the sender (with XDP and NAPI in its time
# slices) then yields to it, as a user-space generator yields to the softirq that runs a page pool. At nice
# 0 the two split the CPU and the ring overflows (measured: --queues 2, two xdp senders, IMIX: 11-17% of
# the records lost at nice 0; none at -5 or -10).
CONTROLLER_NICE = -10
MAX_TIMED_SPAN = 86400.0  # seconds: a loop at capture timing longer than a day is a bad timestamp


@dataclasses.dataclass
class RunConfig:
    pcap: str
    replay: ReplayOptions = dataclasses.field(default_factory=ReplayOptions)
    mode: str = "native"
    action: str = "drop"
    mtu: int | None = None  # None: the smallest that carries every frame, at least 1500
    interval: float = 1.0
    json_path: str | None = None
    tag: str | None = None
    quiet: bool = False
    controller: bool = False  # metadata ring -> controller -> page pool on an NTA arena
    hold: str = "immediate"
    ring_pages: int = RING_PAGES
    arena_pages: int = 65536
    drain_us: int | None = None  # the ring drained every US when empty; 0: polled; None: see drain_for()
    plot_dir: str | None = None
    allocator: str = "nta"  # who places fragments in the pool: nta, slab (alias pow2), ppfrag or page
    replayer: str = "tcpreplay"  # or "builtin", or "xdp" (live frames)
    napi: str = "softirq"  # or "threaded": the dut veth polls in a kernel thread (see Topology)
    batch: int | None = None  # frames per sendmmsg, TX ring send or BPF_PROG_RUN (None: replay.DEFAULT_BATCH)
    send: str = "sendmmsg"  # or "tx-ring" (builtin)
    threads: int | None = None  # builtin or xdp senders, each on its own CPU and veth queue (None: one a queue)
    queues: int = 1  # RX queues of the dut, each with its own ring, controller and pool (and a sender each)
    free_on: str = "self"  # who frees what the hold policy lets go: the controller, or a reader ("other")
    peak_map: bool = False  # keep the pool's page map at its peak (RunResult.peak_map; --plot does too)
    strict: bool = False  # refuse a capture cut short instead of replaying its complete records
    rx: str = "ring"  # or "afxdp": an AF_XDP socket per RX queue, the arena its UMEM (implies the controller)
    fill: int = 0  # afxdp: buffers posted to a fill ring at most (0: the ring's size)
    copybreak: int = 0  # afxdp: frames of at most this many bytes copied out, their buffers reused whole

    def check(self) -> None:
        """Everything about the options that can be checked before anything is made."""
        self.replay.validate()
        if self.interval <= 0:
            raise NtaError(f"bad --interval {self.interval}: must be positive")
        if self.mtu is not None:
            topology.check_mtu(self.mtu)
        if self.napi not in NAPI_MODES:
            raise NtaError(f"bad --napi {self.napi!r}: choose {', '.join(NAPI_MODES)}")
        if self.napi == "threaded" and self.mode != "native":
            raise NtaError(f"threaded NAPI on {topology.DUT_IF}: veth has a NAPI instance only with native "
                           "XDP: use --mode native")
        if self.replayer not in DRIVERS:
            raise NtaError(f"bad --replayer {self.replayer!r}: choose {', '.join(DRIVERS)}")
        check_builtin(self.batch, self.method)
        cpus.check_threads(self.queues, "--queues")
        if self.queues > 1 and self.replayer == "tcpreplay":
            raise NtaError(f"--queues {self.queues} needs a sender per queue: use --replayer builtin or xdp")
        if self.threads is None:
            self.threads = self.queues
        if self.threads > 1 and self.replayer == "tcpreplay":
            raise NtaError("--threads is for the built-in replayers (--replayer builtin or xdp)")
        if self.replayer == "xdp" and self.mode != "native":
            raise NtaError(f"--replayer xdp redirects frames into {topology.DUT_IF}, which veth takes only with "
                           "native XDP on it: use --mode native")
        if self.queues > 1 and self.threads != self.queues:
            raise NtaError(f"--threads {self.threads} with --queues {self.queues}: a sender per queue")
        cpus.check_threads(self.threads)
        if self.rx not in RX_PATHS:
            raise NtaError(f"bad --rx {self.rx!r}: choose {', '.join(RX_PATHS)}")
        if self.rx == "afxdp":
            self.controller = True  # the frames go to the controller's pool
            if not 0 <= self.fill <= XSK_RING:
                raise NtaError(f"bad --fill {self.fill}: 1..{XSK_RING} buffers (0: the ring's size)")
        elif self.fill or self.copybreak:
            raise NtaError(f"{'--fill' if self.fill else '--copybreak'}: only with --rx afxdp")
        if self.free_on not in FREE_ON:
            raise NtaError(f"bad --free-on {self.free_on!r}: choose {', '.join(FREE_ON)}")
        if self.free_on == "other":
            if not self.controller:
                raise NtaError("--free-on other: only with --controller (it frees the controller's fragments)")
            if len(cpus.usable()) < 2:
                raise NtaError("--free-on other frees on another CPU, and this process may use only one")
        if self.controller:
            parse_hold(self.hold)
            self.allocator = pool_allocator(self.allocator)
        if self.plot_dir is not None and not os.path.isdir(self.plot_dir):
            raise NtaError(f"--plot {self.plot_dir}: not a directory")
        if self.tag is not None:
            topology.check_tag(self.tag)
        check_writable(self.json_path)

    def program(self, ns: str | None, ifname: str) -> XdpProgram:
        """The XDP program this run attaches (not yet attached)."""
        if self.rx == "afxdp":
            return XskProgram(ns, ifname, self.action, self.mode, queues=self.queues)
        if self.controller:
            return MetaProgram(ns, ifname, self.action, self.mode, ring_pages=self.ring_pages, queues=self.queues)
        return XdpProgram(ns, ifname, self.action, self.mode, queues=self.queues)

    def drain_for(self, own_cpu: bool) -> int:
        """How long the controller sleeps on an empty ring, unless told: DRAIN_US_OWN_CPU when it has a
        CPU of its own (a short sleep costs only that CPU), else DRAIN_US (it shares the sender's). Not
        0 (spinning) by default: a consumer reading each record as it is written pulls its cache line
        away from the CPU running XDP, and the XDP rate halves (measured with one xdp sender)."""
        if self.drain_us is not None:
            return self.drain_us
        return DRAIN_US_OWN_CPU if own_cpu else DRAIN_US

    @property
    def method(self) -> str:
        """How the built-in replayers hand frames to the kernel: --send, or xdp."""
        return "xdp" if self.replayer == "xdp" else self.send

    def replayer_text(self) -> str:
        if self.replayer == "xdp":
            return "xdp live frames" + (f" ({self.threads} senders)" if self.threads > 1 else "")
        if self.replayer != "builtin":
            return self.replayer
        return f"builtin ({self.send}" + (f", {self.threads} threads)" if self.threads > 1 else ")")


@dataclasses.dataclass
class RunResult:
    config: RunConfig
    capture: pcapfile.Capture
    topology: str
    xdp_mode: str | None
    xdp_prog_id: int | None
    replay: ReplayResult
    xdp: XdpStats
    veth_tx: dict
    veth_dropped: int
    wall: float
    intervals: list[dict]
    ring: dict | None = None  # submitted, lost
    xmit: dict | None = None  # xdp replayer: frames the gen veth took from XDP redirects, and refused
    consumer: dict | None = None  # controller, pool, arena figures at the end (held ones flushed)
    peak_map: object = None  # the pool's page map at its peak (numpy; with --plot or peak_map)
    queues: list[dict] | None = None  # with --queues N: each RX queue's counts (queue_counts)

    @property
    def expected(self) -> int | None:
        """Packets the capture and options call for; None when a time or count limit cuts it."""
        r = self.config.replay
        if r.duration or r.limit:
            return None
        return self.capture.frames * r.loops

    @property
    def traffic(self) -> dict:
        return reconcile.traffic(self.replay.sent, self.replay.failed, self.xdp.packets, self.veth_dropped,
                                 self.replay.retried_enobufs, self.expected)

    @property
    def queue_account(self) -> dict | None:
        if self.queues is None:
            return None
        return reconcile.queues(self.queues, self.xdp.packets, self.veth_lost)

    @property
    def metadata(self) -> dict | None:
        if self.ring is None:
            return None
        if self.consumer.get("xsk"):
            return reconcile.sockets(self.xdp.packets, self.ring, self.consumer["xsk"],
                                     self.consumer["controller"]["handled"])
        return reconcile.metadata(self.xdp.packets, self.ring, self.consumer["controller"]["handled"])

    @property
    def resent(self) -> int:
        """veth drops the replayer was told of (ENOBUFS) and sent again: not lost."""
        return self.traffic["resent"]

    @property
    def veth_lost(self) -> int:
        return self.traffic["veth_lost"]

    @property
    def unaccounted(self) -> int:
        return self.traffic["unaccounted"]

    @property
    def unaccounted_meta(self) -> int:
        return self.metadata["unaccounted"] if self.metadata else 0

    @property
    def reconciled(self) -> bool:
        return (self.traffic["reconciled"] and (self.metadata is None or self.metadata["reconciled"])
                and (self.queue_account is None or self.queue_account["reconciled"]))

    @property
    def rate(self) -> dict | None:
        """The rate asked for (--pps or --mbps) against the one the replayer reached: held when within
        RATE_TOLERANCE; a rate it cannot reach is reported, not missed silently."""
        r, rp = self.config.replay, self.replay
        if r.pps:
            asked, reached, unit = r.pps, rp.rated_pps, "pps"
        elif r.mbps:
            asked, reached, unit = r.mbps, rp.rated_mbps, "Mbit/s"
        else:
            return None
        return {"asked": asked, "reached": reached, "unit": unit, "ratio": reached / asked,
                "held": abs(reached / asked - 1) <= RATE_TOLERANCE}

    def as_dict(self) -> dict:
        """The run's document: what --json writes and what the summary prints."""
        c, r, acct, meta = self.config, self.replay, self.traffic, self.metadata
        return document(
            "run",
            config={"pcap": os.path.abspath(c.pcap), "loops": c.replay.loops, "rate": c.replay.rate_text(),
                    "duration_limit": c.replay.duration, "packet_limit": c.replay.limit,
                    "mode_requested": c.mode, "action": c.action, "mtu": self.capture.mtu,
                    "interval": c.interval, "replayer": c.replayer,
                    "send": c.send if c.replayer == "builtin" else None, "threads": c.threads,
                    "batch": None if c.replayer == "tcpreplay" else c.batch or DEFAULT_BATCH[c.method],
                    "napi": c.napi, "queues": c.queues, "free_on": c.free_on if c.controller else None,
                    "rx": c.rx, "fill": c.fill or (XSK_RING if c.rx == "afxdp" else None),
                    "copybreak": c.copybreak if c.rx == "afxdp" else None},
            capture=self.capture.as_dict(),
            topology=self.topology,
            xdp={"mode": self.xdp_mode, "prog_id": self.xdp_prog_id},
            expected_packets=self.expected,
            rate=self.rate,
            points={
                "replayer": {"driver": r.driver, "packets": r.sent, "bytes": r.bytes, "seconds": r.seconds,
                             "pps": r.rated_pps, "failed": r.failed, "truncated": r.truncated,
                             "retried_enobufs": r.retried_enobufs, "retried_eagain": r.retried_eagain,
                             "error": r.output if r.driver != "tcpreplay" and r.output else None,
                             "calls": r.calls, "runs": r.runs,
                             "xdp_xmit": self.xmit["xdp_xmit"] if self.xmit else None,
                             "xdp_xmit_errors": self.xmit["xdp_xmit_errors"] if self.xmit else None},
                "veth_sender_drops": {"packets": self.veth_dropped, "resent": acct["resent"],
                                      "lost": acct["veth_lost"]},
                "veth_delivered": {"packets": self.veth_tx.get("tx_packets")},
                "xdp": {"packets": self.xdp.packets, "bytes": self.xdp.bytes, "seconds": self.xdp.seconds,
                        "pps": self.xdp.pps},
            },
            ring=self.ring,
            controller=None if self.consumer is None else
            {"hold": c.hold, "allocator": c.allocator, "drain_us": c.drain_us, **self.consumer},
            queues=self.queues,
            reconciliation={"traffic": acct, "metadata": meta, "queues": self.queue_account},
            reconciled=self.reconciled,
            unaccounted=acct["unaccounted"] + (meta["unaccounted"] if meta else 0),
            wall_seconds=self.wall,
            intervals=self.intervals,
        )


def replayer(stack: contextlib.ExitStack, cfg: RunConfig, cap: pcapfile.Capture, topo,
             sender_cpus: list[int] | None):
    """The replay driver cfg asks for, sending cap's frames from the gen end (pinned to ``sender_cpus``)."""
    if cfg.replayer == "builtin":
        return BuiltinReplayer(topo.gen_ns, topo.gen_if, cap, cfg.replay, batch=cfg.batch, method=cfg.send,
                               cpus=sender_cpus, threads=cfg.threads)
    if cfg.replayer == "xdp":
        return BuiltinReplayer(topo.gen_ns, topo.gen_if, cap, cfg.replay, batch=cfg.batch, method="xdp",
                               cpus=sender_cpus, threads=cfg.threads, ifindex=topo.ifindex(topo.gen_ns, topo.gen_if))
    cpu = sender_cpus[0] if sender_cpus else None
    if cap.as_is:
        return Replayer(topo.gen_ns, topo.gen_if, cfg.pcap, cfg.replay, cpu=cpu)
    # tcpreplay gets the frames as converted and skipped here, in a memfd: nothing to clean up
    fd = os.memfd_create("nta-replay.pcap")
    stack.callback(os.close, fd)
    with os.fdopen(os.dup(fd), "wb") as f:
        pcapfile.write_pcap(cap, f)
    return Replayer(topo.gen_ns, topo.gen_if, f"/proc/self/fd/{fd}", cfg.replay, pass_fds=(fd,), cpu=cpu)


def sender_program(cfg: RunConfig) -> GenProgram:
    """The xdp replayer's program for cfg's capture (or, without one, for none), not loaded: for --ebpf."""
    cap = pcapfile.load(cfg.pcap, mtu=cfg.mtu) if cfg.pcap else pcapfile.Capture(path="")
    return GenProgram(cap, [None], [0], None, topology.GEN_IF, None)


def xdp_xmit(topo) -> dict:
    """Frames XDP redirected out of the gen veth that its peer's rings took, and refused (full), summed
    over its queues."""
    stats = topo.driver_stats("gen")
    return {k: sum(v for name, v in stats.items() if name.startswith("tx_queue_") and name.endswith("_" + k))
            for k in ("xdp_xmit", "xdp_xmit_errors")}


def _place_threads(cfg: RunConfig, topo) -> list[int] | None:
    """Where the senders run: sender i on CPU i, which sends on veth queue i; with threaded NAPI and one
    sender, the NAPI thread on the last CPU and the sender on the first (the receive and send halves
    never share a CPU: left to the scheduler they sometimes do, and the rate drops by a third)."""
    usable = cpus.usable()
    sender_cpus = None
    if cfg.threads > 1:
        sender_cpus = usable[:cfg.threads]
        topo.set_xps(sender_cpus)
    elif cfg.replayer == "xdp":
        sender_cpus = usable[:1]  # the dut's XDP runs on the sender's CPU; the controller has the others
    if cfg.napi == "threaded":
        napi_pids = topo.set_napi_threaded()
        if len(usable) > 1 and cfg.threads == 1:
            for pid in napi_pids:
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(pid, {usable[-1]})
            sender_cpus = usable[:1]
    return sender_cpus


def buffer_size(mtu: int) -> int:
    """An AF_XDP receive buffer: the largest frame a device of this MTU takes (veth refuses one longer than
    the MTU, an Ethernet header and a VLAN tag), in whole chunks of the arena."""
    return -(-(mtu + 18) // 32) * 32


def check_afxdp(mtu: int) -> None:
    if buffer_size(mtu) + XDP_PACKET_HEADROOM > os.sysconf("SC_PAGE_SIZE"):
        raise NtaError(f"--rx afxdp: frames of MTU {mtu} and the kernel's {XDP_PACKET_HEADROOM} bytes of headroom "
                       f"do not fit an AF_XDP buffer of a page; use --rx ring")


def queue_cpus(cfg: RunConfig, sender_cpus: list[int]) -> list[int] | None:
    """With --queues N, the CPU each RX queue's frames arrive on: its sender's, where the queue's NAPI and
    XDP run. veth puts a frame an XDP program redirects on rx queue (CPU % queues), and one sent on tx
    queue i (transmit packet steering: sender i) on rx queue i."""
    if cfg.queues == 1:
        return None
    by_queue = ({cpu % cfg.queues: cpu for cpu in sender_cpus} if cfg.replayer == "xdp"
                else dict(enumerate(sender_cpus)))
    if sorted(by_queue) != list(range(cfg.queues)):
        raise NtaError(f"--queues {cfg.queues}: the senders' CPUs {sender_cpus} do not map one to one onto the "
                       "dut's queues (the xdp sender on CPU c feeds queue c % queues)")
    return [by_queue[q] for q in range(cfg.queues)]


def place_controllers(cfg: RunConfig, sender_cpus: list[int] | None,
                      per_queue: list[int] | None) -> tuple[list[Place], list[int]]:
    """Where each queue's controller and reader run, and the CPUs no sender has. One queue: the
    controller on the spare CPUs (none: where the scheduler puts it); N queues: queue q's controller on
    its CPU, as the kernel runs a queue's page pool where its NAPI runs, at CONTROLLER_NICE. A reader
    (--free-on other) runs on another CPU than its controller: the next one."""
    usable = cpus.usable()
    nxt = {c: usable[(i + 1) % len(usable)] for i, c in enumerate(usable)}
    other = cfg.free_on == "other"
    if per_queue:
        return [Place([c], [nxt[c]] if other else None, CONTROLLER_NICE) for c in per_queue], []
    spare = [c for c in usable if c not in sender_cpus] if sender_cpus else []
    if not other:
        return [Place(spare or None)], spare
    ctl = spare or usable[-1:]
    return [Place(ctl, [c for c in usable if c not in ctl][:1])], spare


def queue_counts(cfg: RunConfig, per_queue_cpu: list[int], prog, replay: ReplayResult,
                 figures: dict | None) -> list[dict]:
    """Each RX queue's counts: its CPU, what its sender sent, what XDP saw on it, and with a controller
    its ring, controller and pool at the end."""
    queue_of = {cpu: q for q, cpu in enumerate(per_queue_cpu)}
    sent = [0] * cfg.queues
    for s in replay.senders or []:
        sent[queue_of[s["cpu"]]] += s["sent"]
    out = []
    for q, xs in enumerate(prog.queue_stats()):
        row = {"queue": q, "cpu": per_queue_cpu[q], "sent": sent[q],
               "xdp": {"packets": xs["packets"], "bytes": xs["bytes"]}}
        if figures is not None:
            f = figures["queues"][q]
            c, p = f["controller"], f["pool"]
            row.update(ring={"submitted": xs["submitted"], "lost": xs["lost"]}, handled=c["handled"],
                       frees=c["frees"], handed_off=c["handed_off"], handoff_full=c["handoff_full"],
                       remote={k: p[k] for k in ("posted", "batches", "applied", "bad", "pending", "full",
                                                 "max_wait_ns")},
                       live_fragments=p["frags"], held=c["held"], peak_pages=c["peak_pages"],
                       xsk={k: f["xsk"][k] for k in ("received", "rx_dropped", "rx_ring_full")} if f["xsk"] else None)
        out.append(row)
    return out


def run(cfg: RunConfig, out=sys.stdout) -> RunResult | None:
    """Check everything, then bring up, measure and tear down. Raises NtaError."""
    cfg.check()
    info = pcapfile.load(cfg.pcap, mtu=cfg.mtu, strict=cfg.strict)
    pcapfile.check_replayable(info)
    if info.cut_short:
        print(pcapfile.cut_short_warning(info), file=sys.stderr)
    if not info.packets:
        if not cfg.quiet:
            print(f"nta run: {cfg.pcap} holds no packets: nothing to replay", file=out)
        if cfg.json_path:
            write_json(cfg.json_path, document("run", capture=info.as_dict(), expected_packets=0,
                                               reconciled=True))
        return None
    r = cfg.replay
    if not (r.topspeed or r.pps or r.mbps) and not r.duration:
        span = float(info.rel_ns[-1]) / 1e9 / (r.multiplier or 1.0)
        if span > MAX_TIMED_SPAN:
            raise NtaError(f"{cfg.pcap}: at the capture's own timing one loop would take {span:,.0f} s (a "
                           "timestamp jumps: see 'nta inspect'); replay it with --topspeed, --pps or --mbps, "
                           "or cut it with --duration")
    require_root("nta run")
    if cfg.rx == "afxdp":
        check_afxdp(info.mtu)
    if cfg.replayer == "xdp":
        check_live_frames(info)

    for t, ended in topology.remove_stale():
        print(f"nta: removed stale topology {t.tag} (owner pid {t.owner_pid or '?'} is gone)"
              + (f"; ended {topology.ended_text(ended)} still inside it" if ended else ""), file=sys.stderr)

    say = (lambda line: None) if cfg.quiet else (lambda line: print(line, file=out, flush=True))
    with contextlib.ExitStack() as stack:
        topo = stack.enter_context(topology.Topology(cfg.tag, mtu=info.mtu, queues=cfg.threads))
        prog = stack.enter_context(cfg.program(topo.dut_ns, topo.dut_if))
        sender_cpus = _place_threads(cfg, topo)
        per_queue_cpu = queue_cpus(cfg, sender_cpus)
        placement, spare = place_controllers(cfg, sender_cpus, per_queue_cpu)
        consumer = None
        if cfg.controller:
            xsk = None
            if cfg.rx == "afxdp":
                xsk = XskConfig(topo.dut_ns, topo.dut_if, prog.xskmap_fd, buffer_size(info.mtu), XSK_RING, cfg.fill,
                                cfg.copybreak)
            consumer = Consumers(prog.ring_fds if cfg.rx == "ring" else [None] * cfg.queues,
                                 topo.ifindex(topo.dut_ns, topo.dut_if), cfg.hold, cfg.allocator,
                                 cfg.arena_pages, peak_map=cfg.peak_map or bool(cfg.plot_dir), free_on=cfg.free_on,
                                 placement=placement, xsk=xsk)
            stack.callback(consumer.close)
            cfg = dataclasses.replace(cfg, drain_us=cfg.drain_for(own_cpu=bool(spare)))
        # With the senders pinned and a CPU left, the controller's thread takes it, and this thread (the
        # interval lines: milliseconds of netlink and map reads a second) keeps to the senders' CPUs:
        # the scheduler puts it beside the controller otherwise, which then waits for it.
        if spare and consumer:
            stack.enter_context(cpus.pinned(sender_cpus))
        mode, prog_id = topo.xdp_attached()
        say(f"nta run: {os.path.basename(cfg.pcap)} ({report.n(info.frames)} frames) x{cfg.replay.loops} at "
            f"{cfg.replay.rate_text()} by {cfg.replayer_text()} -> {topo.gen_if} [{topo.gen_ns}] => "
            f"{topo.dut_if} [{topo.dut_ns}], MTU {info.mtu}, "
            + ("threaded NAPI, " if cfg.napi == "threaded" else "") +
            f"XDP {mode} (prog id {prog_id}), action {cfg.action}"
            + (f", {cfg.queues} queues" if cfg.queues > 1 else "")
            + (f", controller hold {cfg.hold}, allocator {cfg.allocator}" if consumer else "")
            + (", freed by a reader on another CPU" if consumer and cfg.free_on == "other" else "")
            + ("; AF_XDP into the arena (a reader attaches at "
               + ", ".join(c.arena.reader_path for c in consumer.queues) + ")" if cfg.rx == "afxdp" else ""))
        # On a terminal, each line also says how far the run is (of the packets it calls for).
        total = None if cfg.replay.duration or cfg.replay.limit else info.frames * cfg.replay.loops
        loop = Loop(prog, consumer, interval=cfg.interval, drain_us=cfg.drain_us, link=lambda: topo.link_stats("gen"),
                    total=total,
                    progress=getattr(out, "isatty", lambda: False)(), say=say)
        say(loop.header())
        xmit0 = xdp_xmit(topo) if cfg.replayer == "xdp" else None
        loop.begin()
        with replayer(stack, cfg, info, topo, sender_cpus) as rp:
            loop.run(rp.running)
            replay = rp.finish()
        # Frames still in the veth ring or backlog reach XDP shortly after; records, the controller.
        loop.settle(lambda s: s.seen + max(0, s.dropped - (replay.retried_enobufs or 0)) >= replay.sent)
        wall = loop.read().t
        veth_tx = loop.link_delta("tx_packets", "tx_bytes", "tx_dropped")
        xmit = None if xmit0 is None else {k: v - xmit0[k] for k, v in xdp_xmit(topo).items()}
        ring = figures = None
        if consumer:
            ring = prog.ring_stats()
            figures = consumer.finish()
        result = RunResult(config=cfg, capture=info, topology=topo.tag, xdp_mode=mode, xdp_prog_id=prog_id,
                           replay=replay, xdp=prog.stats(), veth_tx=veth_tx,
                           veth_dropped=veth_tx["tx_dropped"], wall=wall, intervals=loop.intervals,
                           ring=ring, consumer=figures, peak_map=consumer.peak_map if consumer else None,
                           xmit=xmit,
                           queues=queue_counts(cfg, per_queue_cpu, prog, replay, figures) if per_queue_cpu else None)
    doc = result.as_dict()
    if not cfg.quiet:
        report.run_summary(doc, out)
    if cfg.plot_dir:
        from harness.plots import plot_run  # matplotlib: only for a run that plots

        for path in plot_run(doc, cfg.plot_dir, result.peak_map):
            say(f"  plot: {path}")
    if cfg.json_path:
        write_json(cfg.json_path, doc)
    return result

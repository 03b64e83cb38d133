"""``nta run``: capture -> replayer -> veth -> XDP, counted at every point.

Counting points, in the order a packet meets them:

* the capture: its records, the frames made of them (converted to Ethernet
  where needed), and the records skipped, by reason (harness.pcapfile.load);
* replayer: tcpreplay's own count of packets it handed to the kernel, or the
  built-in replayer's (harness.replay);
* veth sender drops: frames the gen end of the veth pair dropped (the peer's
  256-entry ring was full, or its backlog), from the gen end's tx_dropped.
  The sender is told (ENOBUFS); both replayers send such a frame again and
  count it, so only drops beyond those retries are lost;
* XDP seen: the per-CPU counters of the XDP program on the dut end.

With ``--controller``, two more: the metadata ring (records submitted, and
lost when it was full) and the controller (records handled, which got a
pool fragment or a counted allocation failure). Then also
``XDP seen = submitted + ring lost`` and ``handled = submitted``.

They reconcile when ``replayer = XDP seen + veth drops not sent again`` and the replayer sent
``frames x loops``; the summary says so or says by how much they do not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time

from harness import __version__, pcapfile, topology
from harness.errors import NeedRoot, NtaError
from harness.replay import DRIVERS, BuiltinReplayer, Replayer, ReplayOptions, ReplayResult, check_builtin
from harness.report import check_writable, n, table, write_json
from harness.xdp import MetaProgram, XdpProgram, XdpStats

NAPI_MODES = ("softirq", "threaded")
MAX_TIMED_SPAN = 86400.0  # seconds: a loop at capture timing longer than a day is a bad timestamp
SETTLE_TIMEOUT = 2.0  # seconds to wait for in-flight frames after the replayer exits


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
    ring_pages: int = 256
    arena_pages: int = 65536
    drain_us: int = 200  # how often the ring is drained
    plot_dir: str | None = None
    allocator: str = "nta"  # fragments at exact size (nta) or rounded to a power of two (pow2)
    replayer: str = "tcpreplay"  # or "builtin"
    napi: str = "softirq"  # or "threaded": the dut veth polls in a kernel thread (see Topology)
    batch: int = 64  # frames per sendmmsg or TX ring send (builtin)
    send: str = "sendmmsg"  # or "tx-ring" (builtin)
    threads: int = 1  # builtin senders, each on its own CPU and veth queue


class Consumer:
    """The controller side: an arena (memfd), the dut's page pool on it, the controller; pump()
    moves what the metadata ring holds into the controller, a batch at a time."""

    def __init__(self, cfg: RunConfig, ifindex: int):
        from harness.nta import Arena, Controller, Pool

        self._stack = contextlib.ExitStack()
        try:
            self.arena = self._stack.enter_context(Arena(max_pages=cfg.arena_pages))
            self.pool = self._stack.enter_context(Pool(self.arena, ifindex=ifindex, queue=0,
                                                       frag_pow2=cfg.allocator == "pow2"))
            self.ctl = self._stack.enter_context(Controller(self.pool, cfg.hold))
        except BaseException:
            self._stack.close()
            raise
        self.drained = 0
        self._latency: list = []  # ns from XDP's timestamp to the drain, a sample per batch

    def pump(self, prog: MetaProgram) -> int:
        total = 0
        while True:
            recs = prog.drain(65536)
            if not len(recs):
                return total
            # bpf_ktime_get_ns() and time.monotonic_ns() are both CLOCK_MONOTONIC
            self._latency.append(time.monotonic_ns() - recs["ts_ns"][::max(1, len(recs) // 256)].astype("i8"))
            self.ctl.handle(recs)
            total += len(recs)
            self.drained += len(recs)

    def snapshot(self, prog: MetaProgram) -> dict:
        """Cumulative counts for an interval line."""
        ring, c, p = prog.ring_stats(), self.ctl.stats(), self.pool.stats()
        back = p["cached"] + p["ring"]
        gone = back + p["ring_full"] + p["released_refcnt"]
        held_bytes = p["pages_in_use"] * self.arena.page_size
        return {"meta": self.drained, "lost": ring["lost"], "alloc": c["handled"] - c["alloc_fails"],
                "free": c["frees"], "pages": p["pages_in_use"], "inflight": p["inflight"],
                "recycle_pct": 100.0 * back / gone if gone else 0.0,
                # of the bytes of pages the pool has given to fragments, the share no frame asked for
                "frag_pct": 100.0 * (1 - c["bytes_held"] / held_bytes) if held_bytes else 0.0}

    def latency_us(self) -> dict:
        import numpy as np

        if not self._latency:
            return {"samples": 0}
        lat = np.concatenate(self._latency) / 1000.0
        return {"samples": int(lat.size), "p50": float(np.percentile(lat, 50)),
                "p99": float(np.percentile(lat, 99)), "max": float(lat.max())}

    def finish(self, prog: MetaProgram, page_map: bool = False):
        """The end of a run: the ring's counts, (the pool's picture while the policy still holds its
        fragments,) what it held put back, pool and arena checked. Returns (ring, figures, map)."""
        ring = prog.ring_stats()
        picture = self.pool.page_map() if page_map else None
        self.ctl.flush()  # what the policy still held goes back: the pool must balance
        self.pool.check()
        self.arena.check()
        return ring, self.figures(), picture

    def figures(self) -> dict:
        return {"controller": self.ctl.stats(), "pool": self.pool.stats(), "arena": self.arena.stats(),
                "latency_us": self.latency_us()}

    def close(self) -> None:
        self._stack.close()


@dataclasses.dataclass
class Sample:
    t: float  # seconds since the replayer started
    sent: int  # gen veth: delivered + dropped
    dropped: int  # gen veth tx_dropped
    seen: int  # XDP packets


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
    consumer: dict | None = None  # controller, pool, arena figures at the end (held ones flushed)

    @property
    def expected(self) -> int | None:
        """Packets the capture and options call for; None when a time or count limit cuts it."""
        r = self.config.replay
        if r.duration or r.limit:
            return None
        return self.capture.frames * r.loops

    @property
    def resent(self) -> int:
        """veth drops the replayer was told of (ENOBUFS) and sent again: not lost."""
        return min(self.veth_dropped, self.replay.retried_enobufs or 0)

    @property
    def veth_lost(self) -> int:
        return self.veth_dropped - self.resent

    @property
    def unaccounted(self) -> int:
        return self.replay.sent - self.xdp.packets - self.veth_lost

    @property
    def unaccounted_meta(self) -> int:
        """XDP seen - ring submitted - ring lost, and ring submitted - handled (0 without a controller)."""
        if self.ring is None:
            return 0
        return meta_unaccounted(self.xdp.packets, self.ring, self.consumer["controller"]["handled"])

    @property
    def reconciled(self) -> bool:
        exp = self.expected
        return self.unaccounted == 0 and self.unaccounted_meta == 0 and \
            (exp is None or exp == self.replay.sent + (self.replay.failed or 0))

    def as_dict(self) -> dict:
        c, r = self.config, self.replay
        return {
            "tool": "nta", "version": __version__, "command": "run",
            "config": {
                "pcap": os.path.abspath(c.pcap), "loops": c.replay.loops, "rate": c.replay.rate_text(),
                "duration_limit": c.replay.duration, "packet_limit": c.replay.limit,
                "mode_requested": c.mode, "action": c.action, "mtu": self.capture.mtu, "interval": c.interval,
                "replayer": c.replayer, "send": c.send if c.replayer == "builtin" else None,
                "threads": c.threads, "napi": c.napi,
            },
            "capture": self.capture.as_dict(),
            "topology": self.topology,
            "xdp": {"mode": self.xdp_mode, "prog_id": self.xdp_prog_id},
            "expected_packets": self.expected,
            "points": {
                "replayer": {"driver": r.driver, "packets": r.sent, "bytes": r.bytes, "seconds": r.seconds,
                             "pps": r.rated_pps,
                             "failed": r.failed, "truncated": r.truncated,
                             "retried_enobufs": r.retried_enobufs, "retried_eagain": r.retried_eagain},
                "veth_sender_drops": {"packets": self.veth_dropped, "resent": self.resent,
                                      "lost": self.veth_lost},
                "veth_delivered": {"packets": self.veth_tx.get("tx_packets")},
                "xdp": {"packets": self.xdp.packets, "bytes": self.xdp.bytes,
                        "seconds": self.xdp.seconds, "pps": self.xdp.pps},
            },
            "ring": self.ring,
            "controller": None if self.consumer is None else {"hold": c.hold, **self.consumer},
            "reconciled": self.reconciled,
            "unaccounted": self.unaccounted + self.unaccounted_meta,
            "wall_seconds": self.wall,
            "intervals": self.intervals,
        }


META_HEAD = (f" {'meta/s':>11} {'lost/s':>8} {'alloc/s':>11} {'free/s':>11} {'pages':>7} {'recycle':>7} "
             f"{'frag':>6}")


def meta_columns(row: dict, m: dict, prev: dict, dt: float) -> str:
    """Add the controller's figures for one interval to row; return them as columns."""
    for k in ("meta", "lost", "alloc", "free"):
        row[f"{k}_pps"] = (m[k] - prev[k]) / dt
    row.update(pages=m["pages"], inflight=m["inflight"], recycle_pct=m["recycle_pct"], frag_pct=m["frag_pct"])
    return (f" {n(row['meta_pps']):>11} {n(row['lost_pps']):>8} {n(row['alloc_pps']):>11} "
            f"{n(row['free_pps']):>11} {n(m['pages']):>7} {m['recycle_pct']:>6.1f}% {m['frag_pct']:>5.1f}%")


def meta_unaccounted(seen: int, ring: dict, handled: int) -> int:
    """Records not accounted for: XDP seen - ring submitted - ring lost, and submitted - handled."""
    return abs(seen - ring["submitted"] - ring["lost"]) + abs(ring["submitted"] - handled)


def meta_rows(ring: dict, controller: dict) -> list[list[str]]:
    """The metadata path's counting points, as rows of the summary table."""
    return [["metadata ring: submitted", n(ring["submitted"]), "", "", ""],
            ["metadata ring: lost (full)", n(ring["lost"]), "", "", ""],
            ["controller handled", n(controller["handled"]), n(controller["bytes"]), "", ""],
            ["  of which no memory", n(controller["alloc_fails"]), "", "", ""]]


def replayer_text(cfg: RunConfig) -> str:
    if cfg.replayer != "builtin":
        return cfg.replayer
    return f"builtin ({cfg.send}" + (f", {cfg.threads} threads)" if cfg.threads > 1 else ")")


def replayer(stack: contextlib.ExitStack, cfg: RunConfig, cap: pcapfile.Capture, topo,
             cpus: list[int] | None):
    """The replay driver cfg asks for, sending cap's frames from the gen end (pinned to ``cpus``)."""
    if cfg.replayer == "builtin":
        return BuiltinReplayer(topo.gen_ns, topo.gen_if, cap, cfg.replay, batch=cfg.batch, method=cfg.send,
                               cpus=cpus, threads=cfg.threads)
    cpu = cpus[0] if cpus else None
    if cap.as_is:
        return Replayer(topo.gen_ns, topo.gen_if, cfg.pcap, cfg.replay, cpu=cpu)
    # tcpreplay gets the frames as converted and skipped here, in a memfd: nothing to clean up
    fd = os.memfd_create("nta-replay.pcap")
    stack.callback(os.close, fd)
    with os.fdopen(os.dup(fd), "wb") as f:
        pcapfile.write_pcap(cap, f)
    return Replayer(topo.gen_ns, topo.gen_if, f"/proc/self/fd/{fd}", cfg.replay, pass_fds=(fd,), cpu=cpu)


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise NeedRoot(what)


def run(cfg: RunConfig, out=sys.stdout) -> RunResult:
    """Validate everything, then bring up, measure and tear down. Raises NtaError."""
    cfg.replay.validate()
    if cfg.interval <= 0:
        raise NtaError(f"bad --interval {cfg.interval}: must be positive")
    if cfg.mtu is not None:
        topology.check_mtu(cfg.mtu)
    if cfg.napi not in NAPI_MODES:
        raise NtaError(f"bad --napi {cfg.napi!r}: choose {', '.join(NAPI_MODES)}")
    if cfg.napi == "threaded" and cfg.mode != "native":  # found here rather than after the topology is up
        raise NtaError(f"threaded NAPI on {topology.DUT_IF}: veth has a NAPI instance only with native XDP: "
                       "use --mode native")
    if cfg.replayer not in DRIVERS:
        raise NtaError(f"bad --replayer {cfg.replayer!r}: choose {', '.join(DRIVERS)}")
    check_builtin(cfg.batch, cfg.send)
    cpus = sorted(os.sched_getaffinity(0))
    if cfg.threads > 1 and cfg.replayer != "builtin":
        raise NtaError("--threads is for the built-in replayer (--replayer builtin)")
    if not 1 <= cfg.threads <= len(cpus):
        raise NtaError(f"bad --threads {cfg.threads}: 1..{len(cpus)}, a CPU each (this process may use "
                       f"{len(cpus)})")
    if cfg.plot_dir is not None and not os.path.isdir(cfg.plot_dir):
        raise NtaError(f"--plot {cfg.plot_dir}: not a directory")
    if cfg.tag is not None:
        topology.check_tag(cfg.tag)
    check_writable(cfg.json_path)
    info = pcapfile.load(cfg.pcap, mtu=cfg.mtu)
    pcapfile.check_replayable(info)
    if not info.packets:
        if not cfg.quiet:
            print(f"nta run: {cfg.pcap} holds no packets: nothing to replay", file=out)
        if cfg.json_path:
            write_json(cfg.json_path, {"tool": "nta", "version": __version__, "command": "run",
                                       "capture": info.as_dict(), "expected_packets": 0, "reconciled": True})
        return None
    r = cfg.replay
    if not (r.topspeed or r.pps or r.mbps) and not r.duration:
        span = float(info.rel_ns[-1]) / 1e9 / (r.multiplier or 1.0)
        if span > MAX_TIMED_SPAN:
            raise NtaError(f"{cfg.pcap}: at the capture's own timing one loop would take {span:,.0f} s (a "
                           "timestamp jumps: see 'nta inspect'); replay it with --topspeed, --pps or --mbps, "
                           "or cut it with --duration")
    require_root("nta run")

    for t in topology.remove_stale():
        print(f"nta: removed stale topology {t.tag} (owner pid {t.owner_pid or '?'} is gone)",
              file=sys.stderr)

    say = (lambda *a: None) if cfg.quiet else (lambda *a: print(*a, file=out, flush=True))
    with contextlib.ExitStack() as stack:
        topo = stack.enter_context(topology.Topology(cfg.tag, mtu=info.mtu, queues=cfg.threads))
        if cfg.controller:
            from harness.nta import parse_hold

            parse_hold(cfg.hold)
            if cfg.allocator not in ("nta", "pow2"):
                raise NtaError(f"bad --allocator {cfg.allocator!r}: choose nta or pow2")
            prog = stack.enter_context(MetaProgram(topo.dut_ns, topo.dut_if, cfg.action, cfg.mode,
                                                   ring_pages=cfg.ring_pages))
            consumer = Consumer(cfg, topo.ifindex(topo.dut_ns, topo.dut_if))
            stack.callback(consumer.close)
        else:
            prog = stack.enter_context(XdpProgram(topo.dut_ns, topo.dut_if, cfg.action, cfg.mode))
            consumer = None
        sender_cpus = None
        if cfg.threads > 1:  # sender i on CPU i, which sends on veth queue i
            sender_cpus = cpus[:cfg.threads]
            topo.set_xps(sender_cpus)
        if cfg.napi == "threaded":
            napi_pids = topo.set_napi_threaded()
            if len(cpus) > 1 and cfg.threads == 1:
                # the NAPI thread on the last CPU, the replayer on the first: the receive and send halves
                # never share a CPU (left to the scheduler they sometimes do, and the rate drops by a third)
                for pid in napi_pids:
                    with contextlib.suppress(OSError):
                        os.sched_setaffinity(pid, {cpus[-1]})
                sender_cpus = cpus[:1]
        mode, prog_id = topo.xdp_attached()
        say(f"nta run: {os.path.basename(cfg.pcap)} ({n(info.frames)} frames) x{cfg.replay.loops} at "
            f"{cfg.replay.rate_text()} by {replayer_text(cfg)} -> {topo.gen_if} [{topo.gen_ns}] => "
            f"{topo.dut_if} [{topo.dut_ns}], MTU {info.mtu}, "
            + ("threaded NAPI, " if cfg.napi == "threaded" else "") +
            f"XDP {mode} (prog id {prog_id}), action {cfg.action}"
            + (f", controller hold {cfg.hold}, allocator {cfg.allocator}" if consumer else ""))
        say(f"{'time':>9} {'veth tx/s':>12} {'rx/s':>12} {'drop/s':>10} {'rx':>13}"
            + (META_HEAD if consumer else ""))
        gen0 = topo.link_stats("gen")
        intervals: list[dict] = []

        def sample(t0: float) -> Sample:
            g = topo.link_stats("gen")
            dropped = g["tx_dropped"] - gen0["tx_dropped"]
            return Sample(t=time.monotonic() - t0, sent=g["tx_packets"] - gen0["tx_packets"] + dropped,
                          dropped=dropped, seen=prog.stats().packets)

        # On a terminal, each line also says how far the run is (of the packets it calls for).
        total = None if cfg.replay.duration or cfg.replay.limit else info.frames * cfg.replay.loops
        progress = bool(total) and getattr(out, "isatty", lambda: False)()
        t0 = time.monotonic()
        with replayer(stack, cfg, info, topo, sender_cpus) as rp:
            prev = Sample(0.0, 0, 0, 0)
            prev_meta = {"meta": 0, "lost": 0, "alloc": 0, "free": 0}
            next_tick = t0 + cfg.interval
            while rp.running():
                if consumer:
                    consumer.pump(prog)
                    time.sleep(cfg.drain_us / 1e6)
                else:
                    time.sleep(min(0.05, max(0.0, next_tick - time.monotonic())))
                if time.monotonic() >= next_tick:
                    s = sample(t0)
                    dt = s.t - prev.t
                    row = {"t": round(s.t, 3), "sent_pps": (s.sent - prev.sent) / dt,
                           "rx_pps": (s.seen - prev.seen) / dt, "drop_pps": (s.dropped - prev.dropped) / dt,
                           "rx_total": s.seen}
                    line = (f"{s.t:8.3f}s {n(row['sent_pps']):>12} {n(row['rx_pps']):>12} "
                            f"{n(row['drop_pps']):>10} {n(s.seen):>13}")
                    if consumer:
                        m = consumer.snapshot(prog)
                        line += meta_columns(row, m, prev_meta, dt)
                        prev_meta = m
                    intervals.append(row)
                    if progress:
                        line += f"  [{min(100.0, 100.0 * s.seen / total):5.1f}%]"
                    say(line)
                    prev = s
                    next_tick += cfg.interval
            replay = rp.finish()
        # Frames still in the veth ring or backlog reach XDP shortly after; records, the controller.
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            s = sample(t0)
            done = s.seen + max(0, s.dropped - (replay.retried_enobufs or 0)) >= replay.sent
            if consumer:
                consumer.pump(prog)
                ring = prog.ring_stats()
                done = done and consumer.drained >= ring["submitted"]
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        wall = time.monotonic() - t0
        g = topo.link_stats("gen")
        veth_tx = {k: g[k] - gen0[k] for k in ("tx_packets", "tx_bytes", "tx_dropped")}
        ring = figures = page_map = None
        if consumer:
            ring, figures, page_map = consumer.finish(prog, page_map=bool(cfg.plot_dir))
        result = RunResult(config=cfg, capture=info, topology=topo.tag, xdp_mode=mode, xdp_prog_id=prog_id,
                           replay=replay, xdp=prog.stats(), veth_tx=veth_tx,
                           veth_dropped=veth_tx["tx_dropped"], wall=wall, intervals=intervals,
                           ring=ring, consumer=figures)
    if not cfg.quiet:
        print_summary(result, out)
    if cfg.plot_dir:
        from harness.plots import plot_run

        for path in plot_run(result, cfg.plot_dir, page_map):
            say(f"  plot: {path}")
    if cfg.json_path:
        write_json(cfg.json_path, result.as_dict())
    return result


def capture_line(c: pcapfile.Capture) -> str:
    """What of the capture goes on the wire: frames, conversions, truncations, skips by reason."""
    parts = [f"capture: {n(c.packets)} packets ({c.linktype_text() or 'none'}) -> {n(c.frames)} frames "
             f"at MTU {c.mtu}"]
    if c.converted:
        parts.append(f"{n(c.converted)} given an Ethernet header")
    if c.truncated:
        parts.append(f"{n(c.truncated)} truncated by the capture's snap length (sent as captured)")
    if c.fcs_stripped:
        parts.append(f"{n(c.fcs_stripped)} sent without their captured FCS")
    parts += [f"{n(k)} skipped: {why}" for why, k in sorted(c.skipped.items())]
    return "; ".join(parts)


def print_summary(r: RunResult, out=sys.stdout) -> None:
    rp = r.replay
    print(f"\nSummary: {os.path.basename(r.config.pcap)}, {n(rp.sent)} packets in {r.wall:.3f} s "
          f"(XDP {r.xdp_mode}, action {r.config.action})", file=out)
    print("  " + capture_line(r.capture), file=out)
    rows = [
        [f"replayer ({rp.driver})", n(rp.sent), n(rp.bytes), f"{rp.seconds:.3f}", n(rp.rated_pps)],
        ["veth sender drops", n(r.veth_dropped), "", "", ""],
        *([["  of which sent again", n(r.resent), "", "", ""]] if r.resent else []),
        [f"XDP seen ({r.xdp_mode})", n(r.xdp.packets), n(r.xdp.bytes), f"{r.xdp.seconds:.3f}", n(r.xdp.pps)],
    ]
    if r.ring is not None:
        rows += meta_rows(r.ring, r.consumer["controller"])
    table(rows, ["counting point", "packets", "bytes", "seconds", "pps"], out)
    if r.ring is not None:
        p, c = r.consumer["pool"], r.consumer["controller"]
        print(f"  controller: hold {r.config.hold}, peak {n(c['peak_held'])} fragments held; pool: "
              f"{n(p['hold'])} pages mapped, alloc fast {n(p['fast'])} slow {n(p['slow'])} refill "
              f"{n(p['refill'])}, recycle cached {n(p['cached'])} ring {n(p['ring'])} ring_full "
              f"{n(p['ring_full'])}; at the end {n(p['frags'])} fragments live, {n(p['inflight'])} pages "
              f"in flight (the pool's own cache and ring)", file=out)
        frag = [row["frag_pct"] for row in r.intervals if "frag_pct" in row]
        arena = r.consumer["arena"]
        print(f"  memory ({r.config.allocator}): arena peak {n(arena['peak_pages_in_use'])} pages "
              f"({arena['peak_pages_in_use'] * 4096 / 1048576:.1f} MiB) for at most {n(c['peak_held'])} "
              f"fragments held; pages' bytes no frame asked for, mean over intervals: "
              + (f"{sum(frag) / len(frag):.1f}%" if frag else "-"), file=out)
        lat = r.consumer["latency_us"]
        if lat["samples"]:
            print(f"  latency XDP -> controller: p50 {lat['p50']:.0f} us, p99 {lat['p99']:.0f} us, "
                  f"max {lat['max']:.0f} us ({n(lat['samples'])} samples; drained every "
                  f"{r.config.drain_us} us)", file=out)
        if r.unaccounted_meta:
            print(f"  metadata NOT reconciled: XDP seen {n(r.xdp.packets)}, ring submitted "
                  f"{n(r.ring['submitted'])} + lost {n(r.ring['lost'])}, "
                  f"controller handled {n(c['handled'])}",
                  file=out)
        else:
            print(f"  metadata reconciled: XDP seen {n(r.xdp.packets)} = ring submitted "
                  f"{n(r.ring['submitted'])} + lost {n(r.ring['lost'])}; "
                  f"handled {n(c['handled'])} = submitted",
                  file=out)
    if rp.failed:
        print(f"  replayer failures: {n(rp.failed)} packets {rp.driver} could not send"
              + (f" ({rp.output})" if rp.driver == "builtin" and rp.output else ""), file=out)
    if rp.retried_enobufs or rp.retried_eagain:
        print(f"  replayer retries (device or socket queue full, nothing lost): ENOBUFS "
              f"{n(rp.retried_enobufs or 0)}, EAGAIN {n(rp.retried_eagain or 0)}", file=out)
    exp = r.expected
    exp_text = (f"expected {n(exp)} = {n(r.capture.frames)} frames x {r.config.replay.loops} loops"
                if exp is not None else "expected: cut by --duration/--limit")
    if r.unaccounted == 0:
        verdict = (f"reconciled: sent {n(rp.sent)} = XDP seen {n(r.xdp.packets)} + veth drops "
                   f"{n(r.veth_lost)}" + (" not sent again" if r.resent else "") + f"; {exp_text}")
    else:
        verdict = (f"NOT reconciled: {n(r.unaccounted)} packets unaccounted for (sent {n(rp.sent)}, "
                   f"XDP seen {n(r.xdp.packets)}, veth drops {n(r.veth_dropped)}, of which sent again "
                   f"{n(r.resent)}); {exp_text}")
    if exp is not None and exp != rp.sent + (rp.failed or 0):
        verdict += f"; the replayer sent {n(rp.sent)}, not {n(exp)}"
    print("  " + verdict, file=out)

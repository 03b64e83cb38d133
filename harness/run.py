"""``nta run``: capture -> tcpreplay -> veth -> XDP, counted at every point.

Counting points, in the order a packet meets them:

* replayer: tcpreplay's own count of packets it handed to the kernel;
* veth sender drops: frames the gen end of the veth pair dropped (the peer's
  256-entry ring was full, or its backlog), from the gen end's tx_dropped;
* XDP seen: the per-CPU counters of the XDP program on the dut end.

They reconcile when ``replayer = XDP seen + veth drops``; the summary says so
or says by how much they do not.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

from harness import __version__, pcapfile, topology
from harness.errors import NeedRoot, NtaError
from harness.replay import Replayer, ReplayOptions, ReplayResult
from harness.report import check_writable, n, table, write_json
from harness.xdp import XdpProgram, XdpStats

SETTLE_TIMEOUT = 2.0  # seconds to wait for in-flight frames after the replayer exits


@dataclasses.dataclass
class RunConfig:
    pcap: str
    replay: ReplayOptions = dataclasses.field(default_factory=ReplayOptions)
    mode: str = "native"
    action: str = "drop"
    mtu: int = 1500
    interval: float = 1.0
    json_path: str | None = None
    tag: str | None = None
    quiet: bool = False


@dataclasses.dataclass
class Sample:
    t: float  # seconds since the replayer started
    sent: int  # gen veth: delivered + dropped
    dropped: int  # gen veth tx_dropped
    seen: int  # XDP packets


@dataclasses.dataclass
class RunResult:
    config: RunConfig
    capture: pcapfile.CaptureInfo
    topology: str
    xdp_mode: str | None
    xdp_prog_id: int | None
    replay: ReplayResult
    xdp: XdpStats
    veth_tx: dict
    veth_dropped: int
    wall: float
    intervals: list[dict]

    @property
    def expected(self) -> int | None:
        """Packets the capture and options call for; None when a time or count limit cuts it."""
        r = self.config.replay
        if r.duration or r.limit:
            return None
        return self.capture.packets * r.loops

    @property
    def unaccounted(self) -> int:
        return self.replay.sent - self.xdp.packets - self.veth_dropped

    @property
    def reconciled(self) -> bool:
        exp = self.expected
        return self.unaccounted == 0 and (exp is None or exp == self.replay.sent + (self.replay.failed or 0))

    def as_dict(self) -> dict:
        c, r = self.config, self.replay
        return {
            "tool": "nta", "version": __version__, "command": "run",
            "config": {
                "pcap": os.path.abspath(c.pcap), "loops": c.replay.loops, "rate": c.replay.rate_text(),
                "duration_limit": c.replay.duration, "packet_limit": c.replay.limit,
                "mode_requested": c.mode, "action": c.action, "mtu": c.mtu, "interval": c.interval,
            },
            "capture": self.capture.as_dict(),
            "topology": self.topology,
            "xdp": {"mode": self.xdp_mode, "prog_id": self.xdp_prog_id},
            "expected_packets": self.expected,
            "points": {
                "replayer": {"packets": r.sent, "bytes": r.bytes, "seconds": r.seconds, "pps": r.rated_pps,
                             "failed": r.failed, "truncated": r.truncated,
                             "retried_enobufs": r.retried_enobufs, "retried_eagain": r.retried_eagain},
                "veth_sender_drops": {"packets": self.veth_dropped},
                "veth_delivered": {"packets": self.veth_tx.get("tx_packets")},
                "xdp": {"packets": self.xdp.packets, "bytes": self.xdp.bytes,
                        "seconds": self.xdp.seconds, "pps": self.xdp.pps},
            },
            "reconciled": self.reconciled,
            "unaccounted": self.unaccounted,
            "wall_seconds": self.wall,
            "intervals": self.intervals,
        }


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise NeedRoot(what)


def run(cfg: RunConfig, out=sys.stdout) -> RunResult:
    """Validate everything, then bring up, measure and tear down. Raises NtaError."""
    cfg.replay.validate()
    if cfg.interval <= 0:
        raise NtaError(f"bad --interval {cfg.interval}: must be positive")
    topology.check_mtu(cfg.mtu)
    if cfg.tag is not None:
        topology.check_tag(cfg.tag)
    check_writable(cfg.json_path)
    info = pcapfile.read_capture(cfg.pcap)
    pcapfile.check_replayable(info, cfg.mtu)
    require_root("nta run")

    for t in topology.remove_stale():
        print(f"nta: removed stale topology {t.tag} (owner pid {t.owner_pid or '?'} is gone)",
              file=sys.stderr)

    say = (lambda *a: None) if cfg.quiet else (lambda *a: print(*a, file=out, flush=True))
    with topology.Topology(cfg.tag, mtu=cfg.mtu) as topo, \
            XdpProgram(topo.dut_ns, topo.dut_if, cfg.action, cfg.mode) as prog:
        mode, prog_id = topo.xdp_attached()
        say(f"nta run: {os.path.basename(cfg.pcap)} ({n(info.packets)} packets) x{cfg.replay.loops} at "
            f"{cfg.replay.rate_text()} -> {topo.gen_if} [{topo.gen_ns}] => {topo.dut_if} [{topo.dut_ns}], "
            f"XDP {mode} (prog id {prog_id}), action {cfg.action}")
        say(f"{'time':>9} {'veth tx/s':>12} {'rx/s':>12} {'drop/s':>10} {'rx':>13}")
        gen0 = topo.link_stats("gen")
        intervals: list[dict] = []

        def sample(t0: float) -> Sample:
            g = topo.link_stats("gen")
            dropped = g["tx_dropped"] - gen0["tx_dropped"]
            return Sample(t=time.monotonic() - t0, sent=g["tx_packets"] - gen0["tx_packets"] + dropped,
                          dropped=dropped, seen=prog.stats().packets)

        t0 = time.monotonic()
        with Replayer(topo.gen_ns, topo.gen_if, cfg.pcap, cfg.replay) as rp:
            prev = Sample(0.0, 0, 0, 0)
            next_tick = t0 + cfg.interval
            while rp.running():
                time.sleep(min(0.05, max(0.0, next_tick - time.monotonic())))
                if time.monotonic() >= next_tick:
                    s = sample(t0)
                    dt = s.t - prev.t
                    row = {"t": round(s.t, 3), "sent_pps": (s.sent - prev.sent) / dt,
                           "rx_pps": (s.seen - prev.seen) / dt, "drop_pps": (s.dropped - prev.dropped) / dt,
                           "rx_total": s.seen}
                    intervals.append(row)
                    say(f"{s.t:8.3f}s {n(row['sent_pps']):>12} {n(row['rx_pps']):>12} "
                        f"{n(row['drop_pps']):>10} {n(s.seen):>13}")
                    prev = s
                    next_tick += cfg.interval
            replay = rp.finish()
        # Frames still in the veth ring or backlog reach XDP shortly after.
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            s = sample(t0)
            if s.seen + s.dropped >= replay.sent or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        wall = time.monotonic() - t0
        g = topo.link_stats("gen")
        veth_tx = {k: g[k] - gen0[k] for k in ("tx_packets", "tx_bytes", "tx_dropped")}
        result = RunResult(config=cfg, capture=info, topology=topo.tag, xdp_mode=mode, xdp_prog_id=prog_id,
                           replay=replay, xdp=prog.stats(), veth_tx=veth_tx,
                           veth_dropped=veth_tx["tx_dropped"], wall=wall, intervals=intervals)
    if not cfg.quiet:
        print_summary(result, out)
    if cfg.json_path:
        write_json(cfg.json_path, result.as_dict())
    return result


def print_summary(r: RunResult, out=sys.stdout) -> None:
    rp = r.replay
    print(f"\nSummary: {os.path.basename(r.config.pcap)}, {n(rp.sent)} packets in {r.wall:.3f} s "
          f"(XDP {r.xdp_mode}, action {r.config.action})", file=out)
    rows = [
        ["replayer (tcpreplay)", n(rp.sent), n(rp.bytes), f"{rp.seconds:.3f}", n(rp.rated_pps)],
        ["veth sender drops", n(r.veth_dropped), "", "", ""],
        [f"XDP seen ({r.xdp_mode})", n(r.xdp.packets), n(r.xdp.bytes), f"{r.xdp.seconds:.3f}", n(r.xdp.pps)],
    ]
    table(rows, ["counting point", "packets", "bytes", "seconds", "pps"], out)
    if rp.failed:
        print(f"  replayer failures: {n(rp.failed)} packets tcpreplay could not send", file=out)
    exp = r.expected
    exp_text = (f"expected {n(exp)} = {n(r.capture.packets)} x {r.config.replay.loops} loops"
                if exp is not None else "expected: cut by --duration/--limit")
    if r.unaccounted == 0:
        verdict = (f"reconciled: sent {n(rp.sent)} = XDP seen {n(r.xdp.packets)} + veth drops "
                   f"{n(r.veth_dropped)}; {exp_text}")
    else:
        verdict = (f"NOT reconciled: {n(r.unaccounted)} packets unaccounted for (sent {n(rp.sent)}, "
                   f"XDP seen {n(r.xdp.packets)}, veth drops {n(r.veth_dropped)}); {exp_text}")
    if exp is not None and exp != rp.sent + (rp.failed or 0):
        verdict += f"; the replayer sent {n(rp.sent)}, not {n(exp)}"
    print("  " + verdict, file=out)

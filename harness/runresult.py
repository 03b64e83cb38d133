"""A replayed run's result: what every counting point saw, and the run's one document, which the summary
(harness.report) and ``--json`` (harness.jsonfile) both come from. Where every frame went is reconciled in
harness.reconcile."""

from __future__ import annotations

import dataclasses
import os

from harness import pcapfile, pressure, reconcile
from harness.builtin import DEFAULT_BATCH
from harness.jsonfile import document
from harness.replay import ReplayResult
from harness.runconfig import RATE_TOLERANCE, XSK_RING, RunConfig
from harness.xdp import XdpStats


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
    limits: pressure.Limits = pressure.NONE  # memory at the limit: the budget, the reserve, flows
    permitted: int | None = None  # frames XDP's --permit filter accepted (None: no filter)
    timing: dict | None = None  # a paced run: how the frames kept to the schedule where they landed
    flows: dict | None = None  # the distinct flows XDP saw (with --unique-flows)

    @property
    def pressure(self) -> dict | None:
        """What the limits did (harness.pressure.figures); None without limits."""
        if self.consumer is None:
            return None
        return pressure.figures(self.limits, self.consumer["controller"], self.consumer["pool"],
                                self.consumer.get("xsk"), self.permitted)

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
        """Every counting point agrees; with limits, every frame handled kept or dropped for a reason, and
        the reserve balanced."""
        p = self.pressure
        return (self.traffic["reconciled"] and (self.metadata is None or self.metadata["reconciled"])
                and (self.queue_account is None or self.queue_account["reconciled"])
                and (p is None or (p["drops"]["reconciled"] and p.get("reserve", {"balanced": True})["balanced"])))

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
                    "copybreak": c.copybreak if c.rx == "afxdp" else None, "unique_flows": c.replay.unique_flows,
                    **self.limits.as_dict()},
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
                             "calls": r.calls, "runs": r.runs, "kernel_batch": r.kernel_batch,
                             "unchanged": r.unchanged,
                             "xdp_xmit": self.xmit["xdp_xmit"] if self.xmit else None,
                             "xdp_xmit_errors": self.xmit["xdp_xmit_errors"] if self.xmit else None},
                "veth_sender_drops": {"packets": self.veth_dropped, "resent": acct["resent"],
                                      "lost": acct["veth_lost"]},
                "veth_delivered": {"packets": self.veth_tx.get("tx_packets")},
                "xdp": {"packets": self.xdp.packets, "bytes": self.xdp.bytes, "seconds": self.xdp.seconds,
                        "pps": self.xdp.pps, **(self.flows or {})},
            },
            ring=self.ring,
            controller=None if self.consumer is None else
            {"hold": c.hold, "allocator": c.allocator, "drain_us": c.drain_us, **self.consumer},
            queues=self.queues,
            pressure=self.pressure,
            timing=self.timing,
            reconciliation={"traffic": acct, "metadata": meta, "queues": self.queue_account},
            reconciled=self.reconciled,
            unaccounted=acct["unaccounted"] + (meta["unaccounted"] if meta else 0),
            wall_seconds=self.wall,
            intervals=self.intervals,
        )

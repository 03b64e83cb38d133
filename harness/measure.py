"""The one measurement loop of ``nta run``, replayed or on a named interface.

Every ``interval`` it reads the counting points (the gen veth's counters when
there is one, XDP's per-CPU counters, the controller's when there is one),
adds a row of rates to ``intervals`` and prints it (harness.report); between
readings the controller drains the metadata ring on a thread of its own, in C (harness.controller),
as records come, sleeping ``drain_us`` when the ring is empty, or spinning when it is 0.
``settle()`` then waits for what is still in flight (frames in the veth ring,
records in the metadata ring) to reach its counting point. Runs differ only
in when the loop ends and in which counting points they have.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from harness import report, signals

SETTLE_TIMEOUT = 2.0  # seconds to wait for in-flight frames and records after the traffic ends


@dataclasses.dataclass
class Reading:
    """Cumulative counts at ``t`` seconds since the start."""

    t: float
    seen: int  # XDP packets
    sent: int | None = None  # gen veth: delivered + dropped (replayed runs)
    dropped: int | None = None  # gen veth tx_dropped


class Loop:
    """Interval lines and in-flight settling over an XDP program, optionally a gen veth
    (``link()``: its IFLA_STATS64) and a controller (harness.consumer.Consumer)."""

    def __init__(self, prog, consumer=None, *, interval: float = 1.0, drain_us: int = 200,
                 link: Callable[[], dict] | None = None,
                 total: int | None = None, progress: bool = False, say: Callable[[str], None] = lambda line: None):
        self.prog, self.consumer, self.interval, self.drain_us = prog, consumer, interval, drain_us
        self._link, self.total, self.progress, self.say = link, total, progress and bool(total), say
        self._link0 = link() if link else None
        self.intervals: list[dict] = []
        self.t0 = time.monotonic()
        self._prev = Reading(0.0, 0, 0, 0)
        self._prev_meta: dict = {}

    def header(self) -> str:
        return report.interval_header(replayed=self._link is not None, meta=self.consumer is not None)

    def link_delta(self, *keys: str) -> dict:
        """The gen veth's counters since the loop began."""
        now = self._link()
        return {k: now[k] - self._link0[k] for k in keys}

    def read(self) -> Reading:
        seen = self.prog.stats().packets
        if self._link is None:
            return Reading(time.monotonic() - self.t0, seen)
        d = self.link_delta("tx_packets", "tx_dropped")
        return Reading(time.monotonic() - self.t0, seen, d["tx_packets"] + d["tx_dropped"], d["tx_dropped"])

    def begin(self) -> None:
        """Start the controller's threads (when there is a controller, and not yet): before the traffic,
        or the first records wait in the ring until they run."""
        if self.consumer and not self.consumer.running:
            self.consumer.start(self.drain_us)

    def run(self, keep_going: Callable[[], bool]) -> None:
        """Sample and print until ``keep_going()`` says stop (KeyboardInterrupt passes through); the
        controller, when there is one, drains on its own thread meanwhile."""
        self.t0 = time.monotonic()
        next_tick = self.t0 + self.interval
        self.begin()
        while keep_going():
            signals.check()
            time.sleep(min(0.02, max(0.0, next_tick - time.monotonic())))
            if time.monotonic() >= next_tick:
                self._tick()
                next_tick += self.interval

    def _tick(self) -> None:
        s, prev = self.read(), self._prev
        dt = s.t - prev.t
        row = {"t": round(s.t, 3)}
        if s.sent is not None:
            row["sent_pps"] = (s.sent - prev.sent) / dt
        row["rx_pps"] = (s.seen - prev.seen) / dt
        if s.dropped is not None:
            row["drop_pps"] = (s.dropped - prev.dropped) / dt
        row["rx_total"] = s.seen
        if self.consumer:
            m = self.consumer.snapshot(self.prog.ring_stats())
            # rates of the counts: records, ring losses, frames kept, dropped (and by reason), frees
            for k in ("meta", "lost", "alloc", "dropped", "free", *(k for k in m if k.startswith("dropped_"))):
                row[f"{k}_pps"] = (m[k] - self._prev_meta.get(k, 0)) / dt
            row.update(pages=m["pages"], inflight=m["inflight"], recycle_pct=m["recycle_pct"],
                       frag_pct=m["frag_pct"])
            self._prev_meta = m
        self.intervals.append(row)
        done = min(100.0, 100.0 * s.seen / self.total) if self.progress else None
        self.say(report.interval_line(row, done))
        self._prev = s

    def settle(self, arrived: Callable[[Reading], bool] = lambda s: True,
               timeout: float = SETTLE_TIMEOUT) -> Reading:
        """Wait (at most ``timeout``) until ``arrived(reading)`` and the controller has drained every
        record XDP submitted; returns the last reading."""
        deadline = time.monotonic() + timeout
        while True:
            signals.check()
            s = self.read()
            done = arrived(s)
            if self.consumer:
                if not self.consumer.running:
                    self.consumer.pump()
                done = done and self.consumer.caught_up(self.prog.ring_stats())
            if done or time.monotonic() > deadline:
                return s
            time.sleep(0.01)

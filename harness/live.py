"""``nta run --iface IFACE --no-replay``: measure traffic arriving on an interface the user names.

No topology, no replayer: XDP is attached to IFACE (in the current namespace,
or --netns NS), never replacing a program already there, and the run lasts
until --duration seconds or Ctrl-C, then prints its summary, as xdp-bench
does. Traffic comes from an external generator: the path for users who
outgrow a VM. The counting points are XDP seen, and with --controller the
metadata ring and the controller, measured, reconciled and reported as in a
replayed run (harness.measure, harness.reconcile, harness.report).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

from harness import pressure, reconcile, report, signals
from harness.consumer import Consumer
from harness.errors import NtaError, UsageError, require_root
from harness.jsonfile import check_writable, document, write_json
from harness.measure import Loop
from harness.netlink import Netlink
from harness.run import RunConfig


def ifindex_of(iface: str, netns: str | None) -> int:
    try:
        with Netlink(netns) as ipr:
            found = ipr.link_lookup(ifname=iface)
    except OSError as exc:
        raise NtaError(f"namespace {netns}: {exc.strerror or exc}") from None
    if not found:
        raise NtaError(f"no interface {iface}" + (f" in namespace {netns}" if netns else ""))
    return found[0]


def run_live(cfg: RunConfig, iface: str, netns: str | None = None, duration: float | None = None,
             out=sys.stdout) -> dict:
    if cfg.interval <= 0:
        raise NtaError(f"bad --interval {cfg.interval}: must be positive")
    if duration is not None and duration <= 0:
        raise NtaError(f"bad --duration {duration}: must be positive")
    for flag, given in (("--rx afxdp", cfg.rx != "ring"), (f"--queues {cfg.queues}", cfg.queues != 1),
                        ("--free-on other", cfg.free_on != "self")):
        if given:
            raise NtaError(f"{flag}: only for a replayed run, not with --iface")
    pressure.check(cfg.budget, cfg.reserve, cfg.permit, cfg.flow_limit, cfg.stuck, cfg.arena_pages, cfg.controller)
    if cfg.stuck:
        raise UsageError(f"--stuck {cfg.stuck}: picks flows from a capture, not with --iface")
    limits = pressure.Limits(budget=cfg.budget or 0, reserve=cfg.reserve or 0, permit=cfg.permit_filter,
                             flow_limit=cfg.flow_limit or 0)
    check_writable(cfg.json_path)
    require_root("nta run --iface")
    if netns and not os.path.exists(os.path.join("/run/netns", netns)):
        raise NtaError(f"no network namespace {netns}")
    ifindex = ifindex_of(iface, netns)
    say = (lambda line: None) if cfg.quiet else (lambda line: print(line, file=out, flush=True))
    interrupted = False
    with contextlib.ExitStack() as stack:
        prog = stack.enter_context(cfg.program(netns, iface))
        consumer = None
        if cfg.controller:
            consumer = Consumer(prog.ring_fd, ifindex, cfg.hold, cfg.allocator, cfg.arena_pages, limits=limits)
            stack.callback(consumer.close)
        where = f"{iface} [{netns}]" if netns else iface
        say(f"nta run: {where} (ifindex {ifindex}), no replay, XDP {cfg.mode}, action {cfg.action}"
            + (f", controller hold {cfg.hold}, allocator {cfg.allocator}" if consumer else "")
            + (f"; {pressure.limits_text(limits)}" if limits else "")
            + (f"; {duration:g} s" if duration else "; Ctrl-C ends the run"))
        drain_us = cfg.drain_for(own_cpu=False)
        loop = Loop(prog, consumer, interval=cfg.interval, drain_us=drain_us, say=say)
        say(loop.header())
        t0 = time.monotonic()
        try:
            loop.run(lambda: duration is None or time.monotonic() - t0 < duration)
        except KeyboardInterrupt:
            interrupted = True  # the end of the measurement, not an error: the summary follows
            signals.handled()
        wall = loop.read().t
        ring = figures = None
        if consumer:
            loop.settle()
            ring = prog.ring_stats()
            figures = consumer.finish()
        xdp = prog.stats()
        permitted = prog.permitted()
    meta = reconcile.metadata(xdp.packets, ring, figures["controller"]["handled"]) if ring else None
    limited = pressure.figures(limits, figures["controller"], figures["pool"], None, permitted) if figures else None
    fine = (meta is None or meta["reconciled"]) and (limited is None or (
        limited["drops"]["reconciled"] and limited.get("reserve", {"balanced": True})["balanced"]))
    doc = document("run", iface=iface, netns=netns, ifindex=ifindex, mode=cfg.mode, action=cfg.action,
                   xdp={"mode": cfg.mode}, wall_seconds=wall, interrupted=interrupted,
                   points={"xdp": {"packets": xdp.packets, "bytes": xdp.bytes, "seconds": xdp.seconds,
                                   "pps": xdp.pps}},
                   intervals=loop.intervals, ring=ring,
                   controller=None if figures is None else
                   {"hold": cfg.hold, "allocator": cfg.allocator, "drain_us": drain_us, **figures},
                   reconciliation={"metadata": meta}, pressure=limited,
                   reconciled=fine)
    if not cfg.quiet:
        report.live_summary(doc, out)
    if cfg.json_path:
        write_json(cfg.json_path, doc)
    return doc

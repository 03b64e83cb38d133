"""``nta run --iface IFACE --no-replay``: measure traffic arriving on an interface the user names.

No topology, no replayer: XDP is attached to IFACE (in the current namespace,
or --netns NS), never replacing a program already there, and the run lasts
until --duration seconds or Ctrl-C, then prints its summary, as xdp-bench
does. Traffic comes from an external generator: the path for users who
outgrow a VM. Every RX queue of the interface (--queues: its first N) gets
what a replayed run's queue gets: with --controller a metadata ring, a
controller thread pinned to the CPU that services the queue (harness.nic)
and a pool on an arena of its own; with --rx afxdp a socket on the queue,
zero-copy where the driver offers it; with --free-on other a reader on
another CPU. The counting points are measured, reconciled and reported as in
a replayed run (harness.measure, harness.reconcile, harness.report). The
program is recorded while attached (harness.ifacestate): a run killed with
-9 leaves it for the next run or 'nta topo down' to detach.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time

from harness import pressure, reconcile, report, signals
from harness.consumer import Consumers
from harness.errors import NtaError, UsageError, require_root
from harness.figures import modes_text, socket_mode
from harness.ifacestate import Attachment, detach_stale
from harness.jsonfile import document, write_json
from harness.measure import Loop
from harness.netlink import Netlink
from harness.nic import Nic, describe
from harness.placement import place_controllers
from harness.run import XSK_RING, RunConfig, buffer_size, check_afxdp, queue_counts
from harness.topostate import link_xdp
from harness.xsk import XskConfig


def check_queues(queues: int | None, nic: Nic) -> int:
    """The RX queues a run on ``nic`` takes: all of them, or the first ``queues``."""
    if queues is None:
        return nic.rx_queues
    if queues > nic.rx_queues:
        raise NtaError(f"--queues {queues}: {nic.where} has {nic.rx_queues} RX queue"
                       + ("s" if nic.rx_queues != 1 else ""))
    return queues


def run_live(cfg: RunConfig, iface: str, netns: str | None = None, duration: float | None = None,
             out=sys.stdout, queues: int | None = None) -> dict:
    """Measure what arrives on ``iface`` (of ``netns``) until ``duration`` or Ctrl-C; ``queues``: its first
    N RX queues (None: all). Returns the run's document."""
    if duration is not None and duration <= 0:
        raise NtaError(f"bad --duration {duration}: must be positive")
    cfg.check_receive()
    if cfg.stuck:
        raise UsageError(f"--stuck {cfg.stuck}: picks flows from a capture, not with --iface")
    require_root("nta run --iface")
    for line in detach_stale():  # a program a killed run left here is gone before the interface is looked at
        print(f"nta: {line}", file=sys.stderr)
    nic = describe(iface, netns)
    if nic.attached[0]:
        raise NtaError(f"{nic.where} already has an XDP program ({nic.attached[0]}, prog id {nic.attached[1]}); "
                       "nta never replaces one: detach it first")
    cfg = dataclasses.replace(cfg, queues=check_queues(queues, nic))
    if cfg.rx == "afxdp":
        check_afxdp(nic.mtu, permit=cfg.permit is not None)
        if cfg.xdp_mode == "zerocopy" and nic.zero_copy is False:
            raise NtaError(f"--xdp-mode zerocopy: {nic.where} (driver {nic.driver}) has no zero-copy AF_XDP; its XDP "
                           f"features: {nic.features_text()} (--xdp-mode auto falls back to copy mode)")
    limits = pressure.Limits(budget=cfg.budget or 0, reserve=cfg.reserve or 0, permit=cfg.permit,
                             flow_limit=cfg.flow_limit or 0)
    per_queue_cpu = nic.queue_cpus[:cfg.queues]
    # each controller on its queue's CPU, as the kernel runs a queue's page pool where its NAPI runs; one
    # queue whose CPU is only a guess (round robin) is left to the scheduler
    pinned = cfg.queues > 1 or not nic.cpus_from.startswith("round robin")
    placement, _ = place_controllers(cfg, None, per_queue_cpu if pinned else None)
    say = (lambda line: None) if cfg.quiet else (lambda line: print(line, file=out, flush=True))
    interrupted = False
    record = Attachment(iface, netns, cfg.mode)
    with contextlib.ExitStack() as stack:
        record.begin()
        stack.callback(record.end)  # after the program is detached (the stack unwinds in reverse)
        prog = cfg.program(netns, iface)
        prog.loaded = record.attached  # the record names it before it is attached: kill -9 may come any time
        stack.enter_context(prog)
        mode, prog_id = describe_attached(iface, netns)
        consumer = None
        if cfg.controller:
            xsk = None
            if cfg.rx == "afxdp":
                xsk = XskConfig(netns, iface, prog.xskmap_fd, buffer_size(nic.mtu), XSK_RING, cfg.fill, cfg.copybreak,
                                xdp_mode=cfg.xdp_mode, umem_chunks=cfg.umem_chunks)
            consumer = Consumers(prog.ring_fds if cfg.rx == "ring" else [None] * cfg.queues, nic.ifindex, cfg.hold,
                                 cfg.allocator, cfg.arena_pages, free_on=cfg.free_on, placement=placement, xsk=xsk,
                                 limits=limits)
            stack.callback(consumer.close)
        say(f"nta run: {nic.where} (ifindex {nic.ifindex}, driver {nic.driver}, MTU {nic.mtu}, XDP features: "
            f"{nic.features_text()}), no replay, XDP {mode} (prog id {prog_id}), action {cfg.action}"
            + (f", controller hold {cfg.hold}, allocator {cfg.allocator}" if consumer else "")
            + (", freed by a reader on another CPU" if consumer and cfg.free_on == "other" else "")
            + (f"; {pressure.limits_text(limits)}" if limits else "")
            + (f"; {duration:g} s" if duration else "; Ctrl-C ends the run"))
        say(f"  {cfg.queues} of {nic.rx_queues} RX queues, on CPUs "
            + ", ".join(f"{q}->{c}" for q, c in enumerate(per_queue_cpu)) + f" ({nic.cpus_from})"
            + ("; controllers pinned there" if consumer and pinned else ""))
        if consumer and cfg.rx == "afxdp":
            say("  AF_XDP sockets: " + modes_text([socket_mode(c.xsk_stats()) for c in consumer.queues]))
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
        rows = queue_counts(per_queue_cpu, prog, None, figures) if cfg.queues > 1 else None
    if figures is None:
        meta = None
    elif figures.get("xsk"):
        meta = reconcile.sockets(xdp.packets, ring, figures["xsk"], figures["controller"]["handled"])
    else:
        meta = reconcile.metadata(xdp.packets, ring, figures["controller"]["handled"])
    acct = reconcile.queues(rows, xdp.packets, 0) if rows else None
    limited = pressure.figures(limits, figures["controller"], figures["pool"], figures.get("xsk"), permitted) \
        if figures else None
    fine = ((meta is None or meta["reconciled"]) and (acct is None or acct["reconciled"]) and (limited is None or (
        limited["drops"]["reconciled"] and limited.get("reserve", {"balanced": True})["balanced"])))
    doc = document("run", iface=iface, netns=netns, ifindex=nic.ifindex, nic=nic.as_dict(), mode=cfg.mode,
                   action=cfg.action, xdp={"mode": mode, "prog_id": prog_id}, wall_seconds=wall,
                   interrupted=interrupted,
                   config={"queues": cfg.queues, "rx": cfg.rx, "xdp_mode": cfg.xdp_mode if cfg.rx == "afxdp" else None,
                           "fill": cfg.fill or (XSK_RING if cfg.rx == "afxdp" else None), "free_on": cfg.free_on,
                           "queue_cpus": per_queue_cpu, "controllers_pinned": bool(consumer and pinned),
                           **limits.as_dict()},
                   points={"xdp": {"packets": xdp.packets, "bytes": xdp.bytes, "seconds": xdp.seconds,
                                   "pps": xdp.pps}},
                   intervals=loop.intervals, ring=ring,
                   controller=None if figures is None else
                   {"hold": cfg.hold, "allocator": cfg.allocator, "drain_us": drain_us, **figures},
                   queues=rows, reconciliation={"metadata": meta, "queues": acct}, pressure=limited,
                   reconciled=fine)
    if not cfg.quiet:
        report.live_summary(doc, out)
    if cfg.json_path:
        write_json(cfg.json_path, doc)
    return doc


def describe_attached(iface: str, netns: str | None) -> tuple[str | None, int | None]:
    """(mode, prog id) of what is attached to ``iface`` now, as the kernel reports it."""
    with Netlink(netns) as ipr:
        return link_xdp(ipr.get_links(ipr.link_lookup(ifname=iface)[0])[0])

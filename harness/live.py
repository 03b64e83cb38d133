"""``nta run --iface IFACE --no-replay``: measure traffic arriving on an interface the user names.

No topology, no replayer: XDP is attached to IFACE (in the current namespace,
or --netns NS), never replacing a program already there, and the run lasts
until --duration seconds or Ctrl-C, then prints its summary, as xdp-bench
does. Traffic comes from an external generator: the path for users who
outgrow a VM. The counting points are XDP seen, and with --controller the
metadata ring and the controller, reconciled as in a replayed run.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

from pyroute2 import IPRoute

from harness import __version__
from harness.errors import NtaError
from harness.report import check_writable, n, table, write_json
from harness.run import (
    META_HEAD,
    Consumer,
    RunConfig,
    meta_columns,
    meta_rows,
    meta_unaccounted,
    require_root,
)
from harness.xdp import MetaProgram, XdpProgram


def ifindex_of(iface: str, netns: str | None) -> int:
    try:
        with IPRoute(netns=netns) if netns else IPRoute() as ipr:
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
    check_writable(cfg.json_path)
    require_root("nta run --iface")
    if netns and not os.path.exists(os.path.join("/run/netns", netns)):
        raise NtaError(f"no network namespace {netns}")
    ifindex = ifindex_of(iface, netns)
    say = (lambda *a: None) if cfg.quiet else (lambda *a: print(*a, file=out, flush=True))
    interrupted = False
    with contextlib.ExitStack() as stack:
        if cfg.controller:
            from harness.nta import parse_hold

            parse_hold(cfg.hold)
            prog = stack.enter_context(MetaProgram(netns, iface, cfg.action, cfg.mode,
                                                   ring_pages=cfg.ring_pages))
            consumer = Consumer(cfg, ifindex)
            stack.callback(consumer.close)
        else:
            prog = stack.enter_context(XdpProgram(netns, iface, cfg.action, cfg.mode))
            consumer = None
        where = f"{iface} [{netns}]" if netns else iface
        say(f"nta run: {where} (ifindex {ifindex}), no replay, XDP {cfg.mode}, action {cfg.action}"
            + (f", controller hold {cfg.hold}, allocator {cfg.allocator}" if consumer else "")
            + (f"; {duration:g} s" if duration else "; Ctrl-C ends the run"))
        say(f"{'time':>9} {'rx/s':>12} {'rx':>13}" + (META_HEAD if consumer else ""))
        t0 = time.monotonic()
        next_tick, prev_t, prev_seen = t0 + cfg.interval, t0, 0
        prev_meta = {"meta": 0, "lost": 0, "alloc": 0, "free": 0}
        intervals = []
        try:
            while duration is None or time.monotonic() - t0 < duration:
                if consumer:
                    consumer.pump(prog)
                    time.sleep(cfg.drain_us / 1e6)
                else:
                    time.sleep(min(0.05, max(0.0, next_tick - time.monotonic())))
                now = time.monotonic()
                if now >= next_tick:
                    seen, dt = prog.stats().packets, now - prev_t
                    row = {"t": round(now - t0, 3), "rx_pps": (seen - prev_seen) / dt, "rx_total": seen}
                    line = f"{now - t0:8.3f}s {n(row['rx_pps']):>12} {n(seen):>13}"
                    if consumer:
                        m = consumer.snapshot(prog)
                        line += meta_columns(row, m, prev_meta, dt)
                        prev_meta = m
                    intervals.append(row)
                    say(line)
                    prev_t, prev_seen, next_tick = now, seen, next_tick + cfg.interval
        except KeyboardInterrupt:
            interrupted = True  # the end of the measurement, not an error: the summary follows
        wall = time.monotonic() - t0
        xdp = prog.stats()
        doc = {"tool": "nta", "version": __version__, "command": "run", "iface": iface, "netns": netns,
               "ifindex": ifindex, "mode": cfg.mode, "action": cfg.action, "wall_seconds": wall,
               "interrupted": interrupted,
               "points": {"xdp": {"packets": xdp.packets, "bytes": xdp.bytes, "seconds": xdp.seconds,
                                  "pps": xdp.pps}},
               "intervals": intervals}
        if consumer:
            deadline = time.monotonic() + 2.0
            while consumer.drained < prog.ring_stats()["submitted"] and time.monotonic() < deadline:
                consumer.pump(prog)
            ring, figures, _ = consumer.finish(prog)
            xdp = prog.stats()
            doc["points"]["xdp"]["packets"] = xdp.packets
            reconciled = meta_unaccounted(xdp.packets, ring, figures["controller"]["handled"]) == 0
            doc.update(ring=ring, controller={"hold": cfg.hold, **figures}, reconciled=reconciled)
    if not cfg.quiet:
        print(f"\nSummary: {where}, {n(xdp.packets)} packets in {wall:.3f} s "
              f"(XDP {cfg.mode}, action {cfg.action})", file=out)
        rows = [[f"XDP seen ({cfg.mode})", n(xdp.packets), n(xdp.bytes), f"{xdp.seconds:.3f}", n(xdp.pps)]]
        if consumer:
            rows += meta_rows(ring, doc["controller"]["controller"])
        table(rows, ["counting point", "packets", "bytes", "seconds", "pps"], out)
        if consumer:
            verdict = "reconciled" if doc["reconciled"] else "NOT reconciled"
            handled = doc["controller"]["controller"]["handled"]
            print(f"  metadata {verdict}: XDP seen {n(xdp.packets)}, ring submitted {n(ring['submitted'])} + "
                  f"lost {n(ring['lost'])}, handled {n(handled)}", file=out)
    if cfg.json_path:
        write_json(cfg.json_path, doc)
    return doc

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

from harness import cpus, pcapfile, report, timing, topology
from harness.builtin import BuiltinReplayer, check_live_frames
from harness.consumer import Consumers
from harness.controller import DROP_REASONS
from harness.errors import NtaError, require_root
from harness.figures import modes_text, socket_mode
from harness.ifacestate import detach_stale
from harness.jsonfile import document, write_json
from harness.measure import Loop
from harness.placement import place_controllers, place_threads, queue_cpus
from harness.pressure import NONE, limits_text
from harness.replay import Replayer, ReplayResult
from harness.runconfig import (  # noqa: F401  (RunConfig, buffer_size, XDP_PACKET_HEADROOM: the API of nta run)
    MAX_TIMED_SPAN,
    NAPI_MODES,
    XDP_PACKET_HEADROOM,
    XSK_RING,
    RunConfig,
    buffer_size,
    check_afxdp,
)
from harness.runresult import RunResult
from harness.xdpgen import GenProgram
from harness.xsk import XskConfig


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
    return GenProgram(cap, [None], [0], None, topology.GEN_IF, None,
                      unique=(None, None) if cfg.replay.unique_flows else None, paced=not cfg.replay.topspeed)


def xdp_xmit(topo) -> dict:
    """Frames XDP redirected out of the gen veth that its peer's rings took, and refused (full), summed
    over its queues."""
    stats = topo.driver_stats("gen")
    return {k: sum(v for name, v in stats.items() if name.startswith("tx_queue_") and name.endswith("_" + k))
            for k in ("xdp_xmit", "xdp_xmit_errors")}


def sent_per_queue(replay: ReplayResult, per_queue_cpu: list[int]) -> list[int]:
    """What the senders sent to each RX queue (sender on CPU c: the queue whose CPU is c)."""
    queue_of = {cpu: q for q, cpu in enumerate(per_queue_cpu)}
    sent = [0] * len(per_queue_cpu)
    for s in replay.senders or []:
        sent[queue_of[s["cpu"]]] += s["sent"]
    return sent


def queue_counts(per_queue_cpu: list[int], prog, sent: list[int] | None, figures: dict | None) -> list[dict]:
    """Each RX queue's counts: its CPU, what was sent to it (None: not known, traffic from elsewhere), what
    XDP saw on it, and with a controller its ring, controller and pool at the end."""
    out = []
    for q, xs in enumerate(prog.queue_stats()):
        row = {"queue": q, "cpu": per_queue_cpu[q], "sent": sent[q] if sent else None,
               "xdp": {"packets": xs["packets"], "bytes": xs["bytes"]}}
        if figures is not None:
            f = figures["queues"][q]
            c, p = f["controller"], f["pool"]
            row.update(ring={"submitted": xs["submitted"], "lost": xs["lost"]}, handled=c["handled"], kept=c["kept"],
                       drops={name: c[f"drop_{name}"] for name in DROP_REASONS}, permitted=xs["permitted"],
                       frees=c["frees"], handed_off=c["handed_off"], handoff_full=c["handoff_full"],
                       remote={k: p[k] for k in ("posted", "batches", "applied", "bad", "pending", "full",
                                                 "max_wait_ns")},
                       live_fragments=p["frags"], held=c["held"], peak_pages=c["peak_pages"],
                       xsk={k: f["xsk"][k] for k in ("received", "rx_dropped", "rx_ring_full")} if f["xsk"] else None)
        out.append(row)
    return out


def arm_timing(cfg: RunConfig, cap, sending, prog, consumer, per_queue_cpu) -> timing.Schedule | str | None:
    """A paced run's schedule, per queue, handed to what times its frames: the XDP program, or each queue's
    controller (its records); for a run that cannot be timed, why (None: at top speed, nothing to time)."""
    if not cfg.paced:
        return None
    sched = timing.schedule(cfg.replay, cap, sending, cfg.queues, per_queue_cpu)
    if isinstance(sched, str):
        return sched
    if consumer is not None and cfg.rx == "ring":
        for q, gaps in enumerate(sched.per_queue):
            if gaps is not None:
                consumer.queues[q].time_records(gaps)
    else:
        timing.arm_program(prog, sched)
    return sched


def timing_figures(sched, prog, consumer, queues: int) -> dict | None:
    """How the frames kept to their schedule, where they landed (harness.timing.figures)."""
    if sched is None:
        return None
    if isinstance(sched, str):
        return {"schedule": None, "not_timed": sched}
    if consumer is not None and consumer.queues[0].timing is not None:
        return timing.figures([c.timing.result() for c in consumer.queues if c.timing], sched.what,
                              "the controller, from XDP's time in each record")
    return timing.figures(timing.program_results(prog, queues), sched.what, "the XDP hook")


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
    limits = cfg.limits(info) if cfg.controller else NONE
    require_root("nta run")
    if cfg.rx == "afxdp":
        check_afxdp(info.mtu, permit=limits.permit is not None)
    if cfg.replayer == "xdp":
        check_live_frames(info)

    for line in detach_stale():
        print(f"nta: {line}", file=sys.stderr)
    for t, ended in topology.remove_stale():
        print(f"nta: removed stale topology {t.tag} (owner pid {t.owner_pid or '?'} is gone)"
              + (f"; ended {topology.ended_text(ended)} still inside it" if ended else ""), file=sys.stderr)

    say = (lambda line: None) if cfg.quiet else (lambda line: print(line, file=out, flush=True))
    with contextlib.ExitStack() as stack:
        topo = stack.enter_context(topology.Topology(cfg.tag, mtu=info.mtu, queues=cfg.threads))
        xdp_times = cfg.paced and not (cfg.controller and cfg.rx == "ring")  # else the controller times the records
        prog = stack.enter_context(cfg.program(topo.dut_ns, topo.dut_if, timed_frames=info.frames if xdp_times else 0))
        sender_cpus = place_threads(cfg, topo)
        per_queue_cpu = queue_cpus(cfg, sender_cpus)
        placement, spare = place_controllers(cfg, sender_cpus, per_queue_cpu)
        consumer = None
        if cfg.controller:
            xsk = None
            if cfg.rx == "afxdp":
                xsk = XskConfig(topo.dut_ns, topo.dut_if, prog.xskmap_fd, buffer_size(info.mtu), XSK_RING, cfg.fill,
                                cfg.copybreak, xdp_mode=cfg.xdp_mode, umem_chunks=cfg.umem_chunks)
            consumer = Consumers(prog.ring_fds if cfg.rx == "ring" else [None] * cfg.queues,
                                 topo.ifindex(topo.dut_ns, topo.dut_if), cfg.hold, cfg.allocator,
                                 cfg.arena_pages, peak_map=cfg.peak_map or bool(cfg.plot_dir), free_on=cfg.free_on,
                                 placement=placement, xsk=xsk, limits=limits)
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
            + (f"; {limits_text(limits)}" if limits else "")
            + ("; AF_XDP into the arena, " + modes_text([socket_mode(c.xsk_stats()) for c in consumer.queues])
               + " (a reader attaches at " + ", ".join(c.arena.reader_path for c in consumer.queues) + ")"
               if cfg.rx == "afxdp" else ""))
        # On a terminal, each line also says how far the run is (of the packets it calls for).
        total = None if cfg.replay.duration or cfg.replay.limit else info.frames * cfg.replay.loops
        loop = Loop(prog, consumer, interval=cfg.interval, drain_us=cfg.drain_us, link=lambda: topo.link_stats("gen"),
                    total=total,
                    progress=getattr(out, "isatty", lambda: False)(), say=say)
        say(loop.header())
        xmit0 = xdp_xmit(topo) if cfg.replayer == "xdp" else None
        sending = replayer(stack, cfg, info, topo, sender_cpus)
        sched = arm_timing(cfg, info, sending, prog, consumer, per_queue_cpu)
        loop.begin()
        with sending as rp:
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
        timed = timing_figures(sched, prog, consumer, cfg.queues)
        result = RunResult(config=cfg, capture=info, topology=topo.tag, xdp_mode=mode, xdp_prog_id=prog_id,
                           replay=replay, xdp=prog.stats(), veth_tx=veth_tx,
                           veth_dropped=veth_tx["tx_dropped"], wall=wall, intervals=loop.intervals,
                           ring=ring, consumer=figures, peak_map=consumer.peak_map if consumer else None,
                           xmit=xmit, limits=limits, permitted=prog.permitted(), timing=timed, flows=prog.flows(),
                           queues=queue_counts(per_queue_cpu, prog, sent_per_queue(replay, per_queue_cpu),
                                                figures) if per_queue_cpu else None)
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

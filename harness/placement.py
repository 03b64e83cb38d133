"""Where a run's threads go: the senders, the NAPI thread, each queue's controller and reader, by CPU."""

from __future__ import annotations

import contextlib
import os

from harness import cpus
from harness.consumer import Place
from harness.errors import NtaError
from harness.runconfig import CONTROLLER_NICE, RunConfig


def place_threads(cfg: RunConfig, topo) -> list[int] | None:
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

"""Replay timing where the frames land: each frame's gap from the one before it, at the XDP hook, against
the gap its sender's schedule called for (the capture's own clock divided by --multiplier, or the
--pps or --mbps rate's), per RX queue (one sender feeds one queue).

The schedule is the built-in replayer's own (harness/csrc/replay.c: nta_replay_gaps, from the due times
its send loop paces by); tcpreplay is held to the same one. The XDP counting programs time the frames
(-DNTA_TIMING: struct nta_timing per queue and a histogram of the gap errors); with a controller on the
metadata ring, the controller times its records instead (their ts_ns is XDP's clock). Either way the
same step (nta_shared.h: nta_timing_step). Reported: the gap error's p50, p99 and max, and the drift at
the end (the last frame's arrival after the first, against what the schedule called for).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from harness import cmodule

ffi, lib = cmodule.load("_traffic_c")
BUCKETS, SUB = lib.NTA_TIMING_BUCKETS, lib.NTA_TIMING_SUB


def bucket_floor(b: np.ndarray) -> np.ndarray:
    """The smallest gap error (ns) each bucket holds (nta_timing_bucket's inverse)."""
    b = np.asarray(b, dtype=np.int64)
    log, mant = b // SUB + 3, b % SUB
    return np.where(b < SUB, b, (SUB + mant) << np.maximum(log - 4, 0))


def sender_gaps(r) -> np.ndarray:
    """The schedule of one sender (a struct nta_replay of the built-in replayer), as gaps."""
    gaps = np.zeros(r.frames, dtype=np.uint64)
    rc = lib.nta_replay_gaps(r, ffi.from_buffer("uint64_t[]", gaps))
    if rc < 0:
        raise ValueError("a sender at top speed has no schedule")
    return gaps


def capture_gaps(cap, opts) -> np.ndarray:
    """The schedule of one sender of the whole capture at opts' rate (what tcpreplay is held to)."""
    r = ffi.new("struct nta_replay *")
    keep = [ffi.from_buffer(cap.offsets), ffi.from_buffer(cap.lengths), ffi.from_buffer(cap.rel_ns)]
    r.offsets, r.lengths = ffi.cast("const uint64_t *", keep[0]), ffi.cast("const uint32_t *", keep[1])
    r.rel_ns = ffi.cast("const int64_t *", keep[2])
    r.frames, r.span_ns, r.loops = cap.frames, int(cap.rel_ns[-1]) if cap.frames else 0, 1
    if opts.pps:
        r.mode, r.rate = lib.NTA_REPLAY_PPS, opts.pps
    elif opts.mbps:
        r.mode, r.rate = lib.NTA_REPLAY_MBPS, opts.mbps
    else:
        r.mode, r.rate = lib.NTA_REPLAY_TIMING, opts.multiplier or 1.0
    return sender_gaps(r)


@dataclasses.dataclass
class Schedule:
    """What each RX queue's frames are held to: the gaps of the sender that feeds it (None: not timed),
    and what the schedule is, for people."""

    per_queue: list[np.ndarray | None]
    what: str

    @property
    def frames(self) -> int:
        return sum(len(g) for g in self.per_queue if g is not None)


def schedule(opts, cap, rp, queues: int, per_queue_cpu: list[int] | None) -> Schedule | str:
    """The schedule of a paced run, per queue; or, as a string, why it cannot be timed."""
    what = (f"--pps {opts.pps:,.15g}" if opts.pps else f"--mbps {opts.mbps:,.15g}" if opts.mbps
            else f"the capture's timing x{opts.multiplier or 1:g}")
    if opts.topspeed:
        return "at top speed there is no schedule"
    if not cap.frames:
        return "no frames"
    senders = getattr(rp, "senders", None)
    if senders is None:  # tcpreplay: one sender of every frame, into queue 0
        return Schedule([capture_gaps(cap, opts)], what)
    if len(senders) > queues:
        return f"{len(senders)} senders into {queues} counted queue (use --queues {len(senders)})"
    per_queue: list[np.ndarray | None] = [None] * queues
    for i, s in enumerate(senders):
        cpu = rp.cpus[i] if rp.cpus else None
        q = 0 if queues == 1 else (cpu % queues if rp.xdp else per_queue_cpu.index(cpu))
        per_queue[q] = sender_gaps(s.r)
    return Schedule(per_queue, what)


def arm_program(prog, sched: Schedule) -> None:
    """The schedule into an XDP program compiled with -DNTA_TIMING: the gaps, each queue's place in them."""
    import ctypes

    gaps, states = prog.bpf[b"nta_gaps"], prog.bpf[b"nta_timing"]
    base = 0
    for q, g in enumerate(sched.per_queue):
        st = states.Leaf()
        if g is not None:
            for k, v in enumerate(g.tolist()):
                gaps[ctypes.c_int(base + k)] = ctypes.c_uint64(v)
            st.base, st.count = base, len(g)
            base += len(g)
        states[ctypes.c_int(q)] = st


def program_results(prog, queues: int) -> list[tuple[dict, np.ndarray]]:
    """Each queue's timing state and histogram, read from the XDP program."""
    import ctypes

    states, hist = prog.bpf[b"nta_timing"], prog.bpf[b"nta_timing_hist"]
    out = []
    for q in range(queues):
        s = states[ctypes.c_int(q)]
        state = {k: getattr(s, k) for k, _ in s._fields_ if k != "pad"}
        h = np.array([hist[ctypes.c_int(q * BUCKETS + b)].value for b in range(BUCKETS)], dtype=np.uint64)
        out.append((state, h))
    return out


def percentile_ns(hist: np.ndarray, q: float) -> float:
    """The gap error below which a share q of the gaps fall (a bucket's floor: within a sixteenth)."""
    total = int(hist.sum())
    cum = np.cumsum(hist)
    return float(bucket_floor(np.searchsorted(cum, q * total, side="left")))


def figures(results: list[tuple[dict, np.ndarray]], what: str, where: str) -> dict:
    """The gap error's percentiles and the drift at the end, over the timed queues (each queue's drift; the
    run's is the one furthest from its schedule)."""
    timed = [(s, h) for s, h in results if s["count"] and s["frames"] > 1]
    if not timed:
        return {"schedule": what, "where": where, "gaps": 0}
    hist = sum((h for _, h in timed), np.zeros(BUCKETS, dtype=np.uint64))
    drifts = [{"drift_ns": s["err_sum_ns"], "scheduled_ns": s["scheduled_ns"], "frames": s["frames"],
               "drift_pct": 100.0 * s["err_sum_ns"] / s["scheduled_ns"] if s["scheduled_ns"] else None}
              for s, _ in timed]
    worst = max(drifts, key=lambda d: abs(d["drift_ns"]))
    return {"schedule": what, "where": where, "gaps": int(hist.sum()),
            "p50_us": percentile_ns(hist, 0.50) / 1e3, "p99_us": percentile_ns(hist, 0.99) / 1e3,
            "max_us": max(s["max_err_ns"] for s, _ in timed) / 1e3,
            "drift_us": worst["drift_ns"] / 1e3, "drift_pct": worst["drift_pct"],
            "scheduled_s": worst["scheduled_ns"] / 1e9, "queues": drifts,
            "histogram": {"bucket_floor_ns": bucket_floor(np.flatnonzero(hist)).tolist(),
                          "gaps": hist[hist > 0].tolist()}}


class ControllerTiming:
    """A queue's timing kept by its controller from its records (nta_ctl_set_timing): the state, the gaps
    and the histogram, owned here for as long as the controller runs."""

    def __init__(self, ctl_ffi, ctl_lib, ctl, gaps: np.ndarray):
        self.gaps = np.ascontiguousarray(gaps, dtype=np.uint64)
        self.hist = np.zeros(BUCKETS, dtype=np.uint64)
        self.state = ctl_ffi.new("struct nta_timing *")
        self.state.count = len(self.gaps)
        ctl_lib.nta_ctl_set_timing(ctl, self.state, ctl_ffi.cast("uint64_t *", ctl_ffi.from_buffer(self.gaps)),
                                   ctl_ffi.cast("uint64_t *", ctl_ffi.from_buffer(self.hist)))

    def result(self) -> tuple[dict, np.ndarray]:
        s = self.state
        return ({k: getattr(s, k) for k in ("base", "count", "k", "frames", "first_ns", "last_ns", "scheduled_ns",
                                            "max_err_ns", "err_sum_ns")}, self.hist.copy())

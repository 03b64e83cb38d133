"""Replay timing, without traffic: the schedules the built-in replayer paces by (as gaps), and the one step
that times a frame (nta_timing_step, here through a controller fed records with chosen XDP times): its
histogram against the buckets' floors, its percentiles, its drift."""

from __future__ import annotations

import numpy as np
import pytest

from harness.controller import META, Controller
from harness.imix import write_timed
from harness.nta import Arena, Pool
from harness.pcapfile import load
from harness.replay import ReplayOptions
from harness.timing import BUCKETS, ControllerTiming, bucket_floor, capture_gaps, figures


@pytest.fixture(scope="module")
def timed_cap(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("t") / "timed.pcap")
    write_timed(path, mean_gap_us=20.0, cycles=10)
    return load(path)


def test_schedules_as_gaps(timed_cap):
    cap = timed_cap
    pps = capture_gaps(cap, ReplayOptions(pps=50_000))
    assert len(pps) == cap.frames and (pps == 20_000).all()
    mbps = capture_gaps(cap, ReplayOptions(mbps=100))
    lens = cap.lengths.astype(np.int64)
    assert np.allclose(mbps[1:], lens[:-1] * 80, atol=1) and abs(int(mbps[0]) - int(lens[-1]) * 80) <= 1
    own = capture_gaps(cap, ReplayOptions(multiplier=2))
    rel = cap.rel_ns.astype(np.int64)
    assert np.allclose(own[1:], np.diff(rel) / 2, atol=1) and own[0] == 0  # loops back to back
    assert 15_000 < np.diff(rel).mean() < 25_000  # Poisson gaps, a mean of 20 us


def test_floors_are_increasing_and_cover_the_range():
    f = bucket_floor(np.arange(BUCKETS))
    assert f[0] == 0 and (np.diff(f) > 0).all() and f[16] == 16 and f[-1] > 10**13


def timed(errors_ns: list[int], gap: int = 10_000):
    """Records whose XDP times are ``gap`` apart plus each error, timed against gaps of ``gap``."""
    with Arena(max_pages=256) as a, Pool(a) as p, Controller(p, "immediate") as c:
        from harness.controller import ffi, lib

        t = ControllerTiming(ffi, lib, c._c, np.full(7, gap, dtype=np.uint64))
        recs = np.zeros(len(errors_ns) + 1, dtype=META)
        recs["len"] = 64
        recs["ts_ns"] = 10**9 + np.concatenate([[0], np.cumsum(np.array(errors_ns) + gap)])
        c.handle(recs)
        return t.result()


def test_each_gap_error_lands_in_its_bucket():
    rng = np.random.default_rng(5)
    errors = [0, 1, 15, 16, 17, 999, -5000, 123_456, -9_999] + rng.integers(-9_000, 2_000_000, 500).tolist()
    state, hist = timed(errors)
    floors = bucket_floor(np.arange(BUCKETS))
    want = np.bincount(np.searchsorted(floors, np.abs(errors), side="right") - 1, minlength=BUCKETS)
    assert (hist == want).all()
    assert state["frames"] == len(errors) + 1 and state["k"] == (len(errors) + 1) % 7
    assert state["scheduled_ns"] == 10_000 * len(errors) and state["err_sum_ns"] == sum(errors)
    assert state["max_err_ns"] == max(abs(e) for e in errors)


def test_percentiles_and_drift():
    # (a gap's error is never below minus the gap: a frame cannot land before the one ahead of it)
    errors = [100] * 98 + [50_000, -20_000]
    f = figures([timed(errors, gap=30_000)], "--pps 33,333", "the controller")
    assert f["gaps"] == 100 and f["max_us"] == 50.0
    assert 0.09 <= f["p50_us"] <= 0.1 and 19 <= f["p99_us"] <= 20  # a bucket's floor: within a sixteenth
    assert f["drift_us"] == pytest.approx((9_800 + 30_000) / 1e3) and f["scheduled_s"] == pytest.approx(3e-3)
    assert figures([({"count": 0, "frames": 0}, np.zeros(BUCKETS))], "x", "y")["gaps"] == 0


def test_a_frame_stamped_before_the_one_ahead_has_no_gap():
    state, hist = timed([-20_000, 0])  # XDP's clock read on two CPUs: the second frame's stamp is earlier
    assert state["max_err_ns"] == 10_000 and state["err_sum_ns"] == -10_000 and int(hist.sum()) == 2

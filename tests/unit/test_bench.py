"""The allocator benchmarks: traces are deterministic, the space figure is right, every driver runs.

Speed is not asserted here (this machine is shared and noisy): 'make bench'
measures it. These tests check that the figures are computed correctly.
"""

import json
import os

import numpy as np
import pytest

from harness.bench import alloc as bench
from harness.nta import CELLS
from tests.conftest import assert_one_line_error, nta


def test_traces_are_deterministic_and_shaped():
    a, b = bench.trace_sizes("imix", 12000, 7), bench.trace_sizes("imix", 12000, 7)
    assert (a == b).all()
    counts = {s: int((a == s).sum()) for s in (64, 576, 1500)}
    assert sum(counts.values()) == 12000
    assert abs(counts[64] / 12000 - 7 / 12) < 0.02 and abs(counts[1500] / 12000 - 1 / 12) < 0.02
    u = bench.trace_sizes("uniform", 10000, 7)
    assert u.min() >= 64 and u.max() <= 1518
    slots = bench.trace_slots(100, 1000, 7)
    assert slots[:100].tolist() == list(range(100)) and slots.max() < 100


def test_pcap_trace_is_the_capture_frame_sizes(pcaps):
    from harness.pcapfile import load

    path = os.path.join(pcaps, "tcpreplay-test.pcap")
    sizes = bench.trace_sizes("pcap", 400, 1, pcap=path)
    frames = load(path).lengths.tolist()
    assert sizes.tolist() == (frames * 3)[:400]


def test_peak_requested_matches_a_plain_simulation():
    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 2000, size=3000).astype(np.uint32)
    slots = bench.trace_slots(50, 3000, 3)
    live, held, peak = 0, {}, 0
    for size, slot in zip(sizes.tolist(), slots.tolist(), strict=True):
        live += size - held.get(slot, 0)
        held[slot] = size
        peak = max(peak, live)
    assert bench.peak_requested(sizes, slots) == peak


@pytest.mark.parametrize("allocator", ["nta", "pow2", "glibc", "jemalloc", "tcmalloc", "mimalloc"])
def test_each_driver_replays_the_trace(tmp_path, allocator):
    if bench.PEERS.get(allocator) and not bench._find_lib(bench.PEERS[allocator]):
        pytest.skip(f"{bench.PEERS[allocator]} is not installed ('make setup-test' installs it)")
    n = 64 + 4000
    path = str(tmp_path / "t.trace")
    bench.write_trace(path, bench.trace_sizes("imix", n, 1), bench.trace_slots(64, n, 1), 64)
    r = bench.run_trace(allocator, path, 3)
    assert r["window"] == 64 and r["steps"] == n and len(r["ns_per_pair"]) == 3
    assert all(x > 0 for x in r["ns_per_pair"])
    assert r["peak_rss_bytes"] >= 0
    if allocator in ("nta", "pow2"):
        assert r["arena_peak_committed_bytes"] > 0


@pytest.mark.parametrize("pattern", ["producer-consumer", "per-thread"])
@pytest.mark.parametrize("allocator", ["nta", "glibc", "mimalloc"])
def test_two_threads_replay_the_trace(tmp_path, allocator, pattern):
    """xthread.c checks itself that every remote put the NTA's consumer posted was applied and the pool
    balanced (it fails otherwise)."""
    if bench.PEERS.get(allocator) and not bench._find_lib(bench.PEERS[allocator]):
        pytest.skip(f"{bench.PEERS[allocator]} is not installed ('make setup-test' installs it)")
    n = 64 + 20000
    path = str(tmp_path / "t.trace")
    bench.write_trace(path, bench.trace_sizes("imix", n, 1), bench.trace_slots(64, n, 1), 64)
    r = bench.run_trace(allocator, path, 2, pattern)
    assert r["pattern"] == pattern and r["window"] == 64 and r["steps"] == n and len(r["ns_per_pair"]) == 2
    assert all(x > 0 for x in r["ns_per_pair"]) and r["peak_rss_bytes"] >= 0
    assert r["threads"] == (1 if pattern == "producer-consumer" else 2)
    if pattern == "producer-consumer":  # the consumer keeps 7/8 of a window in flight, the ring at most a window
        sizes = np.cumsum(np.concatenate([[0], bench.trace_sizes("imix", n, 1).astype(np.int64)]))
        least, most = (sizes[k:] - sizes[:-k] for k in (56, 65))
        assert least.min() <= r["least_requested_bytes"] <= r["peak_requested_bytes"] <= most.max()
    r = bench.run_trace(allocator, path, 1, pattern, threads=3)  # each pair's pool checked and closed by xthread
    assert r["threads"] == 3 and len(r["ns_per_pair"]) == 1


def test_frag_test_exact_beats_pow2():
    nta_f, nta_map, nta_st = bench.frag_test("nta", pages=64)
    pow_f, pow_map, _ = bench.frag_test("pow2", pages=64)
    for failures in (nta_f, pow_f):
        assert [f["max_size"] for f in failures] == [4096 >> i for i in range(len(failures))]
        assert all(f["failed_size"] <= f["max_size"] for f in failures)
    assert nta_f[0]["utilisation"] > 0.85 and nta_f[-1]["utilisation"] > 0.95
    assert pow_f[-1]["utilisation"] < 0.8
    assert nta_f[-1]["utilisation"] > pow_f[-1]["utilisation"]
    assert (pow_map == CELLS["slack"]).sum() > 0 and (nta_map == CELLS["slack"]).sum() == 0
    assert nta_st["bytes_requested"] <= nta_st["bytes_handed"]


def test_frag_plot(tmp_path):
    doc = bench.bench_frag(pages=64, plot_dir=str(tmp_path), out=lambda *a: None)
    assert os.path.getsize(doc["plot"]) > 10000
    assert open(doc["plot"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_bulk_counts_operations():
    doc = bench.bench_bulk(batch=256, seconds=0.3, out=lambda *a: None)
    assert doc["ops_per_second"] > 0 and len(doc["runs"]) == 3


def test_cli_bench_alloc_json(tmp_path):
    out = tmp_path / "alloc.json"
    proc = nta("bench", "alloc", "--traces", "imix", "--windows", "64", "--steps", "4000", "--repeats", "2",
               "--allocators", "nta,glibc", "--json", str(out), check=True)
    assert "imix trace, window 64" in proc.stdout and "glibc" in proc.stdout
    doc = json.loads(out.read_text())
    (res,) = doc["results"]
    assert set(res["allocators"]) == {"nta", "glibc"}
    assert res["allocators"]["nta"]["time_vs_nta"] == 1.0


def test_cli_bench_alloc_pattern_json(tmp_path):
    out = tmp_path / "alloc.json"
    proc = nta("bench", "alloc", "--pattern", "producer-consumer", "--traces", "imix", "--windows", "64",
               "--steps", "4000", "--repeats", "2", "--processes", "1", "--allocators", "nta,glibc",
               "--json", str(out), check=True)
    assert "1 producer-consumer pair, " in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["pattern"] == "producer-consumer" and doc["results"][0]["pattern"] == "producer-consumer"
    assert_one_line_error(nta("bench", "alloc", "--pattern", "per-thread", "--allocators", "nta,pow2"),
                          "--pattern per-thread: pow2 runs one thread only")
    assert_one_line_error(nta("bench", "alloc", "--threads", "2"), "--threads 2: with --pattern")


def test_cli_bench_errors():
    assert_one_line_error(nta("bench", "alloc", "--traces", "zipf"), "unknown trace 'zipf'")
    assert_one_line_error(nta("bench", "alloc", "--allocators", "nta,hoard"), "unknown allocator 'hoard'")
    assert_one_line_error(nta("bench", "alloc", "--windows", "x"), "--windows", code=2)
    assert_one_line_error(nta("bench", "alloc", "--windows", "64,0"), "bad --windows 64,0")
    assert_one_line_error(nta("bench", "alloc", "--traces", "pcap", "--pcap", "/nonexistent.pcap"),
                          "no such file", code=2)


def test_pool_bench_runs_every_shape(tmp_path):
    out = tmp_path / "pool.json"
    proc = nta("bench", "pool", "--loops", "20000", "--repeats", "2", "--json", str(out), check=True)
    doc = json.loads(out.read_text())
    frags = {f"frag ({al})" for al in ("nta", "slab", "ppfrag", "page")}
    assert set(doc["results"]) == {"fast_path", "ptr_ring", "slow", *frags}
    r = doc["results"]
    assert {r[f"frag ({al})"]["allocator"] for al in ("nta", "slab", "ppfrag", "page")} == \
        {"nta", "slab", "ppfrag", "page"}
    assert r["frag (page)"]["stats"]["cached"] > 0  # each fragment a page, back into the cache
    assert r["fast_path"]["stats"]["cached"] > 0 and r["fast_path"]["stats"]["unmaps"] == 0
    assert r["ptr_ring"]["stats"]["ring"] > 0 and r["ptr_ring"]["stats"]["refill"] > 0
    assert r["slow"]["stats"]["maps"] == r["slow"]["stats"]["unmaps"] > 20000  # every op maps and unmaps
    assert "fast_path" in proc.stdout and "kernel ns/op" in proc.stdout

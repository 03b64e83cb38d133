"""Benchmarks of the allocator that need no root: ``nta bench alloc``, ``frag``, ``bulk``, ``pool``.

alloc: speed and space on packet-size traces. A trace is a sequence of
  sizes and, for each, the slot of a window of live blocks it replaces (a
  seeded random slot: frees out of allocation order). Every allocator runs
  the identical trace file in its own process (build/trace): the NTA and the
  pow2 baseline linked in, glibc malloc as is, jemalloc, tcmalloc and
  mimalloc through LD_PRELOAD. Time is ns per alloc+free pair, the median
  of timed slices in each process, then the median over several processes
  (interleaved with the other allocators'); space is the peak of bytes
  requested over the peak memory the run added (anonymous + shared-memory
  resident pages, sampled after the fill and after each timed slice, less
  the same before the first allocation), the same measure for everyone,
  the median over the processes. Producer-consumer: the bytes requested are
  those live when the memory was sampled (allocated, and not yet freed by
  the consumer), as xthread.c measures them, not a window of blocks.

frag: the NTA author's test. Fill an arena of 4094 pages with pseudo-random
  sizes up to the page size until an allocation fails; halve the maximum
  and go on; record each failure and the utilisation then. For the NTA and
  the pow2 baseline, with page-map pictures.

bulk: allocations and frees per second through the numpy bulk calls.

pool: the page pool in the shapes of the kernel's bench_page_pool_simple.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import statistics
import subprocess
import tempfile
import time

import numpy as np

from harness.errors import NtaError
from harness.imix import IMIX
from harness.nta import CELLS, Arena, ArenaError
from harness.pcapfile import load
from harness.plots import plot_page_maps
from harness.report import n as fmt_n
from harness.report import table

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRACE_BIN = os.path.join(ROOT, "build", "trace")
XTHREAD_BIN = os.path.join(ROOT, "build", "xthread")
TRACE_MAGIC = 0x4E544154
DEFAULT_PCAP = os.path.join(os.path.dirname(ROOT), "shared", "pcaps", "tcpreplay-test.pcap")

# name -> shared object to LD_PRELOAD (None: this process's own malloc)
PEERS = {
    "glibc": None,
    "jemalloc": "libjemalloc.so.2",
    "tcmalloc": "libtcmalloc_minimal.so.4",
    "mimalloc": "libmimalloc.so.2",
}


def _find_lib(soname: str) -> str | None:
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"):
        p = os.path.join(d, soname)
        if os.path.exists(p):
            return p
    found = ctypes.util.find_library(soname.split(".so")[0].removeprefix("lib"))
    return found if found and os.path.exists(found) else None


# -- traces ----------------------------------------------------------------------

def trace_sizes(kind: str, n: int, seed: int, pcap: str | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "imix":
        sizes = np.array([s for s, k in IMIX for _ in range(k)], dtype=np.uint32)
        return rng.choice(sizes, size=n).astype(np.uint32)
    if kind == "uniform":
        return rng.integers(64, 1519, size=n, dtype=np.uint32)
    if kind == "pcap":
            # the capture's frame sizes as a replay sends them, in order, repeated
        return np.resize(load(pcap or DEFAULT_PCAP).lengths, n).astype(np.uint32)
    raise NtaError(f"unknown trace {kind!r}: choose imix, uniform, pcap")


def trace_slots(window: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    slots = rng.integers(0, window, size=n, dtype=np.uint32)
    slots[:window] = np.arange(window, dtype=np.uint32)  # fill the window first
    return slots


def peak_requested(sizes: np.ndarray, slots: np.ndarray) -> int:
    """Peak of the live bytes requested: each step adds its size and frees its slot's last block."""
    order = np.argsort(slots, kind="stable")
    s_sorted = sizes[order].astype(np.int64)
    prev = np.roll(s_sorted, 1)
    first = np.ones(len(order), dtype=bool)
    first[1:] = slots[order][1:] != slots[order][:-1]
    prev[first] = 0
    freed = np.empty_like(prev)
    freed[order] = prev
    return int(np.cumsum(sizes.astype(np.int64) - freed).max())


def write_trace(path: str, sizes: np.ndarray, slots: np.ndarray, window: int) -> None:
    with open(path, "wb") as f:
        np.array([TRACE_MAGIC, window, len(sizes)], dtype=np.uint32).tofile(f)
        sizes.astype(np.uint32).tofile(f)
        slots.astype(np.uint32).tofile(f)


PATTERNS = ("single", "producer-consumer", "per-thread")  # threads and who frees: see allocator/bench/xthread.c


def run_trace(allocator: str, path: str, repeats: int, pattern: str = "single", threads: int | None = None) -> dict:
    """The trace at ``path`` replayed by ``allocator`` in a process of its own: one thread (trace.c), or
    in ``pattern`` (xthread.c): ``threads`` producer-consumer pairs (default 1), or threads each with
    blocks of its own (default 2)."""
    binary = TRACE_BIN if pattern == "single" else XTHREAD_BIN
    if not os.access(binary, os.X_OK):
        raise NtaError(f"{binary} is missing: run 'make build'")
    if pattern != "single" and allocator == "pow2":
        raise NtaError(f"pow2 runs one thread only, not --pattern {pattern}")
    env = dict(os.environ)
    which = allocator if allocator in ("nta", "pow2") else "malloc"
    if PEERS.get(allocator):
        lib = _find_lib(PEERS[allocator])
        if not lib:
            raise NtaError(f"{allocator}: {PEERS[allocator]} not found (make bench installs it)")
        env["LD_PRELOAD"] = lib
    argv = ([binary, which, path, str(repeats)] if pattern == "single" else
            [binary, which, pattern, path, str(repeats), *([str(threads)] if threads else [])])
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise NtaError(f"trace run of {allocator} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout)


def alloc_row(name: str, r: dict, asked: bool) -> list[str]:
    """An allocator's line of the ``bench alloc`` table (with the bytes live at the samples: ``asked``)."""
    return ([name, f"{r['ns_per_pair']:.1f}", f"{r['time_vs_nta']:.2f}", f"{r['peak_rss_bytes'] / 1024:,.0f}"]
            + ([f"{r['peak_requested_bytes'] / 1024:,.0f}"] if asked else [])
            + [f"{r['space'] * 100:.1f}%", "-" if r["space_vs_nta"] is None else f"{r['space_vs_nta']:.2f}"])


def bench_alloc(traces=("imix", "uniform", "pcap"), windows=(1024, 16384), steps=2_000_000, repeats=7,
                allocators=("nta", "pow2", "glibc", "jemalloc", "tcmalloc", "mimalloc"), pcap=None,
                seed=1, processes=3, pattern: str = "single", threads: int | None = None, out=print) -> dict:
    results = []
    pc = pattern == "producer-consumer"
    with tempfile.TemporaryDirectory(prefix="nta-bench-") as tmp:
        for kind in traces:
            for window in windows:
                n = window + steps
                sizes, slots = trace_sizes(kind, n, seed, pcap), trace_slots(window, n, seed)
                path = os.path.join(tmp, f"{kind}-{window}.trace")
                write_trace(path, sizes, slots, window)
                # per-thread: each thread with the whole trace's blocks live at once; producer-consumer: a ring
                # of them per pair
                copies = (threads or 2) if pattern == "per-thread" else (threads or 1)
                req = peak_requested(sizes, slots) * copies
                rows = {}
                # each allocator runs `processes` times, interleaved with the others, so that
                # a noisy moment of this shared machine does not land on one allocator only
                runs = {name: [] for name in allocators}
                for _ in range(processes):
                    for name in allocators:
                        runs[name].append(run_trace(name, path, repeats, pattern, threads))
                for name, rs in runs.items():
                    ns = statistics.median(statistics.median(r["ns_per_pair"]) for r in rs)
                    rss = int(statistics.median(r["peak_rss_bytes"] for r in rs))
                    # two threads: what was live when the memory was sampled (the ring is not always full)
                    asked = int(statistics.median(r["peak_requested_bytes"] for r in rs)) if pc else req
                    space = asked / rss if rss > 0 else float("nan")
                    rows[name] = {"ns_per_pair": ns,
                                  "ns_runs": [statistics.median(r["ns_per_pair"]) for r in rs],
                                  "peak_rss_bytes": rss, "peak_rss_runs": [r["peak_rss_bytes"] for r in rs],
                                  "space": space, "peak_requested_bytes": asked,
                                  "arena_peak_committed_bytes": rs[0].get("arena_peak_committed_bytes")}
                base = rows.get("nta")
                for row in rows.values():
                    row["time_vs_nta"] = row["ns_per_pair"] / base["ns_per_pair"] if base else None
                    row["space_vs_nta"] = row["space"] / base["space"] if base and base["space"] else None
                results.append({"trace": kind, "window": window, "steps": steps, "pattern": pattern,
                                "threads": None if pattern == "single" else copies,
                                "peak_requested_bytes": req, "allocators": rows})
                out(f"\n{kind} trace, window {fmt_n(window)}, {fmt_n(steps)} steps, "
                    + ("" if pattern == "single" else
                       f"{threads or 1} producer-consumer pair{'s' if (threads or 1) > 1 else ''}, "
                       if pc else f"{threads or 2} threads, per-thread, ")
                    + f"peak requested {req / 1024:,.0f} KiB"
                    + ("; space: what was live when the memory was sampled (asked KiB)" if pc else ""))
                table([alloc_row(name, r, pc) for name, r in rows.items()],
                      ["allocator", "ns/pair", "x nta", "peak KiB"] + (["asked KiB"] if pc else [])
                      + ["space used", "x nta"])
    return {"tool": "nta", "command": "bench alloc", "pattern": pattern, "threads": threads, "repeats": repeats,
            "processes": processes, "seed": seed, "results": results}


# -- the author's fragmentation test -----------------------------------------------



def frag_test(kind: str, pages: int = 4094, page_size: int = 4096, chunk_size: int = 32, seed: int = 1,
              min_size: int | None = None):
    """The author's test. Returns (failures, picture, stats): each failure records the maximum then,
    the size that failed and the utilisation (bytes requested / arena bytes) at that moment; the
    picture is the page map with SLACK where a block holds chunks beyond the bytes asked for."""
    rng = np.random.default_rng(seed)
    stop = min_size or chunk_size
    failures, blocks = [], []
    with Arena(max_pages=pages, kind=kind, page_size=page_size, chunk_size=chunk_size, cache_depth=0) as a:
        top = page_size
        requested = 0
        while top >= stop:
            for size in rng.integers(1, top + 1, size=4096).tolist():
                try:
                    off = a.alloc(size)
                except ArenaError:
                    failures.append({"max_size": top, "failed_size": size,
                                     "utilisation": requested / (pages * page_size),
                                     "allocated": a.stats()["live_allocs"]})
                    top //= 2
                    break
                blocks.append((off, size))
                requested += size
        a.check()
        stats, picture = a.stats(), a.page_map(pages)
        flat = picture.reshape(-1)
        for off, size in blocks:  # chunks handed out beyond ceil(size / chunk): waste made visible
            first = (off - a.data_off) // chunk_size
            asked, held = -(-size // chunk_size), a.alloc_size(size) // chunk_size
            if held > asked:
                cells = flat[first + asked:first + held]
                cells[cells != CELLS["untouched"]] = CELLS["slack"]
        return failures, picture, stats


def bench_frag(pages=4094, seed=1, plot_dir=None, out=print) -> dict:
    results, maps = {}, {}
    for kind in ("nta", "pow2"):
        t0 = time.perf_counter()
        failures, m, st = frag_test(kind, pages=pages, seed=seed)
        results[kind] = {"failures": failures, "seconds": time.perf_counter() - t0,
                         "final_utilisation": failures[-1]["utilisation"] if failures else None,
                         "bytes_requested": st["bytes_requested"], "bytes_handed": st["bytes_handed"]}
        maps[kind] = m
    out(f"\nfragmentation test: {pages} pages of 4096 bytes, random sizes up to the maximum; "
        "on each failure the maximum halves")
    rows = []
    for i in range(max(len(r["failures"]) for r in results.values())):
        row = []
        for kind in ("nta", "pow2"):
            f = results[kind]["failures"]
            row += [f"{f[i]['max_size']}", f"{f[i]['failed_size']}", f"{f[i]['utilisation'] * 100:.1f}%"] \
                if i < len(f) else ["", "", ""]
        rows.append(row)
    table(rows, ["nta max", "failed", "utilisation", "pow2 max", "failed", "utilisation"])
    doc = {"tool": "nta", "command": "bench frag", "pages": pages, "seed": seed, "results": results}
    if plot_dir:
        os.makedirs(plot_dir, exist_ok=True)
        path = os.path.join(plot_dir, "frag-page-maps.png")
        notes = {k: f"{100 * r['final_utilisation']:.1f}% of the arena asked for, slack "
                    f"{100 * (maps[k] == CELLS['slack']).mean():.1f}% of chunks" for k, r in results.items()}
        plot_page_maps(maps, path, 4096 // 32, notes,
                       title=f"page maps at the end of the fragmentation test ({pages} pages, each a tile "
                             "of 8 x 16 chunks of 32 bytes)")
        doc["plot"] = path
        out(f"\npage maps: {path}")
    return doc


def bench_bulk(batch=1024, seconds=2.0, out=print) -> dict:
    rng = np.random.default_rng(1)
    sizes = rng.choice(np.array([s for s, k in IMIX for _ in range(k)], dtype=np.uint32), size=batch)
    runs = []
    with Arena(max_pages=max(64, batch)) as a:
        for _ in range(3):
            ops, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds / 3:
                for _ in range(50):
                    offs = a.alloc_bulk(sizes)
                    a.free_bulk(offs, sizes)
                ops += 100 * batch
            runs.append(ops / (time.perf_counter() - t0))
        a.check()
    med = statistics.median(runs)
    out(f"\nbulk binding: IMIX batches of {batch}, alloc_bulk + free_bulk")
    table([[f"{batch}", f"{med / 1e6:.1f}", " ".join(f"{r / 1e6:.1f}" for r in runs)]],
          ["batch", "M ops/s (median)", "runs"])
    return {"tool": "nta", "command": "bench bulk", "batch": batch, "ops_per_second": med, "runs": runs}




# -- the page pool ------------------------------------------------------------

POOL_BIN = os.path.join(ROOT, "build", "poolbench")
# Brouer's bench_page_pool_simple on a Xeon E5-1650 v4 (his page_pool benchmarks, 2017): ns per alloc
# and recycle
POOL_ANCHORS = {"fast_path": 4.0, "ptr_ring": 13.6, "slow": 45.0, "frag": None}


def bench_pool(loops=2_000_000, repeats=5, processes=3, allocators=("nta", "slab", "ppfrag", "page"),
               out=print) -> dict:
    """The kernel's bench_page_pool_simple shapes, and the frag shape under each allocator."""
    if not os.access(POOL_BIN, os.X_OK):
        raise NtaError(f"{POOL_BIN} is missing: run 'make build'")
    shapes = [(m, None) for m in POOL_ANCHORS if m != "frag"] + [("frag", al) for al in allocators]
    rows = {}
    for mode, allocator in shapes:
        runs = []
        for _ in range(processes):
            cmd = [POOL_BIN, mode, str(loops), str(repeats)] + ([allocator] if allocator else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if proc.returncode != 0:
                raise NtaError(f"poolbench {' '.join(cmd[1:])} failed: {proc.stderr.strip()}")
            runs.append(json.loads(proc.stdout))
        ns = statistics.median(statistics.median(r["ns_per_op"]) for r in runs)
        name = mode if allocator is None else f"{mode} ({allocator})"
        rows[name] = {"mode": mode, "allocator": allocator, "ns_per_op": ns,
                      "runs": [statistics.median(r["ns_per_op"]) for r in runs],
                      "kernel_ns": POOL_ANCHORS[mode], "stats": runs[0]["stats"]}
    out(f"\npage pool: alloc + put, {fmt_n(loops)} loops, median of {repeats} rounds x {processes} processes")
    table([[m, f"{r['ns_per_op']:.1f}", f"{r['kernel_ns']:.1f}" if r["kernel_ns"] else "-",
            f"{r['ns_per_op'] / r['kernel_ns']:.2f}" if r["kernel_ns"] else "-"] for m, r in rows.items()],
          ["test", "ns/op", "kernel ns/op", "x kernel"])
    out("  (kernel: bench_page_pool_simple on a Xeon E5-1650 v4, not measured here; frag: IMIX fragments "
        "placed by each allocator)")
    return {"tool": "nta", "command": "bench pool", "loops": loops, "repeats": repeats,
            "processes": processes, "results": rows}

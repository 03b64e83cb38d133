"""Benchmarks of the allocator: ``nta bench alloc``, ``nta bench frag``, ``nta bench bulk``.

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
  the median over the processes.

frag: the NTA author's test. Fill an arena of 4094 pages with pseudo-random
  sizes up to the page size until an allocation fails; halve the maximum
  and go on; record each failure and the utilisation then. For the NTA and
  the pow2 baseline, with page-map pictures.

bulk: allocations and frees per second through the numpy bulk calls.

pool, e2e: the page pool's shapes, and the whole path against bare XDP.

replay: tcpreplay against the built-in replayer, counted at the XDP hook.
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
from harness.report import n as fmt_n
from harness.report import table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRACE_BIN = os.path.join(ROOT, "build", "trace")
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
        from harness.pcapfile import load

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


def run_trace(allocator: str, path: str, repeats: int) -> dict:
    if not os.access(TRACE_BIN, os.X_OK):
        raise NtaError(f"{TRACE_BIN} is missing: run 'make build'")
    env = dict(os.environ)
    which = allocator if allocator in ("nta", "pow2") else "malloc"
    if PEERS.get(allocator):
        lib = _find_lib(PEERS[allocator])
        if not lib:
            raise NtaError(f"{allocator}: {PEERS[allocator]} not found (make bench installs it)")
        env["LD_PRELOAD"] = lib
    proc = subprocess.run([TRACE_BIN, which, path, str(repeats)], capture_output=True, text=True, env=env,
                          timeout=600)
    if proc.returncode != 0:
        raise NtaError(f"trace run of {allocator} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout)


def bench_alloc(traces=("imix", "uniform", "pcap"), windows=(1024, 16384), steps=2_000_000, repeats=7,
                allocators=("nta", "pow2", "glibc", "jemalloc", "tcmalloc", "mimalloc"), pcap=None,
                seed=1, processes=3, out=print) -> dict:
    results = []
    with tempfile.TemporaryDirectory(prefix="nta-bench-") as tmp:
        for kind in traces:
            for window in windows:
                n = window + steps
                sizes, slots = trace_sizes(kind, n, seed, pcap), trace_slots(window, n, seed)
                path = os.path.join(tmp, f"{kind}-{window}.trace")
                write_trace(path, sizes, slots, window)
                req = peak_requested(sizes, slots)
                rows = {}
                # each allocator runs `processes` times, interleaved with the others, so that
                # a noisy moment of this shared machine does not land on one allocator only
                runs = {name: [] for name in allocators}
                for _ in range(processes):
                    for name in allocators:
                        runs[name].append(run_trace(name, path, repeats))
                for name, rs in runs.items():
                    ns = statistics.median(statistics.median(r["ns_per_pair"]) for r in rs)
                    rss = int(statistics.median(r["peak_rss_bytes"] for r in rs))
                    space = req / rss if rss > 0 else float("nan")
                    rows[name] = {"ns_per_pair": ns,
                                  "ns_runs": [statistics.median(r["ns_per_pair"]) for r in rs],
                                  "peak_rss_bytes": rss, "peak_rss_runs": [r["peak_rss_bytes"] for r in rs],
                                  "space": space,
                                  "arena_peak_committed_bytes": rs[0]["arena_peak_committed_bytes"]}
                base = rows.get("nta")
                for row in rows.values():
                    row["time_vs_nta"] = row["ns_per_pair"] / base["ns_per_pair"] if base else None
                    row["space_vs_nta"] = row["space"] / base["space"] if base else None
                results.append({"trace": kind, "window": window, "steps": steps, "peak_requested_bytes": req,
                                "allocators": rows})
                out(f"\n{kind} trace, window {fmt_n(window)}, {fmt_n(steps)} steps, "
                    f"peak requested {req / 1024:,.0f} KiB")
                table([[name, f"{r['ns_per_pair']:.1f}", f"{r['time_vs_nta']:.2f}",
                        f"{r['peak_rss_bytes'] / 1024:,.0f}", f"{r['space'] * 100:.1f}%",
                        f"{r['space_vs_nta']:.2f}"] for name, r in rows.items()],
                      ["allocator", "ns/pair", "x nta", "peak KiB", "space used", "x nta"])
    return {"tool": "nta", "command": "bench alloc", "repeats": repeats, "processes": processes, "seed": seed,
            "results": results}


# -- the author's fragmentation test -----------------------------------------------

SLACK = 5  # a picture-only cell: inside a block, beyond the bytes asked for


def frag_test(kind: str, pages: int = 4094, page_size: int = 4096, chunk_size: int = 32, seed: int = 1,
              min_size: int | None = None):
    """The author's test. Returns (failures, picture, stats): each failure records the maximum then,
    the size that failed and the utilisation (bytes requested / arena bytes) at that moment; the
    picture is the page map with SLACK where a block holds chunks beyond the bytes asked for."""
    from harness.nta import CELLS, Arena, ArenaError

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
        cpp = page_size // chunk_size
        for off, size in blocks:  # chunks handed out beyond ceil(size / chunk): waste made visible
            first = (off - a.data_off) // chunk_size
            asked = -(-size // chunk_size)
            if size > page_size:
                npages = -(-size // page_size)
                held = (1 << (npages - 1).bit_length() if kind == "pow2" else npages) * cpp
            else:
                held = asked
                if kind == "pow2":
                    held = max(1 << (size - 1).bit_length(), chunk_size) // chunk_size
            if held > asked:
                cells = flat[first + asked:first + held]
                cells[cells != CELLS["untouched"]] = SLACK
        return failures, picture, stats


def plot_page_maps(maps: dict[str, np.ndarray], path: str, chunks_per_page: int,
                   notes: dict | None = None, title: str | None = None) -> None:
    """Each page a tile of 8 rows of chunks, 64 pages across; one panel per map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    # untouched, free, used, cached, large, slack
    colours = ["#ffffff", "#f3e3c3", "#1f3b73", "#7fb3d5", "#6c3483", "#d9534f"]
    names = ["untouched", "free", "used (asked for)", "cached, in the ring, or pinned", "large block",
             "slack (handed out, not asked for)"]
    fig, axes = plt.subplots(1, len(maps), figsize=(max(6 * len(maps), 9), 7.5), squeeze=False)
    for ax, (name, m) in zip(axes[0], maps.items(), strict=True):
        pages, cols = m.shape[0], 64
        rows = -(-pages // cols)
        th, tw = 8, chunks_per_page // 8
        img = np.zeros((rows * th, cols * tw), dtype=np.uint8)
        for p in range(pages):
            r, c = divmod(p, cols)
            img[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = m[p].reshape(th, tw)
        ax.imshow(img, cmap=ListedColormap(colours), vmin=0, vmax=len(colours) - 1, interpolation="nearest",
                  aspect="auto")
        ax.set_title(f"{name}: {(notes or {}).get(name, '')}")
        ax.set_xticks([])
        ax.set_yticks([])
    seen = set().union(*(np.unique(m).tolist() for m in maps.values()))
    shown = [Patch(color=colours[v], label=names[v]) for v in sorted(seen) if v < len(names)]
    fig.legend(handles=shown, loc="lower center", ncol=3, frameon=False)
    pages = maps[next(iter(maps))].shape[0]
    fig.suptitle(title or f"page maps ({pages} pages, each a tile of 8 x {chunks_per_page // 8} chunks)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
                    f"{100 * (maps[k] == SLACK).mean():.1f}% of chunks" for k, r in results.items()}
        plot_page_maps(maps, path, 4096 // 32, notes,
                       title=f"page maps at the end of the fragmentation test ({pages} pages, each a tile "
                             "of 8 x 16 chunks of 32 bytes)")
        doc["plot"] = path
        out(f"\npage maps: {path}")
    return doc


def bench_bulk(batch=1024, seconds=2.0, out=print) -> dict:
    from harness.nta import Arena

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
# Brouer's bench_page_pool_simple on a Xeon E5-1650 v4 (DESIGN.md): ns per alloc + recycle
POOL_ANCHORS = {"fast_path": 4.0, "ptr_ring": 13.6, "slow": 45.0, "frag": None}


def bench_pool(loops=2_000_000, repeats=5, processes=3, out=print) -> dict:
    if not os.access(POOL_BIN, os.X_OK):
        raise NtaError(f"{POOL_BIN} is missing: run 'make build'")
    rows = {}
    for mode in POOL_ANCHORS:
        runs = []
        for _ in range(processes):
            proc = subprocess.run([POOL_BIN, mode, str(loops), str(repeats)], capture_output=True, text=True,
                                  timeout=600)
            if proc.returncode != 0:
                raise NtaError(f"poolbench {mode} failed: {proc.stderr.strip()}")
            runs.append(json.loads(proc.stdout))
        ns = statistics.median(statistics.median(r["ns_per_op"]) for r in runs)
        rows[mode] = {"ns_per_op": ns, "runs": [statistics.median(r["ns_per_op"]) for r in runs],
                      "kernel_ns": POOL_ANCHORS[mode], "stats": runs[0]["stats"]}
    out(f"\npage pool: alloc + put, {fmt_n(loops)} loops, median of {repeats} rounds x {processes} processes")
    table([[m, f"{r['ns_per_op']:.1f}", f"{r['kernel_ns']:.1f}" if r["kernel_ns"] else "-",
            f"{r['ns_per_op'] / r['kernel_ns']:.2f}" if r["kernel_ns"] else "-"] for m, r in rows.items()],
          ["test", "ns/op", "kernel ns/op", "x kernel"])
    out("  (kernel: bench_page_pool_simple on a Xeon E5-1650 v4, not measured here)")
    return {"tool": "nta", "command": "bench pool", "loops": loops, "repeats": repeats,
            "processes": processes,
            "results": rows}



# -- end to end ---------------------------------------------------------------------

def bench_e2e(loops: int = 2500, hold: str = "flow:16", pcap: str | None = None, out=print) -> dict:
    """One run each, on the same generator and capture: bare XDP_DROP counting at top speed; the
    full harness (metadata, ring, controller, pool) at top speed; the full harness at half the bare
    rate, for latency."""
    from harness.imix import write_imix
    from harness.replay import ReplayOptions
    from harness.run import RunConfig, require_root, run

    require_root("nta bench e2e")
    if pcap is None:
        pcap = os.path.join(ROOT, "build", "imix.pcap")
        if not os.path.exists(pcap):
            write_imix(pcap)

    def once(**kw):
        opts = {k: kw.pop(k) for k in ("pps", "topspeed") if k in kw}
        return run(RunConfig(pcap=pcap, replay=ReplayOptions(loops=loops, **opts), quiet=True, **kw))

    bare = once(topspeed=True)
    full = once(topspeed=True, controller=True, hold=hold)
    half_rate = max(1, int(bare.xdp.pps / 2))
    half = once(pps=half_rate, controller=True, hold=hold)
    rows, doc = [], {"tool": "nta", "command": "bench e2e", "pcap": pcap, "loops": loops, "hold": hold,
                     "results": {}}
    for name, r in (("bare XDP_DROP", bare), ("full harness", full), (f"full, {half_rate:,} pps", half)):
        c = r.consumer["controller"] if r.consumer else None
        lat = r.consumer["latency_us"] if r.consumer else {"samples": 0}
        entry = {"replayer_pps": r.replay.rated_pps, "xdp_pps": r.xdp.pps, "seen": r.xdp.packets,
                 "vs_bare": r.xdp.pps / bare.xdp.pps if bare.xdp.pps else None,
                 "handled_share": c["handled"] / r.xdp.packets if c else None,
                 "ring_lost": r.ring["lost"] if r.ring else None, "latency_us": lat,
                 "reconciled": r.reconciled}
        doc["results"][name] = entry
        rows.append([name, fmt_n(entry["xdp_pps"]), f"{entry['vs_bare']:.3f}",
                     f"{entry['handled_share']:.4f}" if c else "-", fmt_n(entry["ring_lost"]) if c else "-",
                     f"{lat['p50']:.0f} / {lat['p99']:.0f}" if lat["samples"] else "-"])
    out(f"\nend to end: {os.path.basename(pcap)} x{loops}, hold {hold}, one run each on the same generator")
    table(rows, ["configuration", "XDP pps", "x bare", "handled/seen", "ring lost", "latency p50/p99 us"])
    return doc


def replayers(napi: str) -> dict[str, dict]:
    """name -> RunConfig fields. With softirq NAPI, also one sendmmsg sender per CPU (each CPU then
    sends and runs XDP for its conversations); with threaded NAPI the other CPU is the NAPI thread's."""
    out = {"tcpreplay -K": {"replayer": "tcpreplay"},
           "builtin sendmmsg": {"replayer": "builtin", "send": "sendmmsg"},
           "builtin tx-ring": {"replayer": "builtin", "send": "tx-ring"}}
    ncpu = len(os.sched_getaffinity(0))
    if napi == "softirq" and ncpu > 1:
        out[f"builtin sendmmsg x{ncpu}"] = {"replayer": "builtin", "send": "sendmmsg", "threads": ncpu}
    return out


def replay_captures() -> dict[str, str]:
    """The two captures of 'bench replay': 1,200 64-byte UDP frames, and the bundled IMIX."""
    from harness.imix import write_frames, write_imix

    build = os.path.join(ROOT, "build")
    paths = {"64-byte": os.path.join(build, "min64.pcap"), "IMIX": os.path.join(build, "imix.pcap")}
    if not os.path.exists(paths["64-byte"]):
        write_frames(paths["64-byte"], [64] * 1200)
    if not os.path.exists(paths["IMIX"]):
        write_imix(paths["IMIX"])
    return paths


def bench_replay(loops: int = 1000, repeats: int = 3, napi=("softirq", "threaded"), batch: int = 64,
                 out=print) -> dict:
    """tcpreplay -K --topspeed against the built-in replayer (sendmmsg, the TX ring, and a sender per
    CPU) on the same capture, counted by the XDP program on the dut end: the median of ``repeats``
    runs each, the runs of the replayers interleaved, for each capture and NAPI mode. The ratio is
    the median of a replayer over tcpreplay's median in the same capture and mode."""
    from harness.replay import ReplayOptions
    from harness.run import RunConfig, require_root, run

    require_root("nta bench replay")
    caps = replay_captures()
    doc = {"tool": "nta", "command": "bench replay", "loops": loops, "repeats": repeats, "batch": batch,
           "captures": caps, "results": []}
    rows = []
    for cap_name, path in caps.items():
        for mode in napi:
            which = replayers(mode)
            runs: dict[str, list[dict]] = {name: [] for name in which}
            for _ in range(repeats):
                for name, fields in which.items():
                    r = run(RunConfig(pcap=path, replay=ReplayOptions(loops=loops, topspeed=True), quiet=True,
                                      napi=mode, batch=batch, **fields))
                    if not r.reconciled:
                        raise NtaError(f"bench replay: {name} on {cap_name} did not reconcile")
                    runs[name].append({"xdp_pps": r.xdp.pps, "replayer_pps": r.replay.rated_pps,
                                       "packets": r.xdp.packets, "veth_drops_resent": r.resent})
            base = statistics.median(x["xdp_pps"] for x in runs["tcpreplay -K"])
            for name, xs in runs.items():
                pps = [x["xdp_pps"] for x in xs]
                med = statistics.median(pps)
                entry = {"capture": cap_name, "napi": mode, "replayer": name, "xdp_pps_median": med,
                         "xdp_pps_min": min(pps), "xdp_pps_max": max(pps), "vs_tcpreplay": med / base,
                         "runs": xs}
                doc["results"].append(entry)
                rows.append([cap_name, mode, name, fmt_n(med), f"{fmt_n(min(pps))}..{fmt_n(max(pps))}",
                             f"{med / base:.2f}"])
    out(f"\nreplay: {loops} loops of 1,200 frames per run, top speed, XDP_DROP on the dut end; median of "
        f"{repeats} interleaved runs; batch {batch}")
    table(rows, ["capture", "NAPI", "replayer", "XDP pps", "range", "x tcpreplay"])
    return doc

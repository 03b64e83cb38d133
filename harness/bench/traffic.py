"""Benchmarks on real traffic that need root: ``nta bench e2e``, ``replay`` and ``real``.

e2e: the whole path against bare XDP on the same generator and capture.
replay: tcpreplay against the built-in replayer, counted at the XDP hook.
real: the pool's four allocators on the same replayed capture and lifetimes: the pages their fragments
  took at the peak, how much of those pages the frames asked for, and the page maps at the peak.
"""

from __future__ import annotations

import os
import statistics

import numpy as np

from harness import cpus
from harness.builtin import DEFAULT_BATCH
from harness.errors import NtaError, require_root
from harness.imix import write_frames, write_imix, write_timed
from harness.nta import CELLS, POOL_ALLOCATORS, pool_allocator
from harness.plots import plot_page_maps
from harness.replay import ReplayOptions
from harness.report import n as fmt_n
from harness.report import pct, table
from harness.run import NAPI_MODES, RunConfig, run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# -- end to end ---------------------------------------------------------------------

def bench_e2e(loops: int = 15000, hold: str = "flow:16", pcap: str | None = None, repeats: int = 3,
              out=print) -> dict:
    """On the same generator and capture, ``repeats`` rounds of: bare XDP_DROP counting at top speed; the
    full harness (metadata, ring, controller, pool) at top speed; the full harness at half that round's
    bare rate, for latency. Medians over the rounds; "x bare" is the median of a configuration over the
    median bare rate. The generator is the fastest that leaves a CPU to the controller: one xdp sender
    (live frames) on the first CPU, where the dut's XDP runs too; the controller's thread on another."""

    require_root("nta bench e2e")
    if pcap is None:
        pcap = os.path.join(ROOT, "build", "imix.pcap")
        if not os.path.exists(pcap):
            write_imix(pcap)

    def once(**kw):
        opts = {k: kw.pop(k) for k in ("pps", "topspeed") if k in kw}
        r = run(RunConfig(pcap=pcap, replay=ReplayOptions(loops=loops, **opts), quiet=True, replayer="xdp", **kw))
        c = r.consumer["controller"] if r.consumer else None
        return {"replayer_pps": r.replay.rated_pps, "xdp_pps": r.xdp.pps, "seen": r.xdp.packets,
                "handled_share": c["handled"] / r.xdp.packets if c else None,
                "ring_lost": r.ring["lost"] if r.ring else None,
                "latency_us": r.consumer["latency_us"] if r.consumer else {"samples": 0},
                "drain_us": r.config.drain_us if r.consumer else None, "reconciled": r.reconciled}

    names = ("bare XDP_DROP", "full harness", "full, half the bare rate")
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for _ in range(repeats):
        bare = once(topspeed=True)
        runs[names[0]].append(bare)
        runs[names[1]].append(once(topspeed=True, controller=True, hold=hold))
        runs[names[2]].append(once(pps=max(1, int(bare["xdp_pps"] / 2)), controller=True, hold=hold))
    base = statistics.median(x["xdp_pps"] for x in runs[names[0]])
    rows, doc = [], {"tool": "nta", "command": "bench e2e", "pcap": pcap, "loops": loops, "hold": hold,
                     "replayer": "xdp", "repeats": repeats, "results": {}}
    for name, xs in runs.items():
        med = statistics.median(x["xdp_pps"] for x in xs)
        full = xs[0]["handled_share"] is not None
        entry = {"xdp_pps_median": med, "vs_bare": med / base if base else None,
                 "handled_share_min": min(x["handled_share"] for x in xs) if full else None,
                 "ring_lost_total": sum(x["ring_lost"] for x in xs) if full else None,
                 "latency_p99_us_median": statistics.median(x["latency_us"]["p99"] for x in xs) if full else None,
                 "latency_p50_us_median": statistics.median(x["latency_us"]["p50"] for x in xs) if full else None,
                 "reconciled": all(x["reconciled"] for x in xs), "runs": xs}
        doc["results"][name] = entry
        rows.append([name, fmt_n(med), f"{entry['vs_bare']:.3f}",
                     f"{entry['handled_share_min']:.4f}" if full else "-",
                     fmt_n(entry["ring_lost_total"]) if full else "-",
                     f"{entry['latency_p50_us_median']:.0f} / {entry['latency_p99_us_median']:.0f}" if full else "-"])
    drain = runs[names[1]][0]["drain_us"]
    out(f"\nend to end: {os.path.basename(pcap)} x{loops}, hold {hold}, one xdp sender; the controller's thread on "
        f"a CPU of its own, sleeping {drain} us on an empty ring; medians of {repeats} interleaved rounds")
    table(rows, ["configuration", "XDP pps", "x bare", "handled/seen", "ring lost", "latency p50/p99 us"])
    return doc


XDP_LOOPS = 10  # the xdp replayer's runs take this many times the loops: a run of a second, not 0.1 s


def replayers(napi: str) -> dict[str, dict]:
    """name -> RunConfig fields. With softirq NAPI, also one sendmmsg and one xdp sender per CPU (each
    CPU then sends and runs XDP for its conversations); with threaded NAPI the other CPU is the NAPI
    thread's."""
    out = {"tcpreplay -K": {"replayer": "tcpreplay"},
           "builtin sendmmsg": {"replayer": "builtin", "send": "sendmmsg"},
           "builtin tx-ring": {"replayer": "builtin", "send": "tx-ring"},
           "xdp": {"replayer": "xdp"}}
    ncpu = len(cpus.usable())
    if napi == "softirq" and ncpu > 1:
        out[f"builtin sendmmsg x{ncpu}"] = {"replayer": "builtin", "send": "sendmmsg", "threads": ncpu}
        out[f"xdp x{ncpu}"] = {"replayer": "xdp", "threads": ncpu}
    return out


def replay_captures() -> dict[str, str]:
    """The two captures of 'bench replay': 1,200 64-byte UDP frames, and the bundled IMIX."""
    build = os.path.join(ROOT, "build")
    paths = {"64-byte": os.path.join(build, "min64.pcap"), "IMIX": os.path.join(build, "imix.pcap")}
    if not os.path.exists(paths["64-byte"]):
        write_frames(paths["64-byte"], [64] * 1200)
    if not os.path.exists(paths["IMIX"]):
        write_imix(paths["IMIX"])
    return paths


def bench_replay(loops: int = 1000, repeats: int = 3, napi=("softirq", "threaded"), batch: int | None = None,
                 out=print) -> dict:
    """tcpreplay -K --topspeed against the built-in replayer (sendmmsg, the TX ring, and a sender per
    CPU) on the same capture, counted by the XDP program on the dut end: the median of ``repeats``
    runs each, the runs of the replayers interleaved, for each capture and NAPI mode. The ratio is
    the median of a replayer over tcpreplay's median in the same capture and mode."""

    bad = [m for m in napi if m not in NAPI_MODES]
    if bad:
        raise NtaError(f"bad --napi {bad[0]!r}: choose {', '.join(NAPI_MODES)}")
    require_root("nta bench replay")
    caps = replay_captures()
    doc = {"tool": "nta", "command": "bench replay", "loops": loops, "xdp_loops": loops * XDP_LOOPS,
           "repeats": repeats, "batch": batch or DEFAULT_BATCH,
           "captures": caps, "results": []}
    rows = []
    for cap_name, path in caps.items():
        for mode in napi:
            which = replayers(mode)
            runs: dict[str, list[dict]] = {name: [] for name in which}
            for _ in range(repeats):
                for name, fields in which.items():
                    n_loops = loops * (XDP_LOOPS if fields["replayer"] == "xdp" else 1)
                    r = run(RunConfig(pcap=path, replay=ReplayOptions(loops=n_loops, topspeed=True), quiet=True,
                                      napi=mode, batch=None if fields["replayer"] == "tcpreplay" else batch,
                                      **fields))
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
    out(f"\nreplay: {loops} loops of 1,200 frames per run ({loops * XDP_LOOPS} for xdp), top speed, XDP_DROP on "
        f"the dut end; median of {repeats} interleaved runs; batch "
        + (f"{batch}" if batch else f"{DEFAULT_BATCH['sendmmsg']} (xdp {DEFAULT_BATCH['xdp']})"))
    table(rows, ["capture", "NAPI", "replayer", "XDP pps", "range", "x tcpreplay"])
    doc["timing"] = bench_timing(repeats=repeats, out=out)
    return doc


TIMING_REPLAYERS = {"tcpreplay": {"replayer": "tcpreplay"}, "builtin": {"replayer": "builtin"},
                    "xdp": {"replayer": "xdp"}}


def bench_timing(loops: int = 40, pps: float = 100_000, repeats: int = 3, out=print) -> dict:
    """How well each replayer keeps to its schedule, timed where the frames land (harness.timing): at the
    capture's own timing (the IMIX frames with Poisson arrivals at 50,000 a second: build/imix-timed.pcap)
    and at ``pps`` (the IMIX capture), below each one's ceiling; the median over ``repeats`` interleaved
    runs of the p99 gap error and of the drift at the end."""
    require_root("nta bench replay")
    timed = os.path.join(ROOT, "build", "imix-timed.pcap")
    if not os.path.exists(timed):
        write_timed(timed)
    cases = {"own timing (50 kpps Poisson)": (timed, {}), f"--pps {fmt_n(pps)}": (replay_captures()["IMIX"],
                                                                                  {"pps": pps})}
    doc = {"loops": loops, "pps": pps, "repeats": repeats, "results": []}
    rows = []
    for case, (path, rate) in cases.items():
        runs: dict[str, list[dict]] = {name: [] for name in TIMING_REPLAYERS}
        for _ in range(repeats):
            for name, fields in TIMING_REPLAYERS.items():
                r = run(RunConfig(pcap=path, replay=ReplayOptions(loops=loops, **rate), quiet=True, **fields))
                if not r.reconciled or not r.timing or not r.timing.get("gaps"):
                    raise NtaError(f"bench replay: {name} at {case} did not reconcile, or was not timed")
                runs[name].append(r.timing)
        for name, ts in runs.items():
            p99 = statistics.median(t["p99_us"] for t in ts)
            drift = statistics.median(abs(t["drift_pct"]) for t in ts)
            doc["results"].append({"case": case, "replayer": name, "p99_us_median": p99,
                                   "abs_drift_pct_median": drift, "runs": ts})
            rows.append([case, name, f"{statistics.median(t['p50_us'] for t in ts):.1f}", f"{p99:.1f}",
                         f"{statistics.median(t['max_us'] for t in ts):.0f}", f"{drift:.3f}%"])
    out(f"\nreplay timing at the XDP hook: {loops} loops a run, median of {repeats} interleaved runs; gap error = "
        "a frame's gap from the one before it against its schedule's")
    table(rows, ["schedule", "replayer", "gap error p50 us", "p99 us", "max us", "|drift| at the end"])
    return doc


REAL_HOLDS = ("flow:16", "packets:3000", "random:3000")


def bench_real(loops: int = 300, pps: float = 200_000, holds=REAL_HOLDS, allocators=tuple(POOL_ALLOCATORS),
               pcap: str | None = None, plot_dir: str | None = None, rx: str = "ring", copybreak: int = 0,
               out=print) -> dict:
    """Each allocator places the fragments of the same capture, replayed at the same rate, held under the
    same policies (seeded lifetimes: the same frames held for the same packets): one run each. For each,
    the pool's pages holding fragments at their peak, the utilisation then and on average, and the ratio
    of its pages to the NTA's; with ``plot_dir``, the page maps of nta and slab at their peak under the
    last policy. With ``rx="afxdp"`` the frames themselves come through AF_XDP (bench_afxdp_rows)."""
    require_root("nta bench real")
    allocators = list(dict.fromkeys(pool_allocator(a) for a in allocators))
    if pcap is None:
        pcap = replay_captures()["IMIX"]
    doc = {"tool": "nta", "command": "bench real", "pcap": pcap, "loops": loops, "pps": pps, "rx": rx,
           "results": []}
    rows, maps = [], {}
    for hold in holds:
        runs = {}
        for al in allocators:
            r = run(RunConfig(pcap=pcap, replay=ReplayOptions(loops=loops, pps=pps), quiet=True,
                              controller=True, hold=hold, allocator=al, replayer="builtin", rx=rx,
                              copybreak=copybreak if rx == "afxdp" and al == "nta" else 0,
                              peak_map=plot_dir is not None))
            c = r.consumer["controller"]
            if not r.reconciled or c["handled"] != r.xdp.packets or c["alloc_fails"]:
                x = r.consumer.get("xsk") or {}
                dropped = (f", the sockets dropped {x['rx_dropped']:,} (no fill buffer) and {x['rx_ring_full']:,} "
                           f"(RX ring full)") if x else ""
                raise NtaError(f"bench real: {al} under {hold} did not handle every frame: XDP saw "
                               f"{r.xdp.packets:,}, the controller handled {c['handled']:,}{dropped}, "
                               f"{c['alloc_fails']:,} allocations failed, {'' if r.reconciled else 'not '}"
                               f"reconciled (see 'nta run')")
            runs[al] = r
            if hold == holds[-1] and al in ("nta", "slab"):
                maps[al] = r.peak_map
        if rx == "afxdp":
            rows += afxdp_rows(hold, runs, doc["results"])
            continue
        base = runs["nta"].consumer["memory"]["peak_pages"] if "nta" in runs else None
        for al, r in runs.items():
            m = r.consumer["memory"]
            entry = {"hold": hold, "allocator": al, "frames": r.xdp.packets, **m,
                     "pages_vs_nta": m["peak_pages"] / base if base else None}
            doc["results"].append(entry)
            rows.append([hold, al, fmt_n(m["peak_pages"]), fmt_n(m["peak_fragments"]),
                         pct(m["utilisation_at_peak"]), pct(m["utilisation_mean"]),
                         fmt_n(m["idle_mapped_pages_peak"]), f"{entry['pages_vs_nta']:.2f}" if base else "-"])
    if rx == "afxdp":
        out(f"\nreal frames: {os.path.basename(pcap)} x{loops} at {fmt_n(pps)} pps through XDP into an AF_XDP "
            "socket whose UMEM is the pool's arena; at the pool's peak, the memory the frames held took beyond "
            "the pages the fill ring's buffers fill, per frame held"
            + (f"; nta copies frames of at most {copybreak} bytes out" if copybreak else ""))
        table(rows, ["hold", "allocator", "frames held", "bytes/frame", "x 2048", "fill ring at peak",
                     "peak pages", "x slab", "handed/frame", "at end/frame"])
        return doc
    out(f"\nreal traffic: {os.path.basename(pcap)} x{loops} at {fmt_n(pps)} pps through XDP, the metadata "
        "ring and the controller; the pool's pages holding fragments at their peak")
    table(rows, ["hold", "allocator", "peak pages", "fragments", "util at peak", "util mean", "idle pages",
                 "x nta pages"])
    if plot_dir and maps:
        path = os.path.join(plot_dir, "real-page-maps.png")
        shown = {al: _trim(m) for al, m in maps.items() if m is not None}
        notes = {al: _map_note(m) for al, m in shown.items()}
        plot_page_maps(shown, path, next(iter(shown.values())).shape[1], notes,
                       title=f"the pool's pages at their peak, hold {holds[-1]}, {os.path.basename(pcap)} at "
                             f"{fmt_n(pps)} pps (each page a tile of 8 x 16 chunks of 32 bytes)")
        doc["plot"] = path
        out(f"\npage maps: {path}")
    return doc


FIXED_CHUNK = 2048  # what every AF_XDP program known posts (xdpsock, xdp-bench, tcpreplay's AF_XDP mode)


def afxdp_rows(hold: str, runs: dict, results: list) -> list[list[str]]:
    """Per allocator, at the pool's peak: the frames held and what they took beyond the pages the fill
    ring's buffers fill on their own, per frame (a fixed 2,048-byte chunk a frame: 2,048), against 2,048;
    the fill ring then (buffers, pages); the peak pages against slab's; what the allocator handed each
    held frame (chunks); and, more severe, what the frames held at the end took once the fill ring was
    given back (the pool's pages then, per frame: it charges them the pages they share with buffers)."""
    slab = runs["slab"].consumer["memory"]["peak_pages"] if "slab" in runs else None
    rows = []
    for al, r in runs.items():
        x, m = r.consumer["xsk"], r.consumer["memory"]
        held, per = m["frames_held_at_peak"], m["bytes_per_frame_held"]
        entry = {"hold": hold, "allocator": al, "frames": r.xdp.packets, **m,
                 "vs_fixed_chunks": per / FIXED_CHUNK if per is not None else None,
                 "peak_pages_vs_slab": m["peak_pages"] / slab if slab else None,
                 "handed_per_frame_held_at_end": x["handed_at_end"] / x["held_at_end"] if x["held_at_end"] else None,
                 "frames_held_at_end": x["held_at_end"], "pages_at_end": x["pages_at_end"],
                 "bytes_per_frame_held_at_end": x["bytes_per_frame_held"],
                 "copied": x["copied"], "trims": r.consumer["pool"]["trims"]}
        results.append(entry)
        rows.append([hold, al, fmt_n(held), fmt_n(per), f"{entry['vs_fixed_chunks']:.2f}" if per is not None else "-",
                     f"{fmt_n(m['fill_buffers_at_peak'])} x {fmt_n(m['fill_buffer_bytes'])} "
                     f"({fmt_n(m['fill_pages_at_peak'])} pages)",
                     fmt_n(m["peak_pages"]), f"{entry['peak_pages_vs_slab']:.2f}" if slab else "-",
                     fmt_n(entry["handed_per_frame_held_at_end"]), fmt_n(x["bytes_per_frame_held"])])
    return rows


def _map_note(m) -> str:
    used, slack = int((m == CELLS["used"]).sum()), int((m == CELLS["slack"]).sum())
    pages = int(((m == CELLS["used"]) | (m == CELLS["slack"])).any(axis=1).sum())
    return f"{pages:,} pages hold fragments; slack {100 * slack / max(1, used + slack):.1f}% of their chunks"


def _trim(page_map):
    """The map's pages up to the last one the pool touched (at least a row of 64)."""
    touched = np.flatnonzero((page_map != CELLS["untouched"]).any(axis=1))
    return page_map[:max(int(touched[-1]) + 1 if touched.size else 1, 64)]

"""``nta bench pressure`` (root): how much memory each allocator needs to lose nothing, found on real traffic.

For each of the pool's allocators, on the same capture, rate and hold policy (one sender, one queue: the
controller sees the capture's order, so a run's drops do not depend on timing and a bisection is sound):

* the zero-drop budget: the fewest pages a pool may hold with no frame dropped, by bisection over real
  runs (``nta run --budget``), every probe printed;
* the drops at one budget for all (by default the NTA's zero-drop budget): what each allocator loses with
  the memory the NTA needs;
* with ``--permit``: stuck flows fill a small budget (``--permit-budget``, 8 pages: full almost at once,
  so that the permitted traffic lives in the reserve all run, not in ordinary memory taken before the
  budget filled), and the smallest reserve that keeps every permitted frame, by bisection; beside it the
  permitted traffic's peak bytes in flight N, and what two rules predict from N: an exact-size
  allocator's, N rounded up to pages, and Zijlstra's for kmalloc's powers of two
  (kmalloc_estimate_variable, 2008: 2N rounded up to pages, plus a slab for each size class).
"""

from __future__ import annotations

import math
import os

from harness.bench.traffic import replay_captures
from harness.errors import NtaError, require_root
from harness.nta import CHUNK_SIZE, PAGE_SIZE, POOL_ALLOCATORS, pool_allocator
from harness.replay import ReplayOptions
from harness.report import n as fmt_n
from harness.report import table
from harness.run import RunConfig, run

SLAB_CLASSES = PAGE_SIZE.bit_length() - CHUNK_SIZE.bit_length() + 1  # 32 .. 4096 bytes: a slab each


def rules(peak_bytes: int) -> dict:
    """What a reserve for ``peak_bytes`` in flight needs, by rule, in pages."""
    return {"exact": math.ceil(peak_bytes / PAGE_SIZE),
            "exact_x1_2": math.ceil(1.2 * peak_bytes / PAGE_SIZE),
            "two_n_m": math.ceil(2 * peak_bytes / PAGE_SIZE) + SLAB_CLASSES}


class Prober:
    """Real runs of one capture, rate and hold policy, a probe each, printed as they come."""

    def __init__(self, pcap: str, loops: int, pps: float, hold: str, replayer: str, rx: str, out):
        self.pcap, self.loops, self.pps, self.hold, self.replayer, self.rx, self.out = (pcap, loops, pps, hold,
                                                                                         replayer, rx, out)

    def __call__(self, allocator: str, **limits) -> dict:
        r = run(RunConfig(pcap=self.pcap, replay=ReplayOptions(loops=self.loops, pps=self.pps), quiet=True,
                          controller=True, hold=self.hold, allocator=allocator, replayer=self.replayer, rx=self.rx,
                          **limits))
        c, pr = r.consumer["controller"], r.pressure
        lost = (r.ring or {}).get("lost", 0) + ((r.consumer.get("xsk") or {}).get("rx_dropped", 0))
        if not r.reconciled or lost:
            raise NtaError(f"bench pressure: {allocator} with {limits} lost frames before the controller ({lost:,}) "
                           "or did not reconcile: its drops would not be memory's (lower --pps)")
        return {"limits": {k: v for k, v in limits.items() if k != "permit"}, "handled": c["handled"],
                "kept": c["kept"], "dropped": c["drops"], "by_reason": pr["drops"]["by_reason"] if pr else None,
                "budget_peak": r.consumer["pool"]["budget_peak"],
                "permitted": pr.get("permitted") if pr else None, "reserve": pr.get("reserve") if pr else None}


def smallest(ok, hi: int, say) -> tuple[int, dict, list]:
    """The smallest value v >= 1 with ok(v) (a probe's result, or None when it fails), assuming what holds
    at v holds above it: hi doubled until it holds, then bisected. Returns v, its probe, every probe."""
    probes, lo = [], 0
    while True:
        got = ok(hi)
        probes.append((hi, got))
        say(hi, got)
        if got[0]:
            break
        lo, hi = hi, hi * 2
    best = got
    while hi - lo > 1:
        mid = (lo + hi) // 2
        got = ok(mid)
        probes.append((mid, got))
        say(mid, got)
        if got[0]:
            hi, best = mid, got
        else:
            lo = mid
    return hi, best[1], probes


def bench_pressure(pcap: str | None = None, loops: int = 100, pps: float = 200_000, hold: str = "random:3000",
                   allocators=tuple(POOL_ALLOCATORS), budget: int | None = None, permit: str | None = None,
                   stuck: int = 4, permit_budget: int = 8, replayer: str = "builtin", rx: str = "ring",
                   plot_dir: str | None = None, out=print) -> dict:
    require_root("nta bench pressure")
    allocators = list(dict.fromkeys(pool_allocator(a) for a in allocators))
    pcap = pcap or replay_captures()["IMIX"]
    probe = Prober(pcap, loops, pps, hold, replayer, rx, out)
    name = os.path.basename(pcap)
    out(f"\npressure: {name} x{loops} at {fmt_n(pps)} pps by {replayer}, hold {hold}, one queue"
        + (", AF_XDP" if rx == "afxdp" else ", metadata ring") + "; every probe a real run")
    doc = {"tool": "nta", "command": "bench pressure", "pcap": pcap, "loops": loops, "pps": pps, "hold": hold,
           "replayer": replayer, "rx": rx, "allocators": {}}

    # the zero-drop budget, by bisection from the pages the pool held with no budget at all
    for al in allocators:
        free = probe(al)

        def zero(b, al=al):
            got = probe(al, budget=b)
            return got["dropped"] == 0, got

        def say(b, got, al=al):
            out(f"  {al:>6}: budget {fmt_n(b):>6} pages: {fmt_n(got[1]['dropped'])} dropped of "
                f"{fmt_n(got[1]['handled'])}")

        z, _, probes = smallest(zero, max(1, free["budget_peak"]), say)
        doc["allocators"][al] = {"unlimited_peak_held": free["budget_peak"], "zero_drop_budget": z,
                                 "budget_probes": [{"budget": b, **got} for b, (_, got) in probes]}
    given = budget or doc["allocators"].get("nta", next(iter(doc["allocators"].values())))["zero_drop_budget"]
    doc["budget"] = given
    base = doc["allocators"]["nta"]["zero_drop_budget"] if "nta" in doc["allocators"] else None
    rows = []
    for al, d in doc["allocators"].items():
        at = probe(al, budget=given)
        d["at_budget"] = at
        rows.append([al, fmt_n(d["zero_drop_budget"]), f"{d['zero_drop_budget'] / base:.2f}" if base else "-",
                     fmt_n(d["unlimited_peak_held"]), fmt_n(at["dropped"]),
                     f"{100 * at['dropped'] / at['handled']:.1f}%"])
    out(f"\nthe fewest pages a pool may hold and drop nothing (zero-drop budget), and what each drops with "
        f"{fmt_n(given)} pages" + (" (the NTA's zero-drop budget)" if budget is None else ""))
    table(rows, ["allocator", "zero-drop budget", "x nta", "held, no budget", f"dropped at {given}", "of frames"])

    if permit:
        doc["permit"] = permit_part(probe, doc, allocators, permit, stuck, permit_budget, out)
    if plot_dir:
        from harness.plots import plot_pressure

        doc["plot"] = plot_pressure(doc, os.path.join(plot_dir, "pressure.png"))
        out(f"\nplot: {doc['plot']}")
    return doc


def permit_part(probe: Prober, doc: dict, allocators: list[str], permit: str, stuck: int, budget: int, out) -> dict:
    """Stuck flows fill the budget; the smallest reserve that keeps every permitted frame, per allocator."""
    out(f"\npermitted {permit!r}, {stuck} stuck flows filling the budget of {fmt_n(budget)} pages: the smallest "
        "reserve that keeps every permitted frame")
    part = {"filter": permit, "stuck": stuck, "budget": budget, "allocators": {}}
    rows = []
    for al in allocators:
        def kept_all(res, al=al):
            got = probe(al, budget=budget, permit=permit, reserve=res, stuck=stuck)
            return got["permitted"]["lost"] == 0 and got["reserve"]["balanced"], got

        def say(res, got, al=al):
            p, books = got[1]["permitted"], got[1]["reserve"]
            out(f"  {al:>6}: reserve {fmt_n(res):>5} pages: {fmt_n(p['lost'])} permitted frames lost of "
                f"{fmt_n(p['xdp'])}, reserve {'balanced' if books['balanced'] else 'NOT balanced'}")

        first = probe(al, budget=budget, permit=permit, reserve=1, stuck=stuck)
        guess = max(2, 2 * rules(first["permitted"]["peak_bytes_held"])["two_n_m"])
        r, best, probes = smallest(kept_all, guess, say)
        peak = best["permitted"]["peak_bytes_held"]
        rule = rules(peak)
        part["allocators"][al] = {"smallest_reserve": r, "permitted_peak_bytes": peak, "rules": rule,
                                  "vs_exact": r / rule["exact"] if rule["exact"] else None, "at_smallest": best,
                                  "reserve_probes": [{"reserve": v, **got} for v, (_, got) in probes]}
        rows.append([al, fmt_n(r), fmt_n(peak), fmt_n(rule["exact"]), fmt_n(rule["exact_x1_2"]),
                     fmt_n(rule["two_n_m"]), f"{r / rule['exact']:.2f}" if rule["exact"] else "-",
                     fmt_n(best["permitted"]["lost"]), "yes" if best["reserve"]["balanced"] else "NO"])
    table(rows, ["allocator", "reserve", "permitted peak bytes N", "N in pages", "1.2 N", "2N+m", "x N pages",
                 "permitted lost", "balanced"])
    out(f"  (N in pages: an exact-size rule; 2N+m: Zijlstra's kmalloc_estimate_variable, m = a slab for each of "
        f"the {SLAB_CLASSES} size classes)")
    return part

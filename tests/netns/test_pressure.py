"""Memory at the limit on real traffic: a budget per pool, drops by reason, a reserve only permitted frames
take, flow limits and flows never read; every bad value refused in one line before anything is made.

Rates are low and counts exact whatever the machine's speed: the drops do not depend on timing (one sender,
one queue: the controller sees the capture's order), so a budget run's drops are compared with the same
records put through a controller here, without XDP.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from harness.controller import META, Controller
from harness.nta import Arena, Pool
from harness.pcapfile import load
from harness.pressure import flow_hash
from harness.replay import ReplayOptions
from harness.run import RunConfig, run
from tests.conftest import assert_one_line_error, nta
from tests.netns.conftest import nta_namespaces

PPS = 50_000  # well under any replayer's ceiling: nothing here depends on it
IMIX_PERMIT = "udp port 10003"  # one of the bundled IMIX capture's 16 flows


def limited(pcap, loops=20, **kw) -> object:
    return run(RunConfig(pcap=pcap, replay=ReplayOptions(loops=loops, pps=PPS), quiet=True, controller=True,
                         replayer="builtin", **kw))


def offline_drops(pcap: str, loops: int, hold: str, budget: int, allocator: str = "nta") -> dict:
    """The same records, in the same order, through a controller and a pool of the same budget, here."""
    cap = load(pcap)
    blob = bytes(cap.blob)
    frames = [blob[o:o + n] for o, n in zip(cap.offsets.tolist(), cap.lengths.tolist(), strict=True)]
    recs = np.zeros(len(frames), dtype=META)
    recs["len"] = cap.lengths
    recs["flow_hash"] = [flow_hash(f) for f in frames]
    with Arena(max_pages=65536) as a, Pool(a, allocator=allocator, budget=budget) as p, Controller(p, hold) as c:
        for _ in range(loops):
            c.handle(recs)
        st = c.stats()
        c.flush()
    return st


def test_a_budget_drops_exactly_what_its_counts_say(imix_pcap):
    r = limited(imix_pcap, hold="random:300", budget=12)
    c, p, pr = r.consumer["controller"], r.consumer["pool"], r.pressure
    assert c["handled"] == r.xdp.packets == 24_000 and r.ring["lost"] == 0
    assert c["drop_nomem"] > 0 and c["kept"] > 0
    assert c["handled"] == c["kept"] + c["drops"] and pr["drops"]["reconciled"]
    assert p["budget_peak"] <= 12 and pr["budget"]["refused"] > 0
    assert r.reconciled  # and the pool's and the arena's checks passed at the end (Consumer.finish)
    here = offline_drops(imix_pcap, 20, "random:300", 12)
    assert (c["kept"], c["drop_nomem"]) == (here["kept"], here["drop_nomem"])


@pytest.mark.parametrize("allocator", ["nta", "slab", "ppfrag", "page"])
def test_every_allocator_honours_a_budget(imix_pcap, allocator):
    r = limited(imix_pcap, loops=5, hold="random:300", budget=20, allocator=allocator)
    c, p = r.consumer["controller"], r.consumer["pool"]
    assert p["budget_peak"] <= 20 and c["handled"] == c["kept"] + c["drops"] == 6000
    assert r.reconciled


def test_permitted_frames_are_all_kept_through_the_reserve_while_ordinary_ones_drop(imix_pcap):
    """Stuck flows fill the budget; the permitted flow takes the reserve, and nothing else does."""
    r = limited(imix_pcap, hold="random:3000", budget=100, permit=IMIX_PERMIT, reserve=40, stuck=4)
    c, pr = r.consumer["controller"], r.pressure
    permitted = 24_000 // 16
    assert pr["permitted"] == {**pr["permitted"], "xdp": permitted, "handled": permitted, "kept": permitted,
                               "dropped": 0, "lost": 0}
    assert c["drop_nomem"] > 0 and c["drop_reserve_exhausted"] == 0 and c["drop_not_permitted"] == 0
    res = pr["reserve"]
    assert res["allocs"] > 0 and res["balanced"] and res["taken"] == res["returned"] > 0
    assert res["peak"] <= 40 and res["min_free"] == 40 - res["peak"]
    assert len(pr["stuck"]["flows"]) == 4 and all(f["flow"].startswith("udp 198.18.0.") for f in pr["stuck"]["flows"])
    assert IMIX_PERMIT.split()[-1] not in " ".join(f["flow"] for f in pr["stuck"]["flows"])
    assert r.reconciled


def test_without_a_reserve_permitted_frames_drop_like_the_others(imix_pcap):
    r = limited(imix_pcap, hold="random:3000", budget=100, permit=IMIX_PERMIT, stuck=4)
    p = r.pressure["permitted"]
    assert p["xdp"] == 1500 and p["dropped"] > 0 and p["kept"] + p["dropped"] == p["handled"] == 1500
    assert "reserve" not in r.pressure and r.reconciled


def test_a_small_reserve_is_exhausted_and_says_so(imix_pcap):
    r = limited(imix_pcap, hold="random:3000", budget=60, permit=IMIX_PERMIT, reserve=1, stuck=6)
    c, res = r.consumer["controller"], r.pressure["reserve"]
    assert c["drop_reserve_exhausted"] > 0 and res["exhausted"] > 0 and res["min_free"] == 0
    assert res["balanced"] and r.reconciled


def test_a_stuck_flow_under_a_flow_limit_does_not_stop_the_others(imix_pcap):
    unlimited = limited(imix_pcap, hold="random:300", budget=80, stuck=2)
    u = unlimited.consumer["controller"]
    assert u["drop_nomem"] > u["stuck_handled"] - u["stuck_kept"]  # the stuck flows took the pool from others
    r = limited(imix_pcap, hold="random:300", budget=80, stuck=2, flow_limit=32 * 1024)
    c = r.consumer["controller"]
    assert c["drop_nomem"] == 0 and c["drop_flow_limit"] > 0
    # every drop is a stuck flow's, over its limit: every other flow's frame was kept
    assert c["handled"] - c["stuck_handled"] == c["kept"] - c["stuck_kept"] == 24_000 - 2 * 1500
    assert r.reconciled


def test_afxdp_at_the_limit_drops_unpermitted_frames_in_reserve_buffers(imix_pcap):
    r = run(RunConfig(pcap=imix_pcap, replay=ReplayOptions(loops=20, pps=PPS), quiet=True, replayer="builtin",
                      rx="afxdp", hold="random:3000", budget=1100, permit=IMIX_PERMIT, reserve=200, stuck=4,
                      arena_pages=4096))
    c, pr, x = r.consumer["controller"], r.pressure, r.consumer["xsk"]
    assert c["drop_not_permitted"] > 0 and pr["fill_ring"]["posted_reserve"] > 0 and pr["fill_ring"]["unmarked"] == 0
    assert pr["drops"]["reconciled"] and pr["reserve"]["balanced"]
    # a permitted frame lost is one the socket dropped for want of a fill buffer, counted there
    assert 0 <= pr["permitted"]["lost"] <= x["rx_dropped"] and pr["permitted"]["dropped"] == 0
    assert pr["fill_ring"]["dropped_while_starved"] <= x["rx_dropped"]
    assert r.reconciled


def test_afxdp_aligned_pages_keep_the_mark_before_the_frame(imix_pcap):
    """Aligned chunks (a page a buffer, its headroom cut off before it is posted, leaving the mark's room):
    the program's mark is found in front of every frame, so every frame is judged by it."""
    r = run(RunConfig(pcap=imix_pcap, replay=ReplayOptions(loops=2, topspeed=True), quiet=True, replayer="builtin",
                      rx="afxdp", hold="random:300", permit=IMIX_PERMIT, reserve=64, umem_chunks="aligned"))
    x, pr = r.consumer["xsk"], r.pressure
    assert x["sockets"][0]["chunks"] == "aligned" and x["heads_cut"] == x["posted"] > 0
    assert x["received"] + x["rx_dropped"] + x["rx_ring_full"] == 2 * 1200 and x["received"] > 0
    assert pr["fill_ring"]["unmarked"] == 0
    assert pr["drops"]["reconciled"] and pr["reserve"]["balanced"] and r.reconciled


def test_summary_and_json_say_it(imix_pcap, tmp_path):
    out = tmp_path / "run.json"
    proc = nta("run", "--pcap", imix_pcap, "--loops", "10", "--pps", str(PPS), "--replayer", "builtin",
               "--controller", "--hold", "random:3000", "--budget", "80", "--permit", IMIX_PERMIT, "--reserve", "40",
               "--stuck", "3", "--flow-limit", "200000", "--json", str(out), check=True)
    doc = json.loads(out.read_text())
    p = doc["pressure"]
    assert doc["config"]["budget"] == 80 and doc["config"]["permit"] == IMIX_PERMIT and len(doc["config"]["stuck"]) == 3
    assert set(p["drops"]["by_reason"]) == {"nomem", "flow_limit", "reserve_exhausted", "not_permitted"}
    assert all("dropped_nomem_pps" in row for row in doc["intervals"])
    for needle in ("dropped: no memory", "drops reconciled: handled", "reserve balanced:", "permitted ('udp port",
                   "stuck flows (never read): udp", "flow limit: 200,000 bytes", "dropped/s",
                   f"{p['drops']['by_reason']['nomem']:,}"):
        assert needle in proc.stdout, needle


def test_ebpf_shows_the_translated_filter():
    proc = nta("run", "--ebpf", "--controller", "--permit", "tcp port 3260 or tcp port 2049", check=True)
    assert "nta_permit_gen.h" in proc.stdout and "int nta_permit(const struct nta_pkt *pkt)" in proc.stdout
    assert "-DNTA_PERMIT=1" in proc.stdout and "#include \"nta_permit_gen.h\"" in proc.stdout


@pytest.mark.parametrize("args, needle", [
    (["--budget", "0"], "argument --budget: must be 1 or more"),
    (["--reserve", "70000", "--permit", "udp"], "bad --reserve 70000: larger than the arena's 65,536 pages"),
    (["--budget", "65000", "--reserve", "600", "--permit", "udp"], "bad --budget 65000 with --reserve 600"),
    (["--permit", "tcp prt 80"], "bad --permit 'tcp prt 80': can't parse filter expression: syntax error"),
    (["--flow-limit", "1000"],
     "bad --flow-limit 1000: under one frame (the capture's largest, 1,500 bytes, takes 1,504"),
    (["--reserve", "10"], "--reserve 10: only with --permit"),
    (["--stuck", "17"], "bad --stuck 17: "),
    (["--stuck", "16", "--permit", "udp port 10003"], "bad --stuck 16: "),
])
def test_bad_values_are_refused_in_one_line_before_anything_is_made(imix_pcap, args, needle):
    proc = nta("run", "--pcap", imix_pcap, "--controller", *args)
    assert_one_line_error(proc, needle, code=2)
    assert nta_namespaces() == []


def test_limits_need_the_controller(imix_pcap):
    proc = nta("run", "--pcap", imix_pcap, "--budget", "10")
    assert_one_line_error(proc, "--budget: only with --controller or --rx afxdp", code=2)
    assert nta_namespaces() == []


def test_bench_pressure_finds_the_budgets_and_the_reserve(imix_pcap, tmp_path):
    """Gross sanity: the bisection's zero-drop budget drops nothing and one page less drops some, the NTA
    needs no more than slab, and the reserve found keeps every permitted frame with its books balanced."""
    out = tmp_path / "p.json"
    nta("bench", "pressure", "--pcap", imix_pcap, "--loops", "5", "--pps", str(PPS), "--hold", "random:300",
        "--allocators", "nta,slab", "--permit", IMIX_PERMIT, "--stuck", "2", "--plot", str(tmp_path),
        "--json", str(out), check=True, timeout=1200)  # some 40 runs: 36 s here, ten times that emulated
    doc = json.loads(out.read_text())
    for al, d in doc["allocators"].items():
        probes = {p["budget"]: p["dropped"] for p in d["budget_probes"]}
        z = d["zero_drop_budget"]
        assert probes[z] == 0 and probes.get(z - 1, 1) > 0, (al, probes)
        r = doc["permit"]["allocators"][al]
        assert r["at_smallest"]["permitted"]["lost"] == 0 and r["at_smallest"]["reserve"]["balanced"]
        assert r["rules"]["exact"] <= r["rules"]["two_n_m"]
    assert doc["allocators"]["nta"]["zero_drop_budget"] <= doc["allocators"]["slab"]["zero_drop_budget"]
    assert doc["budget"] == doc["allocators"]["nta"]["zero_drop_budget"]
    assert doc["allocators"]["nta"]["at_budget"]["dropped"] == 0
    assert os.path.getsize(tmp_path / "pressure.png") > 10_000

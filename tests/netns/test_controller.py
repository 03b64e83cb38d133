"""nta run --controller: XDP metadata -> ring -> controller -> page pool, every loss point counted."""

import json
import os

import pytest

from harness.replay import ReplayOptions
from harness.run import RunConfig, run
from tests.conftest import assert_one_line_error, nta
from tests.netns.conftest import nta_namespaces


def controlled(pcap, hold="immediate", **kw):
    opts = {k: kw.pop(k) for k in ("loops", "pps", "topspeed") if k in kw}
    return run(RunConfig(pcap=pcap, replay=ReplayOptions(**opts), quiet=True, controller=True, hold=hold,
                         **kw))


def test_real_capture_all_handled_and_the_pool_balances(pcaps, pcap_manifest):
    r = controlled(os.path.join(pcaps, "tcpreplay-test.pcap"), hold="flow:8", pps=20000)
    packets = int(pcap_manifest["tcpreplay-test.pcap"]["packet_count"])
    c, p = r.consumer["controller"], r.consumer["pool"]
    assert r.replay.sent == r.xdp.packets == packets
    assert r.ring == {"submitted": packets, "lost": 0}
    assert c["handled"] == packets and c["alloc_fails"] == 0
    assert c["frees"] == packets and c["held"] == 0  # everything allocated was freed
    # nothing held outside the pool: in flight are its cache, its ring, and the current fragment
    # page the pool keeps a reference on itself
    assert p["frags"] == 0 and p["pages_in_use"] <= 1
    assert p["inflight"] == p["cache_len"] + p["ring_len"] + p["pages_in_use"]
    assert r.reconciled and r.unaccounted_meta == 0


@pytest.mark.parametrize("hold", ["immediate", "packets:500", "usec:2000", "flow:4", "random:300"])
def test_every_policy_on_imix(imix_pcap, hold):
    r = controlled(imix_pcap, hold=hold, loops=5, pps=100000)
    c = r.consumer["controller"]
    assert r.xdp.packets == c["handled"] == 6000 and r.ring["lost"] == 0
    assert c["frees"] == 6000 and r.consumer["pool"]["frags"] == 0
    if hold == "packets:500":
        assert c["peak_held"] == 500
    if hold == "flow:4":
        assert c["peak_held"] == 16 * 4  # the IMIX capture's 16 flows
    assert r.reconciled


def test_a_forced_overload_counts_the_loss_and_ends_cleanly(pcaps, tmp_path):
    """A one-page ring drained every 100 ms while 2,011 frames arrive in 40 ms."""
    out = tmp_path / "run.json"
    proc = nta("run", "--pcap", os.path.join(pcaps, "ndpi-synscan.pcap"), "--pps", "50000", "--controller",
               "--ring-pages", "1", "--drain-us", "100000", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    ring, c = doc["ring"], doc["controller"]["controller"]
    assert ring["lost"] > 0
    assert ring["submitted"] + ring["lost"] == doc["points"]["xdp"]["packets"] == 2011
    assert c["handled"] == ring["submitted"]
    assert doc["reconciled"] is True
    assert "metadata ring: lost (full)" in proc.stdout and f"{ring['lost']:,}" in proc.stdout
    assert nta_namespaces() == []


def test_bad_hold_is_refused_before_anything_is_made(imix_pcap):
    proc = nta("run", "--pcap", imix_pcap, "--controller", "--hold", "lru:4")
    assert_one_line_error(proc, "bad hold policy")
    assert nta_namespaces() == []


def test_bench_e2e_runs_all_three_and_reconciles(tmp_path):
    out = tmp_path / "e2e.json"
    proc = nta("bench", "e2e", "--loops", "20", "--json", str(out), check=True)
    doc = json.loads(out.read_text())
    bare, full = doc["results"]["bare XDP_DROP"], doc["results"]["full harness"]
    assert bare["seen"] == full["seen"] == 24000 and bare["vs_bare"] == 1.0
    assert full["handled_share"] + full["ring_lost"] / full["seen"] == pytest.approx(1.0)
    assert all(r["reconciled"] for r in doc["results"].values())
    half = next(r for k, r in doc["results"].items() if k.startswith("full, "))
    assert half["latency_us"]["samples"] > 0 and half["latency_us"]["p99"] > 0
    assert "latency p50/p99 us" in proc.stdout


def test_nta_holds_less_memory_than_pow2_for_the_same_traffic(imix_pcap):
    runs = {al: controlled(imix_pcap, hold="random:2000", loops=50, pps=200000, allocator=al)
            for al in ("nta", "pow2")}
    for r in runs.values():
        assert r.reconciled and r.consumer["controller"]["handled"] == 60000
    peak = {al: r.consumer["arena"]["peak_pages_in_use"] for al, r in runs.items()}
    assert peak["nta"] < peak["pow2"], peak  # 576 -> 1024 and 1500 -> 2048 under pow2
    held = {al: r.consumer["controller"]["peak_held"] for al, r in runs.items()}
    assert held["nta"] == held["pow2"]  # the same traffic and the same seeded lifetimes

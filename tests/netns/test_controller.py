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
    proc = nta("bench", "e2e", "--loops", "20", "--repeats", "2", "--json", str(out), check=True)
    doc = json.loads(out.read_text())
    res = doc["results"]
    assert list(res) == ["bare XDP_DROP", "full harness", "full, half the bare rate"] and doc["replayer"] == "xdp"
    assert res["bare XDP_DROP"]["vs_bare"] == 1.0 and all(r["reconciled"] for r in res.values())
    for name, r in res.items():
        assert len(r["runs"]) == 2 and all(x["seen"] == 24000 for x in r["runs"])
        if name != "bare XDP_DROP":
            for x in r["runs"]:
                assert x["handled_share"] + x["ring_lost"] / x["seen"] == pytest.approx(1.0)
                assert x["latency_us"]["samples"] == x["seen"] - x["ring_lost"] and x["latency_us"]["p99"] >= 0
    assert "latency p50/p99 us" in proc.stdout and "medians of 2 interleaved rounds" in proc.stdout


def test_nta_holds_less_memory_than_the_others_for_the_same_traffic(imix_pcap):
    runs = {al: controlled(imix_pcap, hold="random:2000", loops=50, pps=200000, allocator=al)
            for al in ("nta", "pow2", "ppfrag", "page")}
    for r in runs.values():
        assert r.reconciled and r.consumer["controller"]["handled"] == 60000
    mem = {al: r.consumer["memory"] for al, r in runs.items()}
    assert mem["pow2"]["allocator"] == "slab"  # pow2 is slab's old name
    for other in ("pow2", "ppfrag", "page"):  # 576 -> 1024 and 1500 -> 2048 under slab; holes under ppfrag
        assert mem["nta"]["peak_pages"] < mem[other]["peak_pages"], mem
        assert mem["nta"]["utilisation_at_peak"] > mem[other]["utilisation_at_peak"], mem
    held = {al: m["peak_fragments"] for al, m in mem.items()}
    assert len(set(held.values())) == 1  # the same traffic and the same seeded lifetimes
    assert mem["page"]["peak_pages"] == held["page"]  # a page a frame


@pytest.mark.parametrize("allocator", ["nta", "slab", "ppfrag", "page"])
def test_each_allocator_on_a_real_capture(pcaps, pcap_manifest, allocator, tmp_path):
    """Every frame of a capture with GRO frames of up to 5,858 bytes (combined blocks) gets a fragment
    from each allocator, all go back, the pool balances, and the memory figures are there."""
    name = "suricata-smb2-gro-frames.pcap"
    out = tmp_path / "run.json"
    proc = nta("run", "--pcap", os.path.join(pcaps, name), "--pps", "20000", "--controller", "--hold",
               "flow:8", "--allocator", allocator, "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    packets = int(pcap_manifest[name]["packet_count"])
    ctl, pool, mem = doc["controller"]["controller"], doc["controller"]["pool"], doc["controller"]["memory"]
    assert doc["points"]["xdp"]["packets"] == ctl["handled"] == ctl["frees"] == packets
    assert ctl["alloc_fails"] == 0 and ctl["held"] == 0 and doc["reconciled"] is True
    assert pool["frags"] == 0 and pool["frag_bytes"] == 0 and pool["pinned"] == 0
    assert pool["inflight"] == pool["cache_len"] + pool["ring_len"] + pool["pages_in_use"]
    # what the heaps keep for the next frame: the NTA's last page, ppfrag's current one, a slab a class
    assert pool["pages_in_use"] <= {"nta": 1, "ppfrag": 1, "slab": 8, "page": 0}[allocator]
    assert pool["slow_high_order"] > 0  # the frames over a page took combined blocks
    assert mem["allocator"] == allocator and mem["peak_pages"] >= 1 and mem["peak_fragments"] >= 1
    assert 0 < mem["utilisation_at_peak"] <= 1 and 0 < mem["utilisation_mean"] <= 1
    assert f"memory ({allocator}): peak {mem['peak_pages']:,} pages holding fragments" in proc.stdout

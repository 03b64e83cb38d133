"""The XDP live-frames replayer (--replayer xdp): BPF_PROG_RUN of bpf/nta_xdp_gen.c sends the capture's
frames out of the gen veth with no skb. Exact counts, the capture's bytes in the capture's order, rates,
several senders, its limits, and nothing left behind."""

import json
import os
import signal
import socket

import pytest

from harness import cpus, topology
from harness.builtin import BuiltinReplayer, check_live_frames
from harness.errors import NtaError
from harness.imix import write_frames
from harness.pcapfile import load
from harness.replay import ReplayOptions
from harness.run import RunConfig, run
from harness.xdp import XdpProgram
from tests.conftest import assert_one_line_error, nta
from tests.netns.conftest import live_frame_max, nta_namespaces
from tests.netns.test_cleanup import long_run, wait_attached


def xdp_run(pcap, **kw):
    fields = ("loops", "topspeed", "pps", "mbps", "multiplier", "limit", "duration")
    opts = {k: kw.pop(k) for k in fields if k in kw}
    return run(RunConfig(pcap=pcap, replay=ReplayOptions(**opts), quiet=True, replayer="xdp", **kw))


def assert_exact(r, packets, nbytes):
    """Sent = seen, bytes = the capture's, nothing failed, every counting point agrees."""
    assert r.replay.driver == "xdp"
    assert r.replay.sent == r.xdp.packets == packets and r.replay.failed == 0
    assert r.replay.runs == packets  # each live frame the kernel made carried one of ours
    assert r.xdp.bytes == r.replay.bytes == nbytes
    assert r.xmit == {"xdp_xmit": packets, "xdp_xmit_errors": 0}
    assert r.unaccounted == 0 and r.reconciled


def test_the_kernel_limit_is_probed(tmp_path):
    """The probe finds what this kernel's live frames carry: a frame of exactly that length goes out and
    arrives whole, and one a byte longer is refused before anything is made."""
    limit = live_frame_max()
    assert 2048 < limit <= 4096 - 256  # a page, less XDP's headroom and the kernel's own structures
    assert live_frame_max() == limit
    fits, over = str(tmp_path / "fits.pcap"), str(tmp_path / "over.pcap")
    write_frames(fits, [limit, 64])
    write_frames(over, [limit + 1, 64])
    r = xdp_run(fits, loops=3)
    assert_exact(r, 6, 3 * (limit + 64))
    with pytest.raises(NtaError, match=f"longer than the {limit:,} bytes an XDP live frame carries"):
        check_live_frames(load(over))


@pytest.mark.parametrize("threads", [1, 2])
def test_imix_looped_exact(imix_pcap, threads):
    cap = load(imix_pcap)
    r = xdp_run(imix_pcap, loops=500, topspeed=True, threads=threads)
    assert_exact(r, 500 * cap.frames, 500 * cap.frame_bytes)
    assert r.replay.calls >= 500 * cap.frames / 4096 / threads


@pytest.mark.parametrize("name", ["tcpreplay-test.pcap", "pcpp-pcapng-example.pcapng", "ndpi-reddit-ipv6.pcap",
                                  "tcpdump-802.1ad-qinq.pcap"])
def test_two_senders_exact(pcaps, name):
    """A sender per CPU, each with whole conversations; a jumbo capture (2,862-byte frames, MTU 2848)
    and a QinQ one among them."""
    path = os.path.join(pcaps, name)
    cap = load(path)
    r = xdp_run(path, loops=7, topspeed=True, threads=2)
    assert_exact(r, 7 * cap.frames, 7 * cap.frame_bytes)


def test_frames_arrive_whole(pcaps, tag):
    """With XDP_PASS on the dut, a packet socket there reads what the replayer sent: every frame's bytes
    are the capture's, loop after loop (a recycled live frame keeps the last one's bytes unless the
    program rewrites it whole). The order is checked at XDP itself (test_meta: record i is frame i):
    above it the stack now and then delivers frames out of the order XDP saw them in (an MPLS frame of
    this capture after the next one, seen here)."""
    cap = load(os.path.join(pcaps, "tcpreplay-test.pcap"))
    want = [bytes(cap.blob[o:o + n]) for o, n in zip(cap.offsets, cap.lengths, strict=True)] * 3
    with topology.Topology(tag, mtu=cap.mtu) as topo, XdpProgram(topo.dut_ns, topo.dut_if, "pass"):
        with topology.nsutil.inside(topo.dut_ns):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # ETH_P_ALL
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
            sock.bind((topo.dut_if, 0))
            sock.settimeout(2.0)
            opts = ReplayOptions(loops=3, pps=20_000)
            with BuiltinReplayer(topo.gen_ns, topo.gen_if, cap, opts, method="xdp",
                                 ifindex=topo.ifindex(topo.gen_ns, topo.gen_if)) as rp:
                got = []
                while len(got) < len(want):
                    data, addr = sock.recvfrom(65536)
                    if addr[2] != socket.PACKET_OUTGOING:
                        got.append(data)
                res = rp.finish()
    assert res.sent == len(want) and res.failed == 0
    assert sorted(got) == sorted(want)


def test_holds_a_packet_rate(imix_pcap, ceilings):
    """Paced by its own clock: a quarter of this machine's ceiling (at most 400,000 pps) for 2 s is
    reached within 1% (the run says whether it held)."""
    pps = min(400_000, int(ceilings("xdp")["pps"] / 4))
    r = xdp_run(imix_pcap, loops=10_000, pps=pps, duration=2)
    assert r.rate["held"] and abs(r.replay.rated_pps / pps - 1) <= 0.01, r.rate
    assert 1.9 < r.replay.seconds < 2.3 and r.replay.sent == r.xdp.packets and r.reconciled


def test_holds_a_bit_rate_and_a_limit(imix_pcap, ceilings):
    cap = load(imix_pcap)
    r = xdp_run(imix_pcap, loops=50, mbps=min(500, ceilings("xdp")["mbps"] / 4))
    assert_exact(r, 50 * cap.frames, 50 * cap.frame_bytes)
    assert r.rate["held"], r.rate
    cut = xdp_run(imix_pcap, loops=1000, topspeed=True, limit=123_457, threads=2)
    assert cut.replay.sent == cut.xdp.packets == 123_457 and cut.reconciled and cut.expected is None


def test_a_rate_it_cannot_reach_is_reported(imix_pcap, tmp_path):
    out = tmp_path / "run.json"
    proc = nta("run", "--pcap", imix_pcap, "--replayer", "xdp", "--loops", "500", "--pps", "1e9",
               "--json", str(out), check=True)
    assert "NOT held, xdp's ceiling here" in proc.stdout
    rate = json.loads(out.read_text())["rate"]
    assert rate["held"] is False and rate["asked"] == 1e9 and 0 < rate["ratio"] < 0.5


def test_capture_timing(pcaps):
    """tcpdump-handshake-nano-sll.pcap spans 127.6 ms; x4 replays it in about 32 ms."""
    path = os.path.join(pcaps, "tcpdump-handshake-nano-sll.pcap")
    span = load(path).duration
    r = xdp_run(path, multiplier=4)
    assert r.replay.sent == r.xdp.packets == 3 and r.reconciled
    assert span / 4 * 0.9 < r.replay.seconds < span / 4 + 0.2


def test_cli_summary_and_json(imix_pcap, tmp_path):
    out = tmp_path / "run.json"
    proc = nta("run", "--pcap", imix_pcap, "--loops", "10", "--replayer", "xdp", "--batch", "100",
               "--topspeed", "--json", str(out), check=True)
    assert "by xdp live frames" in proc.stdout and "replayer (xdp)" in proc.stdout
    assert ("xdp sender: 12,000 live frames run in 120 BPF_PROG_RUN calls (kernel batches of up to 64), "
            "12,000 redirected") in proc.stdout
    doc = json.loads(out.read_text())
    rp = doc["points"]["replayer"]
    assert doc["config"]["replayer"] == "xdp" and doc["config"]["batch"] == 100
    assert (rp["packets"], rp["runs"], rp["calls"], rp["kernel_batch"], rp["xdp_xmit"], rp["xdp_xmit_errors"]) == \
        (12_000, 12_000, 120, 64, 12_000, 0)
    assert doc["reconciled"] is True


def test_ebpf_shows_the_sender_program(imix_pcap):
    out = nta("run", "--ebpf", "--replayer", "xdp", "--pcap", imix_pcap, check=True).stdout
    assert "/* nta_xdp_count.c, compiled by BCC with:" in out
    assert "/* nta_xdp_gen.c, compiled by BCC with:" in out and "-DNTA_GEN_FRAMES=1200" in out
    assert "-DNTA_GEN_FRAME_MAX=1504" in out and "bpf_xdp_store_bytes" in out


# -- what it refuses, before anything is made -------------------------------------------

def test_frames_over_the_live_frame_limit_are_refused(pcaps):
    """suricata-smb2-gro-frames.pcap holds GRO frames of up to 5,858 bytes."""
    path = os.path.join(pcaps, "suricata-smb2-gro-frames.pcap")
    proc = nta("run", "--pcap", path, "--replayer", "xdp", "--topspeed")
    assert_one_line_error(proc, "suricata-smb2-gro-frames.pcap", f"longer than the {live_frame_max():,} bytes",
                          "--replayer builtin or tcpreplay")
    assert nta_namespaces() == []


def test_a_capture_over_the_maps_cap_is_refused(imix_pcap, monkeypatch):
    import harness.builtin

    monkeypatch.setattr(harness.builtin, "LIVE_FRAME_MAPS_MAX", 1 << 20)
    with pytest.raises(harness.builtin.NtaError, match="take 2 MiB in the live-frames replayer's maps, over "
                                                      "its 1 MiB"):
        check_live_frames(load(imix_pcap))


@pytest.mark.parametrize("args, needle", [
    (["--mode", "generic"], "--replayer xdp redirects frames into veth-dut"),
    (["--send", "tx-ring"], "--send: only with --replayer builtin"),
    (["--batch", "65537"], "bad --batch 65537: 1..65,536"),
    (["--threads", "64"], "bad --threads 64"),
])
def test_bad_options_are_refused(imix_pcap, args, needle):
    assert_one_line_error(nta("run", "--pcap", imix_pcap, "--replayer", "xdp", *args), needle)


# -- nothing outlives a run -------------------------------------------------------------

@pytest.mark.parametrize("extra", [[], ["--threads", "2"]])
def test_ctrl_c_mid_run_leaves_nothing(extra, tag):
    """The senders stop within a call (at most 4,096 frames); the program attached to veth-gen, the
    namespaces and the maps go (the netns fixture checks the programs and maps)."""
    proc = long_run(tag, "--replayer", "xdp", *extra)
    wait_attached(tag, proc, "xdp")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.startswith("nta: interrupted;")
    assert nta_namespaces() == []


# -- the whole harness at its rate ------------------------------------------------------

@pytest.mark.parametrize("drain_us", [None, 0])
def test_full_harness_behind_one_sender(imix_pcap, drain_us):
    """One xdp sender on the first CPU (where the dut's XDP runs too), the controller on the other: it
    sleeps 50 us on an empty ring unless told (0: it spins). Every record XDP submitted is handled, and
    every one's wait is counted."""
    kw = {} if drain_us is None else {"drain_us": drain_us}
    r = xdp_run(imix_pcap, loops=500, pps=1_000_000, controller=True, hold="flow:16", **kw)
    handled = r.consumer["controller"]["handled"]
    assert r.replay.sent == r.xdp.packets == 600_000 and r.reconciled
    assert handled == r.ring["submitted"] == r.xdp.packets - r.ring["lost"]
    assert r.consumer["latency_us"]["samples"] == handled
    own_cpu = len(cpus.usable()) > 1
    assert r.config.drain_us == (drain_us if drain_us is not None else 50 if own_cpu else 200)

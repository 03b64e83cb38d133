"""Real captures replayed over a veth pair, by tcpreplay and by the built-in replayer: XDP sees exactly
the frames `nta inspect` says a replay sends."""

import json
import os

import pytest

from harness.pcapfile import load
from harness.replay import ReplayOptions
from harness.run import RunConfig, run
from tests.conftest import assert_one_line_error, manifest, nta
from tests.netns.conftest import live_frame_max
from tests.unit.test_pcapfile import MALFORMED


def replay(pcap, **kw):
    fields = ("loops", "topspeed", "pps", "mbps", "multiplier", "limit", "duration")
    opts = {k: kw.pop(k) for k in fields if k in kw}
    return run(RunConfig(pcap=pcap, replay=ReplayOptions(**opts), quiet=True, **kw))


def assert_exact(result, packets, nbytes):
    assert result.replay.sent == packets
    assert result.replay.failed == 0
    assert result.xdp.packets == packets
    assert result.xdp.bytes == nbytes
    assert result.veth_dropped == 0
    assert result.unaccounted == 0 and result.reconciled


@pytest.mark.parametrize("mode", ["native", "generic"])
def test_tcpreplay_capture_exact_in_both_modes(pcaps, pcap_manifest, mode):
    path = os.path.join(pcaps, "tcpreplay-test.pcap")
    expected = int(pcap_manifest["tcpreplay-test.pcap"]["packet_count"])
    r = replay(path, topspeed=True, mode=mode)
    assert r.xdp_mode == mode  # as the kernel reports it, not as asked
    assert_exact(r, expected, load(path).frame_bytes)
    assert r.expected == 179


def test_imix_with_loops_exact(imix_pcap):
    info = load(imix_pcap)
    r = replay(imix_pcap, loops=20, pps=100_000)
    assert_exact(r, 20 * info.frames, 20 * info.frame_bytes)
    assert r.expected == 24_000
    assert r.xdp.pps > 0 and r.replay.rated_pps > 0


@pytest.mark.parametrize("name", ["ndpi-synscan.pcap", "suricata-datasets06-vlan.pcap",
                                  "tcpdump-802.1ad-qinq.pcap", "zeek-truncated-header-snaplen68.pcap"])
def test_more_real_captures_exact(pcaps, pcap_manifest, name):
    """Minimum-size frames, 802.1Q, QinQ, truncated records: every one reaches XDP."""
    path = os.path.join(pcaps, name)
    r = replay(path, topspeed=True)
    assert_exact(r, int(pcap_manifest[name]["packet_count"]), load(path).frame_bytes)


def test_pass_action_counts_exactly(pcaps):
    path = os.path.join(pcaps, "tcpreplay-test.pcap")
    r = replay(path, topspeed=True, action="pass")
    assert_exact(r, 179, load(path).frame_bytes)


@pytest.mark.parametrize("mode", ["native", "generic"])
def test_jumbo_frames_raise_the_mtu(pcaps, mode):
    """GRO frames up to 5858 bytes: the veth gets MTU 5844, and native XDP takes them as multi-buffer
    frames (the program is loaded with BPF_F_XDP_HAS_FRAGS)."""
    path = os.path.join(pcaps, "suricata-smb2-gro-frames.pcap")
    r = replay(path, topspeed=True, mode=mode)
    assert r.capture.mtu == 5844 and r.xdp_mode == mode
    assert_exact(r, 792, load(path).frame_bytes)


def test_frames_over_a_given_mtu_are_skipped_and_counted(pcaps):
    path = os.path.join(pcaps, "suricata-smb2-gro-frames.pcap")
    r = replay(path, topspeed=True, mtu=1500, replayer="builtin")
    assert r.capture.skipped == {"larger than MTU 1500 carries": 117}
    assert_exact(r, 675, load(path, mtu=1500).frame_bytes)
    assert r.expected == 675


def test_jumbo_mtu_up_to_the_veth_maximum_in_native_mode(imix_pcap):
    r = replay(imix_pcap, pps=50_000, mtu=65535, replayer="builtin")
    assert r.capture.mtu == 65535 and r.xdp_mode == "native"
    assert_exact(r, 1200, load(imix_pcap).frame_bytes)


def test_cli_run_prints_and_writes_the_same_figures(pcaps, tmp_path):
    out = tmp_path / "run.json"
    proc = nta("run", "--pcap", os.path.join(pcaps, "tcpreplay-test.pcap"), "--pps", "2000",
               "--interval", "0.02", "--json", str(out), check=True)
    text = proc.stdout
    assert "XDP native" in text and "rx/s" in text
    assert "reconciled: sent 179 = XDP seen 179 + veth drops 0; expected 179 = 179 frames x 1 loops" in text
    doc = json.loads(out.read_text())
    assert doc["points"]["replayer"]["packets"] == doc["points"]["xdp"]["packets"] == 179
    assert doc["points"]["veth_sender_drops"]["packets"] == 0
    assert doc["xdp"]["mode"] == "native" and doc["reconciled"] is True
    assert doc["capture"]["packets"] == 179 and doc["expected_packets"] == 179
    # 179 packets at 2000 pps take ~90 ms: several 20 ms interval lines, and they add up.
    assert len(doc["intervals"]) >= 2
    assert doc["intervals"][-1]["rx_total"] <= 179
    for row in doc["intervals"]:
        assert f"{row['t']:8.3f}s" in text


def test_packet_limit(imix_pcap):
    cut = run(RunConfig(pcap=imix_pcap, replay=ReplayOptions(loops=1000, pps=20_000, limit=3000), quiet=True))
    assert cut.expected is None
    assert cut.replay.sent == cut.xdp.packets == 3000 and cut.reconciled


def test_progress_on_a_terminal(imix_pcap):
    """On a terminal each interval line says how far the run is; in a pipe it does not."""
    import pty
    import subprocess
    import sys

    from tests.conftest import ROOT

    args = [sys.executable, "-m", "harness", "run", "--pcap", imix_pcap, "--loops", "30", "--pps", "50000",
            "--interval", "0.2"]
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, cwd=ROOT, stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the other side closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 0
    text = b"".join(chunks).decode()
    assert "%]" in text and "reconciled" in text
    piped = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "%]" not in piped.stdout and "reconciled" in piped.stdout


# -- every capture in ../shared/pcaps, by both replayers --------------------------------

def _inspect(path: str) -> dict:
    return json.loads(nta("inspect", path, "--json", "-", check=True).stdout)["captures"][0]


@pytest.mark.parametrize("driver", ["tcpreplay", "builtin", "builtin:tx-ring", "xdp"])
@pytest.mark.parametrize("name", sorted(manifest()))
def test_every_shared_capture(pcaps, name, driver, tmp_path):
    """What XDP saw = what 'nta inspect' said a replay sends (after skips), by every replayer; a malformed
    capture fails with one line and exit status 2; an empty one replays nothing; one with frames longer
    than an XDP live frame carries is refused by the xdp replayer in one line. The netns fixture checks
    that nothing is left behind."""
    path = os.path.join(pcaps, name)
    out = tmp_path / "run.json"
    driver, _, send = driver.partition(":")
    extra = ["--send", send] if send else []
    proc = nta("run", "--pcap", path, "--replayer", driver, *extra, "--topspeed", "--json", str(out))
    if name in MALFORMED:
        assert_one_line_error(proc, MALFORMED[name][0], code=2)
        assert not out.exists()
        return
    plan = _inspect(path)
    if driver == "xdp" and plan["max_frame"] > live_frame_max():
        assert_one_line_error(proc, f"longer than the {live_frame_max():,} bytes an XDP live frame carries")
        assert not out.exists()
        return
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    if plan["packets"] == 0:
        assert "nothing to replay" in proc.stdout and doc["expected_packets"] == 0
        return
    pts = doc["points"]
    assert doc["expected_packets"] == plan["frames"] > 0
    assert pts["replayer"]["driver"] == driver
    assert pts["replayer"]["packets"] == pts["xdp"]["packets"] == plan["frames"]
    assert pts["xdp"]["bytes"] == plan["frame_bytes"]
    assert pts["veth_sender_drops"]["packets"] == 0 and doc["reconciled"] is True
    assert doc["capture"]["skipped"] == plan["skipped"] and doc["config"]["mtu"] == plan["mtu"]


# -- the built-in replayer ------------------------------------------------------------

@pytest.mark.parametrize("send", ["sendmmsg", "tx-ring"])
@pytest.mark.parametrize("napi", ["softirq", "threaded"])
def test_builtin_exact_at_top_speed(imix_pcap, send, napi):
    """With threaded NAPI the veth ring fills and veth drops frames; the replayer is told (ENOBUFS),
    sends them again, and every drop is one it counted."""
    r = replay(imix_pcap, loops=300, topspeed=True, replayer="builtin", send=send, napi=napi)
    assert_sent_seen(r, 300 * 1200, 300 * load(imix_pcap).frame_bytes)
    assert r.veth_dropped == r.replay.retried_enobufs and r.veth_lost == 0
    assert r.replay.driver == "builtin"


def assert_sent_seen(result, packets, nbytes):
    assert result.replay.sent == result.xdp.packets == packets and result.replay.failed == 0
    assert result.xdp.bytes == result.replay.bytes == nbytes
    assert result.unaccounted == 0 and result.reconciled


@pytest.mark.parametrize("send", ["sendmmsg", "tx-ring"])
def test_builtin_holds_a_packet_rate(imix_pcap, send):
    """Gross sanity only (shared machines): 20,000 pps for 6,000 frames takes about 0.3 s."""
    r = replay(imix_pcap, loops=5, pps=20_000, replayer="builtin", send=send)
    assert_sent_seen(r, 6000, 5 * load(imix_pcap).frame_bytes)
    assert 0.2 < r.replay.seconds < 1.0 and 10_000 < r.replay.rated_pps < 25_000


def test_builtin_holds_a_bit_rate(imix_pcap):
    """IMIX averages 354.3 bytes a frame: 100 Mbit/s carries 6,000 frames in 0.17 s."""
    frame_bytes = load(imix_pcap).frame_bytes
    r = replay(imix_pcap, loops=5, mbps=100, replayer="builtin")
    assert_sent_seen(r, 6000, 5 * frame_bytes)
    assert 0.12 < r.replay.seconds < 0.6 and 60 < r.replay.rated_mbps < 110


def test_builtin_capture_timing_and_multiplier(pcaps):
    """tcpdump-handshake-nano-sll.pcap spans 127.6 ms; x4 replays it in about 32 ms."""
    path = os.path.join(pcaps, "tcpdump-handshake-nano-sll.pcap")
    span = load(path).duration
    assert abs(span - 0.12761) < 1e-4
    r = replay(path, multiplier=4, replayer="builtin")
    assert r.replay.sent == r.xdp.packets == 3 and r.reconciled
    assert span / 4 * 0.9 < r.replay.seconds < span / 4 + 0.2
    assert r.xdp.seconds >= span / 4 * 0.9  # the gaps are kept at the XDP hook too


def test_builtin_limit_and_duration(imix_pcap):
    cut = replay(imix_pcap, loops=1000, pps=50_000, limit=2500, replayer="builtin")
    assert cut.replay.sent == cut.xdp.packets == 2500 and cut.reconciled and cut.expected is None
    timed = run(RunConfig(pcap=imix_pcap, replay=ReplayOptions(loops=1000, pps=20_000, duration=1),
                          replayer="builtin", quiet=True))
    assert 0.9 < timed.replay.seconds < 1.3 and timed.replay.sent == timed.xdp.packets and timed.reconciled


def test_builtin_cli_summary(imix_pcap, tmp_path):
    out = tmp_path / "run.json"
    proc = nta("run", "--pcap", imix_pcap, "--loops", "10", "--replayer", "builtin", "--send", "tx-ring",
               "--batch", "16", "--napi", "threaded", "--json", str(out), "--topspeed", check=True)
    assert "by builtin (tx-ring)" in proc.stdout and "threaded NAPI" in proc.stdout
    assert "replayer (builtin)" in proc.stdout and "reconciled: sent 12,000 = XDP seen 12,000" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["config"]["replayer"] == "builtin" and doc["config"]["send"] == "tx-ring"
    assert doc["config"]["napi"] == "threaded"
    assert doc["points"]["replayer"]["packets"] == 12_000 and doc["reconciled"] is True


def test_threaded_napi_needs_native_mode(imix_pcap):
    proc = nta("run", "--pcap", imix_pcap, "--napi", "threaded", "--mode", "generic")
    assert_one_line_error(proc, "threaded NAPI on veth-dut", "use --mode native", code=1)


@pytest.mark.parametrize("name", ["tcpreplay-test.pcap", "suricata-smb2-gro-frames.pcap",
                                  "pcpp-pcapng-example.pcapng"])
def test_builtin_threads_exact(pcaps, name):
    """A sender per CPU, each with whole conversations, each on its own veth queue: still exact."""
    path = os.path.join(pcaps, name)
    plan = load(path)
    r = replay(path, loops=20, topspeed=True, replayer="builtin", threads=2)
    assert_sent_seen(r, 20 * plan.frames, 20 * plan.frame_bytes)
    assert r.veth_lost == 0


def test_builtin_threads_share_a_rate_and_a_limit(imix_pcap):
    r = replay(imix_pcap, loops=20, pps=40_000, limit=9_999, replayer="builtin", threads=2)
    assert r.replay.sent == r.xdp.packets == 9_999 and r.reconciled
    assert 0.2 < r.replay.seconds < 0.5  # 9,999 frames at 40,000 pps in all: 0.25 s


def test_threads_are_checked_before_anything_is_made(imix_pcap):
    assert_one_line_error(nta("run", "--pcap", imix_pcap, "--threads", "2"),
                          "--threads: only with --replayer builtin or xdp")
    assert_one_line_error(nta("run", "--pcap", imix_pcap, "--send", "tx-ring", "--batch", "8"),
                          "--send, --batch: only with --replayer builtin or xdp")
    assert_one_line_error(nta("run", "--pcap", imix_pcap, "--replayer", "builtin", "--threads", "64"),
                          "bad --threads 64")
    assert_one_line_error(nta("run", "--pcap", imix_pcap, "--replayer", "builtin", "--batch", "4096"),
                          "bad --batch 4096: 1..1,024")


@pytest.mark.parametrize("driver", ["tcpreplay", "builtin"])
def test_a_captured_fcs_does_not_reach_xdp(tmp_path, driver):
    """Frames captured with their FCS (pcap's FCS bits) go out without it, by either replayer."""
    import struct

    frame = bytes.fromhex("020000000002020000000001") + b"\x88\xb5" + bytes(range(50))  # 64 bytes
    hdr = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1 | 0x04000000 | (2 << 28))
    rec = struct.pack("<IIII", 1, 0, 68, 68) + frame + b"\xde\xad\xbe\xef"
    path = tmp_path / "fcs.pcap"
    path.write_bytes(hdr + rec * 10)
    r = replay(str(path), topspeed=True, replayer=driver)
    assert_sent_seen(r, 10, 640)
    assert r.capture.fcs_stripped == 10


@pytest.mark.parametrize("driver", ["tcpreplay", "builtin"])
def test_a_capture_cut_short_replays_its_complete_records(pcaps, tmp_path, driver):
    """Its writer was interrupted: XDP sees exactly the complete records, one warning line, exit 0."""
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(open(os.path.join(pcaps, "tcpreplay-test.pcap"), "rb").read()[:5000])
    out = tmp_path / "run.json"
    proc = nta("run", "--pcap", str(cut), "--replayer", driver, "--topspeed", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "is cut short: record 22 at byte 3788" in lines[0]
    doc = json.loads(out.read_text())
    plan = load(str(cut))
    assert plan.packets == 21
    assert doc["points"]["xdp"]["packets"] == doc["expected_packets"] == 21
    assert doc["points"]["xdp"]["bytes"] == plan.frame_bytes and doc["reconciled"] is True
    assert doc["capture"]["cut_short"]["bytes_ignored"] == 1212

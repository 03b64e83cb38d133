"""Replay users can trust: timing measured where the frames land, and fresh flows on every loop.

Timing: a capture with known gaps, replayed at its own timing by every replayer, is timed at the XDP hook
(and by the controller, from its records) against exactly the schedule it calls for; how close it keeps
to it depends on the machine, so only gross bounds are checked here ('nta bench replay' measures it).

--unique-flows: three loops give three times the capture's flows at the dut, counted by the XDP program,
and every frame that arrives there (caught by a packet socket in the dut's namespace) has valid IPv4,
TCP and UDP checksums, as scapy computes them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import PcapWriter

from harness import nsutil
from harness.builtin import BuiltinReplayer
from harness.pcapfile import load
from harness.replay import Replayer, ReplayOptions
from harness.run import RunConfig, run
from harness.topology import Topology
from harness.xdp import XdpProgram

GAPS_US = [500, 1500, 3000, 250, 2000]  # the known gaps, repeated


@pytest.fixture(scope="module")
def gapped(tmp_path_factory) -> tuple[str, int]:
    """60 UDP frames whose timestamps are GAPS_US apart, in turn (85 ms); and their span in ns."""
    path = str(tmp_path_factory.mktemp("gaps") / "gaps.pcap")
    w = PcapWriter(path, linktype=1, sync=True)
    t = 1_700_000_000.0
    for i in range(60):
        pkt = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="10.1.0.1", dst="10.2.0.1") / \
            UDP(sport=4000 + i % 3, dport=5000) / bytes(100)
        pkt.time = t
        w.write(pkt)
        t += GAPS_US[i % len(GAPS_US)] / 1e6
    w.close()
    return path, int(load(path).rel_ns[-1])  # the span as written (microsecond timestamps)


@pytest.mark.parametrize("replayer", ["tcpreplay", "builtin", "xdp"])
def test_a_capture_with_known_gaps_is_timed_at_its_own_timing(gapped, replayer):
    path, span = gapped
    r = run(RunConfig(pcap=path, replay=ReplayOptions(loops=2), quiet=True, replayer=replayer))
    t = r.timing
    assert t["where"] == "the XDP hook" and t["schedule"] == "the capture's timing x1"
    assert t["gaps"] == 2 * 60 - 1 == sum(t["histogram"]["gaps"])
    # exactly the schedule the capture calls for: its span twice, the loops back to back
    assert t["queues"][0]["scheduled_ns"] == pytest.approx(2 * span, abs=2 * 60)
    assert 0 <= t["p50_us"] <= t["p99_us"] <= t["max_us"] + 0.001
    # gross: a loaded machine is late, not lost, and never early. The built-in and xdp senders keep to an
    # absolute schedule; tcpreplay times each gap from its last frame, so its lateness adds up (10.1% at
    # the end under emulation on Debian's 6.1): late by up to the whole span still says it kept the gaps.
    late_max = 100 if replayer == "tcpreplay" else 10
    assert t["p50_us"] < 1000 and -10 < t["drift_pct"] < late_max
    assert r.reconciled


def test_the_controller_times_its_records_and_a_rate_is_a_schedule(gapped, imix_pcap):
    path, span = gapped
    r = run(RunConfig(pcap=path, replay=ReplayOptions(multiplier=2), quiet=True, replayer="builtin",
                      controller=True))
    assert r.timing["where"].startswith("the controller") and r.timing["gaps"] == 59
    assert r.timing["queues"][0]["scheduled_ns"] == pytest.approx(span / 2, abs=60)
    paced = run(RunConfig(pcap=imix_pcap, replay=ReplayOptions(loops=2, pps=20_000), quiet=True, replayer="xdp"))
    assert paced.timing["queues"][0]["scheduled_ns"] == pytest.approx((2 * 1200 - 1) * 50_000, abs=2400)
    assert paced.timing["schedule"] == "--pps 20,000"
    top = run(RunConfig(pcap=imix_pcap, replay=ReplayOptions(loops=2, topspeed=True), quiet=True, replayer="xdp"))
    assert top.timing is None  # at top speed there is no schedule to keep


def test_the_xdp_sender_times_each_frame_not_each_call(imix_pcap):
    """Paced, the xdp sender's runs wait in the kernel for their frames' times (bpf/nta_xdp_gen.c,
    NTA_GEN_PACE), in calls of up to 256 runs: frames 20 us apart are not sent in bursts a call at a time
    (which would put the typical gap error near the gap itself)."""
    r = run(RunConfig(pcap=imix_pcap, replay=ReplayOptions(loops=4, pps=50_000), quiet=True, replayer="xdp"))
    assert r.replay.runs == r.replay.sent == 4 * 1200 and r.reconciled
    assert r.replay.calls <= 4 * 1200 // 16  # a call per frame would be 4,800
    assert r.replay.kernel_batch == 1  # 20 us apart: each frame flushed to the device on its own
    assert r.timing["p50_us"] < 10  # gross: half the gap


def test_a_paced_xdp_sender_that_falls_behind_batches_its_frames(imix_pcap):
    """At 4 Mpps (250 ns apart) a flush a frame could not keep up here (3.0 Mpps at most): a sender that falls
    further behind at each call widens its kernel batches (harness/csrc/replay.c: nta_replay_pace_step),
    up to 64, until it keeps up or has no wider to go. Every frame is still sent and seen; at top speed,
    64 a batch."""
    r = run(RunConfig(pcap=imix_pcap, replay=ReplayOptions(loops=20, pps=4_000_000), quiet=True, replayer="xdp"))
    assert r.replay.runs == r.replay.sent == 20 * 1200 and r.reconciled
    b = r.replay.kernel_batch
    assert b in (1, 2, 4, 8, 16, 32, 64)
    assert r.rate["held"] or b > 1  # not held: it fell behind, and widened its batches
    top = run(RunConfig(pcap=imix_pcap, replay=ReplayOptions(loops=20, topspeed=True), quiet=True, replayer="xdp"))
    assert top.replay.kernel_batch == 64 and top.reconciled


@contextlib.contextmanager
def dut_socket(t):
    """A packet socket in the dut's namespace, on its veth: what XDP passes to the stack, frame by frame."""
    with nsutil.inside(t.dut_ns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        s.bind((t.dut_if, 0))
    s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE: every frame of the test waits here
    s.setblocking(False)
    try:
        yield s
    finally:
        s.close()


def drain(s, want: int, timeout: float = 10.0) -> list[bytes]:
    got, deadline = [], time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        try:
            got.append(s.recv(65535))
        except BlockingIOError:
            time.sleep(0.01)
    return got


def checksums_valid(frame: bytes) -> bool:
    """IPv4's header checksum and TCP's or UDP's, as scapy computes them from the frame's bytes."""
    p = Ether(frame)
    if IP not in p:
        return True
    fresh = p.copy()
    del fresh[IP].chksum
    for layer in (TCP, UDP):
        if layer in fresh:
            del fresh[layer].chksum
    fresh = Ether(bytes(fresh))
    same = p[IP].chksum == fresh[IP].chksum
    for layer in (TCP, UDP):
        if layer in p:
            same = same and p[layer].chksum == fresh[layer].chksum
    return same


@pytest.mark.parametrize("replayer", ["tcpreplay", "builtin", "builtin:tx-ring", "xdp"])
def test_unique_flows_give_new_flows_every_loop_with_valid_checksums(imix_pcap, tag, replayer):
    cap = load(imix_pcap)
    opts = ReplayOptions(loops=3, pps=20_000, unique_flows=True)
    with Topology(tag) as t, XdpProgram(t.dut_ns, t.dut_if, "pass", defines={"NTA_FLOWS": 4096}) as prog, \
            dut_socket(t) as s:
        driver, _, send = replayer.partition(":")
        if driver == "tcpreplay":
            rp = Replayer(t.gen_ns, t.gen_if, imix_pcap, opts)
        else:
            rp = BuiltinReplayer(t.gen_ns, t.gen_if, cap, opts, method="xdp" if driver == "xdp" else send or "sendmmsg",
                                 ifindex=t.ifindex(t.gen_ns, t.gen_if) if driver == "xdp" else None)
        with rp:
            result = rp.finish()
        frames = drain(s, 3 * cap.frames)
        assert result.sent == prog.stats().packets == len(frames) == 3 * cap.frames
        assert prog.flows() == {"flows": 3 * 16, "overflow": 0}  # the IMIX capture's 16 flows, three times over
        pairs = {(Ether(f)[IP].src, Ether(f)[IP].dst) for f in frames}
        assert len(pairs) == 48
        bad = [i for i, f in enumerate(frames) if not checksums_valid(f)]
        assert not bad, f"{len(bad)} frames with a bad checksum, the first {frames[bad[0]][:60].hex()}"


def test_what_is_not_ip_goes_out_unchanged_and_is_counted(pcaps):
    """tcpreplay-test.pcap has MPLS and ARP frames: the built-in replayers send them as they are in every
    loop and count them; tcpreplay's own --unique-ip does not send what it cannot edit after the first loop
    (it counts them as 'Failed write attempts'): both reconcile."""
    path = os.path.join(pcaps, "tcpreplay-test.pcap")
    cap = load(path)
    from harness.builtin import ip_headers

    not_ip = int((ip_headers(cap)[1] == 0).sum())
    assert not_ip > 0
    for replayer in ("builtin", "xdp"):
        r = run(RunConfig(pcap=path, replay=ReplayOptions(loops=3, pps=20_000, unique_flows=True), quiet=True,
                          replayer=replayer))
        assert r.replay.unchanged == 2 * not_ip and r.xdp.packets == 3 * cap.frames and r.reconciled
    # tcpreplay edits MPLS-labelled IP too (ours send it as it is): it skips only the 3 ARP frames a loop
    r = run(RunConfig(pcap=path, replay=ReplayOptions(loops=3, pps=20_000, unique_flows=True), quiet=True))
    assert r.replay.failed == 2 * 3 and r.xdp.packets + r.replay.failed == 3 * cap.frames and r.reconciled

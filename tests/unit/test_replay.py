"""tcpreplay's own figures, parsed from its real output; its command line."""

import os

import pytest

from harness.errors import NtaError
from harness.replay import ReplayOptions, _last_line, command, parse_tcpreplay

DATA = os.path.join(os.path.dirname(__file__), "data")


def read(name):
    with open(os.path.join(DATA, name)) as f:
        return f.read()


def test_parse_real_output():
    r = parse_tcpreplay(read("tcpreplay-4.4.3-loop3.txt"))
    assert (r.packets, r.bytes, r.seconds) == (537, 207000, 0.000831)
    assert (r.rated_bps, r.rated_mbps, r.rated_pps) == (249097472.9, 1992.77, 646209.38)
    assert (r.successful, r.failed, r.truncated, r.retried_enobufs, r.retried_eagain) == (537, 0, 0, 0, 0)
    assert r.sent == 537 == 179 * 3


def test_unique_ip_skips_are_counted_failed():
    """tcpreplay 4.4.3 --loop=3 --unique-ip on tcpreplay-test.pcap (its real output): the 3 ARP frames of
    loops 2 and 3 it cannot edit are not sent, and said apart from the device's figures."""
    r = parse_tcpreplay(read("tcpreplay-4.4.3-unique-ip.txt"))
    assert (r.sent, r.failed, r.unchanged) == (531, 6, 0) and r.sent + r.failed == 179 * 3


def test_successful_count_wins_over_actual():
    text = read("tcpreplay-4.4.3-loop3.txt").replace("Successful packets:        537",
                                                     "Successful packets:        530")
    assert parse_tcpreplay(text).sent == 530


def test_error_output_gives_its_reason():
    text = read("tcpreplay-4.4.3-nodev.txt")
    assert _last_line(text) == "Invalid interface name/alias: nope"
    with pytest.raises(NtaError, match="no 'Actual:'/'Rated:' statistics: Invalid interface"):
        parse_tcpreplay(text)


def test_command_line(monkeypatch):
    monkeypatch.setattr("harness.replay.tcpreplay_path", lambda: "tcpreplay")
    assert command("veth-gen", "x.pcap", ReplayOptions()) == [
        "tcpreplay", "--intf1=veth-gen", "--no-flow-stats", "x.pcap"]
    cmd = command("veth-gen", "x.pcap", ReplayOptions(loops=5, pps=1000, duration=3, limit=7))
    assert cmd[1:] == ["--intf1=veth-gen", "--no-flow-stats", "--preload-pcap", "--loop=5", "--pps=1000",
                       "--duration=3", "--limit=7", "x.pcap"]
    assert "--topspeed" in command("v", "x", ReplayOptions(topspeed=True))
    assert "--mbps=2.5" in command("v", "x", ReplayOptions(mbps=2.5))
    assert "--multiplier=0.5" in command("v", "x", ReplayOptions(multiplier=0.5))
    assert "--preload-pcap" not in command("v", "x", ReplayOptions(loops=3, preload=False))


@pytest.mark.parametrize("opts, needle", [
    (ReplayOptions(loops=0), "bad --loops 0"),
    (ReplayOptions(topspeed=True, pps=10), "choose one replay rate"),
    (ReplayOptions(pps=-1), "bad --pps -1"),
    (ReplayOptions(limit=-3), "bad --limit -3"),
    (ReplayOptions(duration=0), "bad --duration 0"),
])
def test_bad_options(opts, needle):
    with pytest.raises(NtaError, match=needle):
        opts.validate()


def test_rate_text():
    assert ReplayOptions().rate_text() == "capture timing"
    assert ReplayOptions(topspeed=True).rate_text() == "topspeed"
    assert ReplayOptions(pps=100000).rate_text() == "100000 pps"


def test_flow_split_keeps_conversations_whole_and_in_order(pcaps):
    import collections

    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    from harness.builtin import _shares, flow_split
    from harness.pcapfile import load

    cap = load(os.path.join(pcaps, "tcpreplay-test.pcap"))
    parts = flow_split(cap, 2)
    assert sorted(int(i) for p in parts for i in p) == list(range(cap.frames))
    assert all(p.tolist() == sorted(p.tolist()) for p in parts)  # capture order within a sender
    assert all(len(p) for p in parts)  # 179 frames of many conversations: both senders get some
    owner = {int(i): k for k, p in enumerate(parts) for i in p}
    convs = collections.defaultdict(set)
    for i in range(cap.frames):
        off, n = int(cap.offsets[i]), int(cap.lengths[i])
        pkt = Ether(cap.blob[off:off + n])
        if IP in pkt and TCP in pkt:
            key = frozenset([(pkt[IP].src, pkt[TCP].sport), (pkt[IP].dst, pkt[TCP].dport)])
            convs[key].add(owner[i])
    assert len(convs) > 3 and all(len(senders) == 1 for senders in convs.values())
    assert _shares(10, [3, 7]) == [3, 7] and _shares(5, [1, 1, 1]) in ([2, 2, 1], [2, 1, 2], [1, 2, 2])
    assert sum(_shares(9_999, [700, 500])) == 9_999 and _shares(0, [4, 5]) == [0, 0]

"""The bundled IMIX capture: deterministic, exact in its mix, readable by the reader."""

import collections
import hashlib

from scapy.layers.inet import IP, UDP
from scapy.utils import rdpcap

from harness.imix import frame_sizes, write_imix
from harness.pcapfile import load


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_two_writes_are_byte_identical(tmp_path):
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    assert write_imix(str(a), cycles=10) == write_imix(str(b), cycles=10) == 120
    assert sha(a) == sha(b)


def test_mix_is_exactly_7_4_1(tmp_path):
    path = tmp_path / "imix.pcap"
    write_imix(str(path), cycles=25)
    info = load(str(path))
    sizes = info.lengths.tolist()
    assert info.packets == info.frames == 300 and info.linktypes == {1: 300} and info.mtu == 1500
    assert collections.Counter(sizes) == {64: 175, 576: 100, 1500: 25}
    assert sizes == frame_sizes(25)
    assert len(set(sizes[:12])) > 1  # shuffled, not sorted by size
    assert info.as_is and not info.skipped


def test_frames_are_udp_in_the_benchmark_range(tmp_path):
    path = tmp_path / "imix.pcap"
    write_imix(str(path), cycles=2)
    pkts = rdpcap(str(path))
    assert len(pkts) == 24
    for p in pkts:
        assert p[IP].src.startswith("198.18.") and p[IP].dst.startswith("198.19.")
        assert p[UDP].dport == 9
        assert p[IP].len == len(p) - 14
    assert [float(p.time) for p in pkts] == sorted(float(p.time) for p in pkts)


def test_default_is_1200_packets(imix_pcap):
    assert load(imix_pcap, keep_frames=False).packets == 1200

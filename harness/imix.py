"""The bundled default capture: a simple IMIX of UDP frames, made with scapy.

Frames of 64, 576 and 1500 bytes (Ethernet header included, FCS excluded) in
the classic 7:4:1 ratio, in an order shuffled by a fixed seed, over 16 UDP
flows in the RFC 2544 benchmarking range (198.18.0.0/15) between locally
administered MACs. Timestamps are fixed (1 us apart from 2026-01-01), so two
runs write byte-identical files.
"""

from __future__ import annotations

import os
import random
import tempfile

IMIX = ((64, 7), (576, 4), (1500, 1))
SEED = 20061114  # the day NTA was posted to netdev
EPOCH = 1767225600  # 2026-01-01T00:00:00Z
FLOWS = 16
SRC_MAC, DST_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
ETH_IP_UDP = 14 + 20 + 8


def frame_sizes(cycles: int) -> list[int]:
    """``cycles`` rounds of 7x64, 4x576, 1x1500, shuffled with a fixed seed."""
    sizes = [size for size, n in IMIX for _ in range(n)] * cycles
    random.Random(SEED).shuffle(sizes)
    return sizes


def write_imix(path: str, cycles: int = 100) -> int:
    """Write the IMIX capture to ``path`` atomically; return its packet count."""
    return write_frames(path, frame_sizes(cycles))


def write_timed(path: str, mean_gap_us: float = 20.0, cycles: int = 100) -> int:
    """The IMIX capture with gaps a replay at its own timing can keep: Poisson arrivals (exponential gaps,
    mean ``mean_gap_us``, seeded: byte-identical every time), 50,000 frames a second by default."""
    rng = random.Random(SEED + 1)
    sizes = frame_sizes(cycles)
    times, t = [], 0.0
    for _ in sizes:
        times.append(t)
        t += rng.expovariate(1.0 / mean_gap_us)
    return write_frames(path, sizes, times)


def write_frames(path: str, sizes: list[int], times_us: list[float] | None = None) -> int:
    """Write UDP frames of the given sizes (16 flows, as above) to ``path`` atomically; their timestamps
    ``times_us`` after EPOCH (default: 1 us apart)."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import PcapWriter

    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".imix-", suffix=".pcap")
    os.close(fd)
    try:
        w = PcapWriter(tmp, linktype=1, sync=False)
        for i, size in enumerate(sizes):
            flow = i % FLOWS
            payload = bytes((i + k) & 0xFF for k in range(size - ETH_IP_UDP))
            pkt = (Ether(src=SRC_MAC, dst=DST_MAC)
                   / IP(src=f"198.18.0.{1 + flow}", dst="198.19.0.1", id=i & 0xFFFF, ttl=64)
                   / UDP(sport=10000 + flow, dport=9)
                   / payload)
            pkt.time = EPOCH + (times_us[i] if times_us is not None else i) * 1e-6
            assert len(pkt) == size, (len(pkt), size)
            w.write(pkt)
        w.close()
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return len(sizes)

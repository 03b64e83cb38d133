"""The metadata path: XDP parses each frame into a record, the C drain hands them to numpy.

Every record is compared with scapy's own reading of the same capture, frame
by frame, and the counts reconcile: seen = submitted + lost, drained = submitted.
"""

import os

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.utils import rdpcap

from harness.builtin import BuiltinReplayer
from harness.controller import MetaRing
from harness.pcapfile import load
from harness.replay import Replayer, ReplayOptions
from harness.topology import Topology
from harness.xdp import MetaProgram


def expected(pkt):
    """What the XDP parser should say about one frame: L2 from the raw bytes (802.3 frames too),
    L3/L4 as scapy reads the payload."""
    raw = bytes(pkt)
    vlan, off = [0, 0], 12
    ethertype = int.from_bytes(raw[off:off + 2], "big")
    for i in range(2):
        if ethertype not in (0x8100, 0x88A8) or len(raw) < off + 6:
            break
        vlan[i] = int.from_bytes(raw[off + 2:off + 4], "big")
        off += 4
        ethertype = int.from_bytes(raw[off:off + 2], "big")
    payload = raw[off + 2:]
    l4, ports = 0, (0, 0)
    if ethertype == 0x0800 and len(payload) >= 20:
        ip = IP(payload)
        l4 = ip.proto
        if ip.frag == 0 and (TCP in ip or UDP in ip):
            t = ip[TCP] if TCP in ip else ip[UDP]
            ports = (t.sport, t.dport)
    elif ethertype == 0x86DD and len(payload) >= 40:
        ip6 = IPv6(payload)
        l4 = ip6.nh
        if l4 in (6, 17) and (TCP in ip6 or UDP in ip6):
            t = ip6[TCP] if TCP in ip6 else ip6[UDP]
            ports = (t.sport, t.dport)
    return {"len": len(raw), "ethertype": ethertype, "vlan": vlan, "l4_proto": l4, "ports": ports}


def replay_and_drain(pcap, ring_pages=256, pps=20000, replayer="tcpreplay"):
    tag = f"t{os.getpid() % 100000}-meta"
    with Topology(tag) as t, MetaProgram(t.dut_ns, t.dut_if, ring_pages=ring_pages) as m:
        ring = MetaRing(m.ring_fd)
        try:
            assert ring.size == ring_pages * 4096  # as the kernel made the map
            if replayer == "xdp":
                rp = BuiltinReplayer(t.gen_ns, t.gen_if, load(pcap), ReplayOptions(pps=pps), method="xdp",
                                     ifindex=t.ifindex(t.gen_ns, t.gen_if)).start()
            else:
                rp = Replayer(t.gen_ns, t.gen_if, pcap, ReplayOptions(pps=pps)).start()
            result = rp.finish()
            records = ring.drain()
        finally:
            ring.close()
        return result, m.stats(), m.ring_stats(), records, t.link(t.dut_ns, t.dut_if).get("index")


@pytest.mark.parametrize("replayer", ["tcpreplay", "xdp"])
@pytest.mark.parametrize("name", ["tcpreplay-test.pcap", "suricata-datasets06-vlan.pcap",
                                  "tcpdump-802.1ad-qinq.pcap", "ndpi-synscan.pcap"])
def test_every_frame_parsed_as_scapy_reads_it(pcaps, name, replayer):
    """Record i is frame i of the capture as scapy reads it: by either replayer, every frame reached XDP
    whole and in the capture's order."""
    path = os.path.join(pcaps, name)
    packets = rdpcap(path)
    replay, seen, ring, records, ifindex = replay_and_drain(path, replayer=replayer)
    assert replay.sent == seen.packets == len(packets) == len(records)
    assert ring == {"submitted": len(packets), "lost": 0}
    assert (records["ifindex"] == ifindex).all()
    assert (records["ts_ns"][1:] >= records["ts_ns"][:-1]).all()
    for i, (pkt, rec) in enumerate(zip(packets, records, strict=True)):
        want = expected(pkt)
        got = {"len": int(rec["len"]), "ethertype": int(rec["ethertype"]), "vlan": rec["vlan"].tolist(),
               "l4_proto": int(rec["l4_proto"]), "ports": (int(rec["sport"]), int(rec["dport"]))}
        assert got == want, f"frame {i}: {pkt.summary()}"


def test_a_full_ring_counts_every_loss(pcaps):
    """A one-page ring nobody drains during the replay: what does not fit is lost, and counted."""
    path = os.path.join(pcaps, "ndpi-synscan.pcap")
    replay, seen, ring, records, _ = replay_and_drain(path, ring_pages=1, pps=50000)
    assert replay.sent == seen.packets == 2011
    assert ring["lost"] > 0
    assert ring["submitted"] + ring["lost"] == seen.packets
    assert len(records) == ring["submitted"] == 4096 // 48  # 40-byte records + 8-byte headers

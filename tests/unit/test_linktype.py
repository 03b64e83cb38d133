"""Link-type conversion: the synthesized Ethernet frame carries the right ethertype and the original
L3 bytes unchanged; what has no Ethernet form is refused with the reason."""

import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Loopback

from harness import linktype as lt
from harness.pcapfile import records

V4 = bytes(IP(src="198.18.0.1", dst="198.19.0.1") / UDP(sport=1, dport=9) / (b"x" * 20))
V6 = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(sport=1, dport=80))


def ethertype(frame: bytes) -> int:
    return struct.unpack_from(">H", frame, 12)[0]


def converted(link: int, data: bytes) -> bytes:
    frame, why = lt.to_ethernet(link, data)
    assert why is None and frame is not None, why
    return frame


@pytest.mark.parametrize("link, data, l3, etype", [
    (lt.RAW, V4, V4, 0x0800),
    (lt.RAW, V6, V6, 0x86DD),
    (12, V4, V4, 0x0800),  # DLT_RAW as some systems write it
    (lt.IPV4, V4, V4, 0x0800),
    (lt.IPV6, V6, V6, 0x86DD),
    (lt.NULL, struct.pack("<I", 2) + V4, V4, 0x0800),  # written on a little-endian BSD
    (lt.NULL, struct.pack(">I", 2) + V4, V4, 0x0800),  # ... on a big-endian one
    (lt.NULL, struct.pack("<I", 24) + V6, V6, 0x86DD),  # AF_INET6 on NetBSD/OpenBSD
    (lt.NULL, struct.pack("<I", 28) + V6, V6, 0x86DD),  # FreeBSD
    (lt.NULL, struct.pack("<I", 30) + V6, V6, 0x86DD),  # macOS
    (lt.LOOP, struct.pack(">I", 2) + V4, V4, 0x0800),
    (lt.LOOP, struct.pack(">I", 24) + V6, V6, 0x86DD),
])
def test_ip_link_types(link, data, l3, etype):
    frame = converted(link, data)
    assert ethertype(frame) == etype
    assert frame[14:] == l3
    assert frame[:12] == lt.DST_MAC + lt.SRC_MAC


def test_scapy_loopback_header_is_read_either_way():
    """scapy writes DLT_NULL in this machine's (little-endian) order."""
    assert converted(lt.NULL, bytes(Loopback(type=2) / IP(bytes(V4))))[14:] == V4


def test_linux_cooked_v1_and_v2_keep_the_protocol_and_source_mac():
    mac = bytes.fromhex("001122334455")
    sll = bytes(CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=mac + b"\0\0", proto=0x0800) / IP(V4))
    frame = converted(lt.LINUX_SLL, sll)
    assert ethertype(frame) == 0x0800 and frame[14:] == V4 and frame[6:12] == mac
    sll2 = bytes(CookedLinuxV2(proto=0x86DD, ifindex=3, lladdrtype=1, pkttype=4, lladdrlen=6,
                               src=mac + b"\0\0") / IPv6(V6))
    frame = converted(lt.LINUX_SLL2, sll2)
    assert ethertype(frame) == 0x86DD and frame[14:] == V6 and frame[6:12] == mac
    arp = bytes(CookedLinux(lladdrtype=1, lladdrlen=6, src=mac + b"\0\0", proto=0x0806)) + b"\1" * 28
    assert ethertype(converted(lt.LINUX_SLL, arp)) == 0x0806


def test_cooked_802_2_becomes_an_802_3_frame():
    llc = b"\x42\x42\x03" + b"\0" * 35  # STP BPDU
    sll = bytes(CookedLinux(lladdrtype=1, lladdrlen=6, src=b"\0" * 8, proto=0x0004)) + llc
    frame = converted(lt.LINUX_SLL, sll)
    assert ethertype(frame) == len(llc) and frame[14:] == llc


@pytest.mark.parametrize("link, data, reason", [
    (lt.IEEE802_11, b"\x08\x00" + b"\0" * 30, "IEEE802_11(105) cannot be put on Ethernet"),
    (lt.IEEE802_11_RADIOTAP, b"\0\0\x08\0\0\0\0\0" + b"\0" * 30, "IEEE802_11_RADIOTAP(127)"),
    (147, b"anything", "USER0(147) cannot be put on Ethernet"),
    (4000, b"anything", "LINKTYPE(4000) cannot be put on Ethernet"),
    (lt.RAW, b"\x50" + b"\0" * 19, "IP version 5 is neither 4 nor 6"),
    (lt.RAW, b"", "empty packet"),
    (lt.NULL, struct.pack("<I", 7) + V4, "address family 7"),
    (lt.NULL, b"\2\0", "shorter than its 4-byte header"),
    (lt.LINUX_SLL, bytes(CookedLinux(proto=0x000C)) + b"\0" * 16, "CAN has no Ethernet form"),
    (lt.LINUX_SLL, bytes(CookedLinux(lladdrtype=824, proto=0)) + b"\0" * 16, "netlink message"),
    (lt.LINUX_SLL, b"\0" * 10, "shorter than its 16-byte header"),
    (lt.LINUX_SLL2, b"\0" * 12, "shorter than its 20-byte header"),
    (lt.EN10MB, b"\0" * 13, "shorter than its 14-byte header"),
])
def test_refused_with_the_reason(link, data, reason):
    frame, why = lt.to_ethernet(link, data)
    assert frame is None and reason in why


@given(st.sampled_from([(lt.RAW, 4), (lt.RAW, 6), (lt.IPV4, 4), (lt.IPV6, 6), (lt.NULL, 4), (lt.LOOP, 6),
                        (lt.LINUX_SLL, 4), (lt.LINUX_SLL2, 6)]),
       st.binary(min_size=0, max_size=300))
def test_l3_bytes_are_never_changed(kind, tail):
    link, version = kind
    l3 = bytes([version << 4 | 5]) + tail
    etype = 0x0800 if version == 4 else 0x86DD
    head = {lt.NULL: struct.pack("<I", 2 if version == 4 else 30),
            lt.LOOP: struct.pack(">I", 2 if version == 4 else 24),
            lt.LINUX_SLL: struct.pack(">HHH8sH", 0, 1, 6, b"\0" * 8, etype),
            lt.LINUX_SLL2: struct.pack(">HHIHBB8s", etype, 0, 1, 1, 0, 6, b"\0" * 8)}.get(link, b"")
    frame = converted(link, head + l3)
    assert frame[14:] == l3 and ethertype(frame) == etype and len(frame) == 14 + len(l3)


def test_real_cooked_and_raw_captures(pcaps):
    """Every record of the real SLL and RAW captures converts, its L3 bytes intact."""
    for name, link, hlen in (("tcpdump-handshake-nano-sll.pcap", lt.LINUX_SLL, 16),
                             ("pcpp-raw-ip.pcap", lt.RAW, 0)):
        recs = list(records(os.path.join(pcaps, name)))
        assert recs and all(r.linktype == link for r in recs)
        for r in recs:
            frame = converted(r.linktype, r.data)
            assert frame[14:] == r.data[hlen:]
            assert ethertype(frame) == (0x0800 if r.data[hlen] >> 4 == 4 else 0x86DD)


def test_vlan_tags_and_mtu_for():
    eth = lt.DST_MAC + lt.SRC_MAC
    q = eth + struct.pack(">HHH", 0x8100, 5, 0x0800) + V4
    qinq = eth + struct.pack(">HHHHH", 0x88A8, 5, 0x8100, 6, 0x86DD) + V6
    assert lt.vlan_tags(q) == (1, 0x0800) and lt.vlan_tags(qinq) == (2, 0x86DD)
    assert lt.mtu_for(q) == len(q) - 18  # the kernel allows an 802.1Q tag past the MTU
    assert lt.mtu_for(qinq) == len(qinq) - 14  # but not an 802.1ad one

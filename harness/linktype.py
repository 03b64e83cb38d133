"""Put a captured packet onto Ethernet, as ``tcprewrite --dlt=enet`` does.

Ethernet frames go as they are. Linux cooked captures (SLL, SLL2), raw IP
(RAW, IPV4, IPV6) and BSD loopback (NULL, LOOP) get a synthesized 14-byte
Ethernet header in front of their unchanged L3 bytes: locally administered
MACs (the cooked header's source address when it is a MAC) and the
ethertype the link-layer header implies. What has no Ethernet form (802.11,
radiotap, CAN, netlink, ...) is refused with the reason, per packet.

``to_ethernet(linktype, data)`` returns ``(frame, None)`` or ``(None, why)``.
"""

from __future__ import annotations

import struct

# LINKTYPE_* values (https://www.tcpdump.org/linktypes.html)
NULL, EN10MB, RAW, IEEE802_11, LOOP, LINUX_SLL, IEEE802_11_RADIOTAP = 0, 1, 101, 105, 108, 113, 127
IPV4, IPV6, LINUX_SLL2 = 228, 229, 276
NAMES = {
    NULL: "NULL", EN10MB: "EN10MB", 9: "PPP", 12: "RAW", 14: "RAW", RAW: "RAW", IEEE802_11: "IEEE802_11",
    LOOP: "LOOP", LINUX_SLL: "LINUX_SLL", 119: "PRISM_HEADER", IEEE802_11_RADIOTAP: "IEEE802_11_RADIOTAP",
    147: "USER0", 189: "USB_LINUX", 192: "PPI", 195: "IEEE802_15_4", 220: "USB_LINUX_MMAPPED",
    227: "CAN_SOCKETCAN", IPV4: "IPV4", IPV6: "IPV6", 253: "NETLINK", LINUX_SLL2: "LINUX_SLL2",
}
CONVERTED = {NULL, RAW, 12, 14, LOOP, LINUX_SLL, IPV4, IPV6, LINUX_SLL2}

ETH_HLEN = 14
ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q, ETH_P_8021AD, ETH_P_QINQ1 = 0x0800, 0x86DD, 0x8100, 0x88A8, 0x9100
VLAN_TPIDS = (ETH_P_8021Q, ETH_P_8021AD, ETH_P_QINQ1)
SRC_MAC = bytes.fromhex("020000000001")
DST_MAC = bytes.fromhex("020000000002")

# Linux cooked capture: ARPHRD_* of the captured device, and the protocol values below
# 0x0600 that are not ethertypes (include/uapi/linux/if_ether.h)
ARPHRD_ETHER, ARPHRD_LOOPBACK, ARPHRD_NETLINK = 1, 772, 824
SLL_NOT_ETHERTYPES = {0x0001: "802.3 without 802.2 (Novell raw)", 0x0004: "802.2 LLC", 0x000C: "CAN",
                      0x000D: "CAN FD", 0x0010: "PPP", 0x0019: "IEEE 802.15.4"}
ETH_P_802_2 = 0x0004
# AF_INET6 differs between the systems that write NULL/LOOP captures
AF_INET, AF_INET6 = 2, (10, 24, 28, 30)


def name(lt: int) -> str:
    return f"{NAMES.get(lt, 'LINKTYPE')}({lt})"


def _eth(ethertype: int, payload: bytes, src: bytes = SRC_MAC) -> bytes:
    return DST_MAC + src + struct.pack(">H", ethertype) + payload


def _ip_version(data: bytes, what: str):
    if not data:
        return None, f"{what}: empty packet"
    v = data[0] >> 4
    if v == 4:
        return _eth(ETH_P_IP, data), None
    if v == 6:
        return _eth(ETH_P_IPV6, data), None
    return None, f"{what}: IP version {v} is neither 4 nor 6"


def _cooked(data: bytes, proto: int, hatype: int, halen: int, addr: bytes, hlen: int, what: str):
    if hatype == ARPHRD_NETLINK:
        return None, f"{what}: a netlink message, not a network packet"
    payload = data[hlen:]
    src = addr[:6] if halen == 6 and hatype in (ARPHRD_ETHER, ARPHRD_LOOPBACK) else SRC_MAC
    if proto >= 0x0600:
        return _eth(proto, payload, src), None
    if proto == ETH_P_802_2:  # an 802.3 frame: a length field, then the LLC header
        if len(payload) > 1500:
            return None, f"{what}: 802.2 LLC payload of {len(payload)} bytes does not fit an 802.3 length"
        return _eth(len(payload), payload, src), None
    kind = SLL_NOT_ETHERTYPES.get(proto, f"protocol 0x{proto:04x}")
    return None, f"{what}: {kind} has no Ethernet form"


def to_ethernet(linktype: int, data: bytes) -> tuple[bytes | None, str | None]:
    """The packet as an Ethernet frame, or None and why it has none."""
    if linktype == EN10MB:
        if len(data) < ETH_HLEN:
            return None, "Ethernet frame shorter than its 14-byte header"
        return data, None
    what = name(linktype)
    if linktype in (RAW, 12, 14):
        return _ip_version(data, what)
    if linktype == IPV4:
        return _eth(ETH_P_IP, data), None
    if linktype == IPV6:
        return _eth(ETH_P_IPV6, data), None
    if linktype in (NULL, LOOP):
        if len(data) < 4:
            return None, f"{what}: shorter than its 4-byte header"
        # LOOP is big-endian; NULL is in the writer's byte order, whichever makes a small number
        le, be = struct.unpack("<I", data[:4])[0], struct.unpack(">I", data[:4])[0]
        family = be if linktype == LOOP or be < le else le
        if family == AF_INET:
            return _eth(ETH_P_IP, data[4:]), None
        if family in AF_INET6:
            return _eth(ETH_P_IPV6, data[4:]), None
        return None, f"{what}: address family {family} is neither IPv4 nor IPv6"
    if linktype == LINUX_SLL:
        if len(data) < 16:
            return None, f"{what}: shorter than its 16-byte header"
        _ptype, hatype, halen = struct.unpack(">HHH", data[:6])
        return _cooked(data, struct.unpack(">H", data[14:16])[0], hatype, halen, data[6:14], 16, what)
    if linktype == LINUX_SLL2:
        if len(data) < 20:
            return None, f"{what}: shorter than its 20-byte header"
        proto, hatype, halen = struct.unpack(">H", data[:2])[0], struct.unpack(">H", data[8:10])[0], data[11]
        return _cooked(data, proto, hatype, halen, data[12:20], 20, what)
    return None, f"link type {what} cannot be put on Ethernet"


def vlan_tags(frame: bytes) -> tuple[int, int]:
    """(number of VLAN tags, the ethertype after them) of an Ethernet frame."""
    tags, off = 0, 12
    etype = struct.unpack_from(">H", frame, off)[0]
    while etype in VLAN_TPIDS and off + 6 <= len(frame):
        tags += 1
        off += 4
        etype = struct.unpack_from(">H", frame, off)[0]
    return tags, etype


def mtu_for(frame: bytes) -> int:
    """The smallest device MTU a packet socket sends this frame on: the kernel allows 4 bytes
    more for an 802.1Q-tagged frame (packet_extra_vlan_len_allowed), nothing more for 802.1ad."""
    extra = 4 if struct.unpack_from(">H", frame, 12)[0] == ETH_P_8021Q else 0
    return max(len(frame) - ETH_HLEN - extra, 0)

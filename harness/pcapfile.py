"""Read pcap and pcapng files: count, measure and validate before replaying.

The harness needs exact expected counts and must refuse a bad capture with one
line that says what is wrong and where (record number and byte offset) before
it creates anything. This reader walks record headers only; it does not
decode packets beyond the Ethernet type needed for the MTU check.

Formats: pcap (microsecond and nanosecond magics, either byte order, version
2.x) and pcapng (SHB, IDB, EPB, SPB, OPB; other blocks skipped; byte order per
section).
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import stat
import struct

from harness.errors import NtaError

MAX_CAPLEN = 262144  # libpcap's MAXIMUM_SNAPLEN
ETH_HLEN = 14
VLAN_HLEN = 4
VLAN_TPIDS = (0x8100, 0x88A8)

LINKTYPES = {
    0: "NULL", 1: "EN10MB", 101: "RAW", 105: "IEEE802_11", 113: "LINUX_SLL",
    127: "IEEE802_11_RADIOTAP", 228: "IPV4", 229: "IPV6", 276: "LINUX_SLL2",
}
LINKTYPE_ETHERNET = 1

PCAP_MAGICS = {0xA1B2C3D4: 1_000_000, 0xA1B23C4D: 1_000_000_000}
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D


def linktype_name(lt: int) -> str:
    return f"{LINKTYPES.get(lt, 'linktype')}({lt})"


class CaptureError(NtaError):
    """A capture that cannot be read: says which file, where and what."""

    def __init__(self, path: str, what: str, offset: int | None = None, record: int | None = None):
        where = []
        if record is not None:
            where.append(f"record {record}")
        if offset is not None:
            where.append(f"byte {offset}")
        loc = f" ({', '.join(where)})" if where else ""
        super().__init__(f"{path}{loc}: {what}")
        self.path, self.offset, self.record = path, offset, record


@dataclasses.dataclass
class CaptureInfo:
    path: str
    format: str  # "pcap", "pcap-ns" or "pcapng"
    packets: int = 0
    bytes: int = 0  # sum of captured lengths
    linktypes: dict[int, int] = dataclasses.field(default_factory=dict)  # linktype -> packets
    min_caplen: int = 0
    max_caplen: int = 0
    max_untagged: int = 0  # largest frame without an 802.1Q/802.1ad tag
    max_tagged: int = 0  # largest VLAN-tagged frame
    truncated: int = 0  # records with caplen < origlen
    first_ts: float | None = None
    last_ts: float | None = None
    sizes: list[int] | None = None  # captured lengths in order, when asked for

    @property
    def duration(self) -> float:
        if self.first_ts is None or self.last_ts is None:
            return 0.0
        return max(0.0, self.last_ts - self.first_ts)

    def mtu_needed(self) -> int:
        """The smallest veth MTU that carries every frame (a VLAN tag gets 4 bytes extra)."""
        return max(self.max_untagged - ETH_HLEN, self.max_tagged - ETH_HLEN - VLAN_HLEN, 0)

    def linktype_text(self) -> str:
        return ", ".join(f"{linktype_name(lt)} x{n}" for lt, n in sorted(self.linktypes.items()))

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("sizes")
        d["linktypes"] = {linktype_name(k): v for k, v in self.linktypes.items()}
        d["duration"] = self.duration
        return d


class _Acc:
    """Accumulates per-record facts into a CaptureInfo."""

    def __init__(self, info: CaptureInfo, buf, want_sizes: bool):
        self.info, self.buf = info, buf
        if want_sizes:
            info.sizes = []

    def add(self, linktype: int, data_off: int, caplen: int, origlen: int, ts: float) -> None:
        info = self.info
        info.packets += 1
        info.bytes += caplen
        info.linktypes[linktype] = info.linktypes.get(linktype, 0) + 1
        if info.packets == 1:
            info.min_caplen = caplen
            info.first_ts = ts
        info.min_caplen = min(info.min_caplen, caplen)
        info.max_caplen = max(info.max_caplen, caplen)
        info.last_ts = ts
        if caplen < origlen:
            info.truncated += 1
        tagged = (linktype == LINKTYPE_ETHERNET and caplen >= ETH_HLEN
                  and int.from_bytes(self.buf[data_off + 12:data_off + 14], "big") in VLAN_TPIDS)
        if tagged:
            info.max_tagged = max(info.max_tagged, caplen)
        else:
            info.max_untagged = max(info.max_untagged, caplen)
        if info.sizes is not None:
            info.sizes.append(caplen)


def read_capture(path: str, want_sizes: bool = False) -> CaptureInfo:
    """Walk every record of ``path``; raise CaptureError on anything malformed."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise CaptureError(path, "no such file") from None
    except OSError as exc:
        raise CaptureError(path, f"cannot open: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise CaptureError(path, "is a directory, not a capture file")
        if not stat.S_ISREG(st.st_mode):
            raise CaptureError(path, "not a regular file")
        size = st.st_size
        if size < 4:
            raise CaptureError(path, f"not a pcap or pcapng file: only {size} bytes")
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as buf:
            magic_le = struct.unpack_from("<I", buf, 0)[0]
            magic_be = struct.unpack_from(">I", buf, 0)[0]
            if magic_le == PCAPNG_SHB:
                return _read_pcapng(path, buf, size, want_sizes)
            for endian, magic in (("<", magic_le), (">", magic_be)):
                if magic in PCAP_MAGICS:
                    return _read_pcap(path, buf, size, endian, PCAP_MAGICS[magic], want_sizes)
            raise CaptureError(path, f"not a pcap or pcapng file (magic 0x{magic_be:08x})", offset=0)
    finally:
        os.close(fd)


def _read_pcap(path, buf, size, e, tsdiv, want_sizes) -> CaptureInfo:
    if size < 24:
        raise CaptureError(path, f"truncated pcap file header ({size} of 24 bytes)", offset=0)
    vmaj, vmin, _zone, _sigfigs, snaplen, network = struct.unpack_from(e + "HHiIII", buf, 4)
    if vmaj != 2:
        raise CaptureError(path, f"unsupported pcap savefile version {vmaj}.{vmin}", offset=4)
    linktype = network & 0x03FFFFFF
    info = CaptureInfo(path=path, format="pcap" if tsdiv == 1_000_000 else "pcap-ns")
    acc = _Acc(info, buf, want_sizes)
    limit = max(snaplen, MAX_CAPLEN)
    off, rec = 24, 0
    hdr = struct.Struct(e + "IIII")
    while off < size:
        rec += 1
        if size - off < 16:
            raise CaptureError(path, f"truncated record header ({size - off} of 16 bytes)", off, rec)
        sec, frac, caplen, origlen = hdr.unpack_from(buf, off)
        if caplen > limit:
            raise CaptureError(path, f"captured length {caplen} is larger than the maximum {limit}", off, rec)
        if off + 16 + caplen > size:
            raise CaptureError(path, f"record of {caplen} bytes runs past the end of the file "
                                     f"({size - off - 16} bytes left)", off, rec)
        acc.add(linktype, off + 16, caplen, origlen, sec + frac / tsdiv)
        off += 16 + caplen
    return info


def _read_pcapng(path, buf, size, want_sizes) -> CaptureInfo:
    info = CaptureInfo(path=path, format="pcapng")
    acc = _Acc(info, buf, want_sizes)
    off, rec, block = 0, 0, 0
    e = "<"
    ifaces: list[tuple[int, int, float]] = []  # (linktype, snaplen, ts units per second)
    while off < size:
        block += 1
        if size - off < 12:
            raise CaptureError(path, f"truncated pcapng block header ({size - off} bytes left)", off)
        btype = struct.unpack_from(e + "I", buf, off)[0]
        if btype == PCAPNG_SHB:
            bom_le = struct.unpack_from("<I", buf, off + 8)[0]
            if bom_le == PCAPNG_BOM:
                e = "<"
            elif struct.unpack_from(">I", buf, off + 8)[0] == PCAPNG_BOM:
                e = ">"
            else:
                raise CaptureError(path, f"section header with bad byte-order magic 0x{bom_le:08x}", off + 8)
            ifaces = []  # interface ids are per section
        blen = struct.unpack_from(e + "I", buf, off + 4)[0]
        if blen < 12 or blen % 4 or off + blen > size:
            raise CaptureError(path, f"pcapng block {block} has bad length {blen} "
                                     f"({size - off} bytes left)", off)
        if struct.unpack_from(e + "I", buf, off + blen - 4)[0] != blen:
            raise CaptureError(path, f"pcapng block {block}: trailing length does not match {blen}", off)
        body, body_len = off + 8, blen - 12
        if btype == 1:  # Interface Description Block
            if body_len < 8:
                raise CaptureError(path, "interface description block too short", off)
            lt, _res, snap = struct.unpack_from(e + "HHI", buf, body)
            ifaces.append((lt, snap, _tsresol(buf, e, body + 8, body + body_len)))
        elif btype in (2, 3, 6):
            rec += 1
            if btype == 6:  # Enhanced Packet Block
                if body_len < 20:
                    raise CaptureError(path, "enhanced packet block too short", off, rec)
                ifid, tsh, tsl, caplen, origlen = struct.unpack_from(e + "IIIII", buf, body)
                data = body + 20
            elif btype == 2:  # Packet Block (obsolete)
                if body_len < 20:
                    raise CaptureError(path, "packet block too short", off, rec)
                ifid, _drops, tsh, tsl, caplen, origlen = struct.unpack_from(e + "HHIIII", buf, body)
                data = body + 20
            else:  # Simple Packet Block: interface 0, no timestamp
                ifid, tsh, tsl = 0, 0, 0
                origlen = struct.unpack_from(e + "I", buf, body)[0]
                data = body + 4
                if not ifaces:
                    raise CaptureError(path, "packet before any interface description block", off, rec)
                caplen = min(origlen, ifaces[0][1] or origlen, body_len - 4)
            if ifid >= len(ifaces):
                raise CaptureError(path, f"packet names interface {ifid}, but the section "
                                         f"describes {len(ifaces)}", off, rec)
            if caplen > MAX_CAPLEN or data + caplen > off + blen - 4:
                raise CaptureError(path, f"captured length {caplen} does not fit its block of {blen} bytes",
                                   off, rec)
            lt, _snap, units = ifaces[ifid]
            acc.add(lt, data, caplen, origlen, ((tsh << 32) | tsl) / units)
        off += blen
    return info


def _tsresol(buf, e, opt, end) -> float:
    """if_tsresol (option 9) of an IDB: units per second; 10**6 when absent."""
    while opt + 4 <= end:
        code, olen = struct.unpack_from(e + "HH", buf, opt)
        if code == 0:
            break
        if code == 9 and olen >= 1:
            v = buf[opt + 4]
            return float(2 ** (v & 0x7F) if v & 0x80 else 10 ** v)
        opt += 4 + ((olen + 3) & ~3)
    return 1e6


def check_replayable(info: CaptureInfo, mtu: int) -> None:
    """Refuse, with the reason, a capture that cannot go out of an Ethernet veth exactly."""
    if info.packets == 0:
        raise CaptureError(info.path, "the capture holds no packets")
    other = {lt: n for lt, n in info.linktypes.items() if lt != LINKTYPE_ETHERNET}
    if other:
        raise CaptureError(info.path, f"link type {info.linktype_text()}: only Ethernet (EN10MB) frames can "
                                      "be replayed on a veth; convert with 'tcprewrite --dlt=enet'")
    if info.min_caplen < ETH_HLEN:
        raise CaptureError(info.path,
                           f"a frame of {info.min_caplen} bytes is shorter than an Ethernet header")
    need = info.mtu_needed()
    if need > mtu:
        raise CaptureError(info.path, f"frames up to {info.max_caplen} bytes do not fit MTU {mtu}; "
                                      f"use --mtu {need} or more")

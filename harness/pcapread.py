"""Walk the records of a pcap or pcapng file, checking every length and offset before it is used.

``records(path)`` yields each record's link type, timestamp (ns), lengths and bytes; anything malformed
raises CaptureError with the file, the record number and the byte offset, before the harness creates
anything. harness.pcapfile turns the records into frames.

Formats: pcap (microsecond and nanosecond magics, either byte order, version 2.x) and pcapng (per section
byte order; several interfaces, each with its own link type, snap length, if_tsresol and if_tsoffset;
enhanced, simple and obsolete packet blocks; other blocks skipped).
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import stat
import struct
from collections.abc import Iterator

from harness.errors import NtaError

MAX_CAPLEN = 262144  # libpcap's MAXIMUM_SNAPLEN
# The longest pcapng block of each kind that can be real: one claiming more is a corrupt length, not the
# last block of a file cut short. A packet block: the largest packet and its fields; an interface: its
# options; anything else (name resolution, secrets, custom blocks): generous.
MAX_PACKET_BLOCK = MAX_CAPLEN + 64
MAX_IDB = 64 << 10
MAX_BLOCK = 64 << 20
VETH_MTU_MAX = 65535  # ETH_MAX_MTU
PCAP_MAGICS = {0xA1B2C3D4: 1_000, 0xA1B23C4D: 1}  # ns per timestamp fraction unit
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D
# frame-size histogram buckets: upper bounds in bytes (Ethernet header included, no FCS)
REL_NS_MAX = 1 << 62
SIZE_BUCKETS = (64, 127, 255, 511, 1023, 1518, 9018, VETH_MTU_MAX + 18, MAX_CAPLEN)


class CaptureError(NtaError):
    """A capture that cannot be read: says which file, where and what."""

    exit_code = 2

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
class Record:
    number: int  # 1-based, counting packet records only
    linktype: int
    ts_ns: int
    caplen: int
    origlen: int
    data: bytes
    offset: int  # of the record (pcap) or block (pcapng)
    fcs: int = 0  # bytes of frame check sequence at the end of the frame on the wire (0: none)

    def without_fcs(self) -> bytes:
        """The captured bytes less the FCS, as much of it as was captured (a snap length may have
        cut it off)."""
        present = max(0, self.fcs - (self.origlen - self.caplen))
        return self.data[:len(self.data) - present] if present else self.data


@dataclasses.dataclass
class Format:
    name: str = ""  # "pcap", "pcap-ns" or "pcapng"
    byte_order: str = ""  # "little", "big", or "little+big" for a pcapng with both
    interfaces: int = 0  # pcapng interface description blocks (1 for pcap)
    # the file ends inside its last record (its writer was interrupted): where, and the bytes left unread
    cut_short: dict | None = None


def _cut_short(path: str, fmt: Format, what: str, offset: int, record: int, size: int, strict: bool):
    """The file ends inside its last record: refuse it (strict), or note where and stop there, as tcpdump
    and Wireshark read every complete record of such a file."""
    if strict:
        raise CaptureError(path, what, offset, record)
    fmt.cut_short = {"record": record, "offset": offset, "bytes_ignored": size - offset, "what": what}


def _open(path: str):
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
        if st.st_size < 4:
            raise CaptureError(path, f"not a pcap or pcapng file: only {st.st_size} bytes")
        return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)


def records(path: str, fmt: Format | None = None, strict: bool = False) -> Iterator[Record]:
    """Every packet record of ``path``, in order; raises CaptureError on anything malformed. A file that
    ends inside its last record is read up to it, and ``fmt.cut_short`` says where (``strict``: refused).
    ``fmt``, when given, is filled in with what the file is."""
    fmt = fmt if fmt is not None else Format()
    buf = _open(path)
    try:
        size = len(buf)
        magic_le, magic_be = struct.unpack_from("<I", buf, 0)[0], struct.unpack_from(">I", buf, 0)[0]
        if magic_le == PCAPNG_SHB:
            yield from _pcapng(path, buf, size, fmt, strict)
            return
        for endian, magic in (("<", magic_le), (">", magic_be)):
            if magic in PCAP_MAGICS:
                yield from _pcap(path, buf, size, endian, PCAP_MAGICS[magic], fmt, strict)
                return
        raise CaptureError(path, f"not a pcap or pcapng file (magic 0x{magic_be:08x})", offset=0)
    finally:
        buf.close()


def _pcap(path, buf, size, e, ns_per_unit, fmt: Format, strict: bool) -> Iterator[Record]:
    fmt.name = "pcap" if ns_per_unit == 1_000 else "pcap-ns"
    fmt.byte_order, fmt.interfaces = "little" if e == "<" else "big", 1
    if size < 24:
        raise CaptureError(path, f"truncated pcap file header ({size} of 24 bytes)", offset=0)
    vmaj, vmin, _zone, _sigfigs, snaplen, network = struct.unpack_from(e + "HHiIII", buf, 4)
    if vmaj != 2:
        raise CaptureError(path, f"unsupported pcap savefile version {vmaj}.{vmin}", offset=4)
    lt = network & 0x03FFFFFF
    # bit 26 says bits 28-31 hold the FCS length, in 16-bit words (pcap-savefile(5), LINKTYPE_ field)
    fcs = ((network >> 28) & 0xF) * 2 if network & 0x04000000 else 0
    limit = max(snaplen, MAX_CAPLEN)
    off, rec = 24, 0
    hdr = struct.Struct(e + "IIII")
    while off < size:
        rec += 1
        if size - off < 16:
            _cut_short(path, fmt, f"truncated record header ({size - off} of 16 bytes)", off, rec, size, strict)
            return
        sec, frac, caplen, origlen = hdr.unpack_from(buf, off)
        if caplen > limit:  # not a record cut short: a header that cannot be one
            raise CaptureError(path, f"captured length {caplen} is larger than the maximum {limit}", off, rec)
        if off + 16 + caplen > size:
            _cut_short(path, fmt, f"record of {caplen} bytes runs past the end of the file "
                                  f"({size - off - 16} bytes left)", off, rec, size, strict)
            return
        yield Record(rec, lt, sec * 1_000_000_000 + frac * ns_per_unit, caplen, origlen,
                     buf[off + 16:off + 16 + caplen], off, fcs)
        off += 16 + caplen


def _pcapng(path, buf, size, fmt: Format, strict: bool) -> Iterator[Record]:
    fmt.name = "pcapng"
    off, rec, block = 0, 0, 0
    e = "<"
    orders: set[str] = set()
    ifaces: list[tuple[int, int, int, int]] = []  # (linktype, snaplen, units per second, offset s)
    while off < size:
        block += 1
        if size - off < 12 and block > 1:
            _cut_short(path, fmt, f"truncated pcapng block header ({size - off} bytes left)", off, rec + 1,
                       size, strict)
            return
        if size - off < 12:
            raise CaptureError(path, f"truncated pcapng block header ({size - off} bytes left)", off)
        btype = struct.unpack_from(e + "I", buf, off)[0]
        if btype == PCAPNG_SHB:
            if size - off < 28:  # type, length, byte-order magic, version, section length, trailing length
                if block > 1:
                    _cut_short(path, fmt, f"truncated section header block ({size - off} bytes left)", off,
                               rec + 1, size, strict)
                    return
                raise CaptureError(path, f"truncated section header block ({size - off} of 28 bytes)", off)
            if struct.unpack_from("<I", buf, off + 8)[0] == PCAPNG_BOM:
                e = "<"
            elif struct.unpack_from(">I", buf, off + 8)[0] == PCAPNG_BOM:
                e = ">"
            else:
                bom = struct.unpack_from(">I", buf, off + 8)[0]
                raise CaptureError(path, f"section header with bad byte-order magic 0x{bom:08x}", off + 8)
            orders.add("little" if e == "<" else "big")
            fmt.byte_order = "+".join(sorted(orders, reverse=True))
            major = struct.unpack_from(e + "H", buf, off + 12)[0]
            if major != 1:
                raise CaptureError(path, f"unsupported pcapng major version {major}", off + 12)
            ifaces = []  # interface ids are per section
        elif block == 1:
            raise CaptureError(path, "pcapng file does not start with a section header block", off)
        blen = struct.unpack_from(e + "I", buf, off + 4)[0]
        plausible = blen <= (MAX_PACKET_BLOCK if btype in (2, 3, 6) else MAX_IDB if btype == 1 else MAX_BLOCK)
        if blen < 12 or blen % 4 or (off + blen > size and (block == 1 or not plausible)):
            raise CaptureError(path, f"pcapng block {block} has bad length {blen} "
                                     f"({size - off} bytes left)", off)
        if off + blen > size:
            _cut_short(path, fmt, f"pcapng block {block} of {blen} bytes runs past the end of the file "
                                  f"({size - off} bytes left)", off, rec + 1, size, strict)
            return
        if struct.unpack_from(e + "I", buf, off + blen - 4)[0] != blen:
            raise CaptureError(path, f"pcapng block {block}: trailing length does not match {blen}", off)
        body, body_len = off + 8, blen - 12
        if btype == 1:  # Interface Description Block
            if body_len < 8:
                raise CaptureError(path, "interface description block too short", off)
            lt, _res, snap = struct.unpack_from(e + "HHI", buf, body)
            opts = _idb_options(buf, e, body + 8, body + body_len)
            if opts is None:
                raise CaptureError(path, "interface description block: an option runs past the end of the block",
                                   off)
            units, tsoff, fcs = opts
            ifaces.append((lt, snap, units, tsoff, fcs))
            fmt.interfaces += 1
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
                if body_len < 4:
                    raise CaptureError(path, "simple packet block too short", off, rec)
                if not ifaces:
                    raise CaptureError(path, "packet before any interface description block", off, rec)
                ifid, tsh, tsl = 0, 0, 0
                origlen = struct.unpack_from(e + "I", buf, body)[0]
                data = body + 4
                caplen = min(origlen, ifaces[0][1] or origlen, body_len - 4)
            if ifid >= len(ifaces):
                raise CaptureError(path, f"packet names interface {ifid}, but the section "
                                         f"describes {len(ifaces)}", off, rec)
            if caplen > MAX_CAPLEN or data + caplen > off + blen - 4:
                raise CaptureError(path, f"captured length {caplen} does not fit its block of {blen} bytes",
                                   off, rec)
            lt, _snap, units, tsoff, fcs = ifaces[ifid]
            ts = (tsh << 32) | tsl
            ts_ns = (tsoff * 1_000_000_000 + ts * 1_000_000_000 // units) if btype != 3 else 0
            yield Record(rec, lt, ts_ns, caplen, origlen, buf[data:data + caplen], off, fcs)
        off += blen


def _idb_options(buf, e, opt, end) -> tuple[int, int, int] | None:
    """if_tsresol (9) as units per second (10**6 when absent), if_tsoffset (14) in seconds and
    if_fcslen (13) in bytes; None when an option runs past the end of its block."""
    units, tsoff, fcs = 1_000_000, 0, 0
    while opt + 4 <= end:
        code, olen = struct.unpack_from(e + "HH", buf, opt)
        if code == 0:
            break
        if opt + 4 + olen > end:
            return None
        if code == 9 and olen >= 1:
            v = buf[opt + 4]
            units = 2 ** (v & 0x7F) if v & 0x80 else 10 ** v
        elif code == 14 and olen >= 8:
            tsoff = struct.unpack_from(e + "q", buf, opt + 4)[0]
        elif code == 13 and olen >= 1:
            fcs = buf[opt + 4]
        opt += 4 + ((olen + 3) & ~3)
    return units, tsoff, fcs

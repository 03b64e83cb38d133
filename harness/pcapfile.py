"""Read pcap and pcapng files, check them, and turn them into frames for a veth.

``records(path)`` walks every record of a capture and yields its link type,
timestamp (ns), lengths and bytes; anything malformed raises CaptureError
with the file, the record number and the byte offset, before the harness
creates anything. ``load(path)`` turns the records into Ethernet frames
(harness.linktype), decides the MTU and counts what it skips and why, and
holds the frames in one buffer for the built-in replayer.

Formats: pcap (microsecond and nanosecond magics, either byte order, version
2.x) and pcapng (per section byte order; several interfaces, each with its
own link type, snap length, if_tsresol and if_tsoffset; enhanced, simple and
obsolete packet blocks; other blocks skipped).

Why not a library: libpcap 1.10 refuses a pcapng whose interfaces differ in
link type ("an interface has a type 113 different from the type of the first
interface"), and scapy's readers yield a corrupt record's bytes as a short
packet, accept pcap version 1.4 and end a pcapng silently at a bad block.
The harness needs exact counts and a refusal that says where, so it walks
the records itself; tests/unit/test_pcapfile.py checks every packet it reads
against scapy's RawPcapReader on the captures both can read.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import stat
import struct
from collections.abc import Iterator

import numpy as np

from harness import linktype
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


@dataclasses.dataclass
class Capture:
    """What a capture holds and what of it goes on the wire, with the frames themselves."""

    path: str
    format: str = ""
    byte_order: str = ""
    interfaces: int = 0
    packets: int = 0  # packet records in the file
    bytes: int = 0  # sum of their captured lengths
    linktypes: dict[int, int] = dataclasses.field(default_factory=dict)  # linktype -> records
    truncated: int = 0  # records with caplen < origlen; sent at caplen
    fcs_stripped: int = 0  # records whose captured frame check sequence was cut off
    converted: int = 0  # frames given a synthesized Ethernet header
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)  # reason -> records
    frames: int = 0  # what a replay of one loop sends
    frame_bytes: int = 0
    min_frame: int = 0
    max_frame: int = 0
    vlan: int = 0  # frames with at least one VLAN tag
    qinq: int = 0  # frames with two or more
    ipv4: int = 0
    ipv6: int = 0
    mtu: int = 0  # the veth MTU the frames are sent at
    mtu_needed: int = 0  # the smallest MTU that carries every frame that can go on Ethernet
    sizes_hist: dict[str, int] = dataclasses.field(default_factory=dict)
    first_ns: int = 0
    last_ns: int = 0
    ts_backwards: int = 0  # records stamped earlier than the one before
    cut_short: dict | None = None  # the file ends inside its last record: {record, offset, bytes_ignored, what}
    # the frames, when loaded: one buffer, and per frame its offset, length and timestamp
    blob: bytes = b""
    offsets: object = None
    lengths: object = None
    rel_ns: object = None  # ns since the first record
    # and per frame what the one parse of its headers found: the ethertype after any VLAN tags, and
    # where in the frame the L3 header starts (14 + 4 per tag)
    etype: object = None
    l3: object = None

    @property
    def duration(self) -> float:
        return max(0, self.last_ns - self.first_ns) / 1e9

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    @property
    def as_is(self) -> bool:
        """Every record goes out unchanged: a replayer may read the file itself."""
        return self.frames == self.packets and not self.converted and not self.fcs_stripped

    def linktype_text(self) -> str:
        return ", ".join(f"{linktype.name(lt)} x{n}" for lt, n in sorted(self.linktypes.items()))

    def as_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
             if f.name not in ("blob", "offsets", "lengths", "rel_ns", "etype", "l3")}
        d["linktypes"] = {linktype.name(k): v for k, v in sorted(self.linktypes.items())}
        d["duration"] = self.duration
        return d


# the histogram's labels, one per bucket of SIZE_BUCKETS and one for what is larger
SIZE_LABELS = [f"{lo}-{hi}" for lo, hi in zip((0, *(b + 1 for b in SIZE_BUCKETS[:-1])), SIZE_BUCKETS,
                                              strict=True)] + [f">{SIZE_BUCKETS[-1]}"]


def load(path: str, mtu: int | None = None, keep_frames: bool = True, strict: bool = False) -> Capture:
    """Read ``path`` and make its frames: converted to Ethernet where needed, skipped (and
    counted by reason) where that cannot be done or a frame exceeds ``mtu``. Without ``mtu``,
    the MTU is the smallest that carries every frame, at least 1500 and at most 65535.
    A file cut short (it ends inside its last record) gives its complete records and says so in
    ``cut_short``; ``strict`` refuses it. ``keep_frames=False`` (nta inspect) counts the same and drops
    the frames at the end."""
    fmt = Format()
    cap = Capture(path=path)
    frames: list[bytes] = []
    stamps: list[int] = []
    to_ethernet, en10mb = linktype.to_ethernet, linktype.EN10MB

    for r in records(path, fmt, strict):
        cap.packets += 1
        cap.bytes += r.caplen
        cap.linktypes[r.linktype] = cap.linktypes.get(r.linktype, 0) + 1
        if cap.packets == 1:
            cap.first_ns = r.ts_ns
        elif r.ts_ns < cap.last_ns:
            cap.ts_backwards += 1
        cap.last_ns = r.ts_ns
        if r.caplen < r.origlen:
            cap.truncated += 1
        data = r.data
        if r.fcs:
            data = r.without_fcs()
            cap.fcs_stripped += len(data) < r.caplen
        if r.linktype == en10mb and len(data) >= linktype.ETH_HLEN:
            frame = data
        else:
            frame, why = to_ethernet(r.linktype, data)
            if frame is None:
                cap.skipped[why] = cap.skipped.get(why, 0) + 1
                continue
            cap.converted += r.linktype != en10mb
        frames.append(frame)
        stamps.append(r.ts_ns)
    cap.format, cap.byte_order, cap.interfaces = fmt.name, fmt.byte_order, fmt.interfaces
    cap.cut_short = fmt.cut_short

    # per-frame facts, over all frames at once
    lengths = np.fromiter(map(len, frames), dtype=np.uint32, count=len(frames))
    offsets = np.zeros(len(frames), dtype=np.uint64)
    if len(frames) > 1:
        np.cumsum(lengths[:-1], out=offsets[1:])
    blob = b"".join(frames)
    del frames
    raw = np.frombuffer(blob, dtype=np.uint8)
    first_type = _u16(raw, offsets + 12)
    tags, etype = _vlan_tags(raw, offsets, lengths, first_type)
    # what MTU a packet socket needs for the frame (linktype.mtu_for)
    need = lengths.astype(np.int64) - linktype.ETH_HLEN - 4 * (first_type == linktype.ETH_P_8021Q)
    cap.mtu_needed = int(need.max(initial=0))
    cap.mtu = mtu if mtu is not None else min(max(1500, cap.mtu_needed), VETH_MTU_MAX)
    fits = need <= cap.mtu
    if not fits.all():
        why = f"larger than MTU {cap.mtu} carries" + ("" if mtu is not None else " (the veth maximum)")
        cap.skipped[why] = cap.skipped.get(why, 0) + int((~fits).sum())
        lengths, offsets, tags, etype = lengths[fits], offsets[fits], tags[fits], etype[fits]
        stamps = [ts for ts, ok in zip(stamps, fits.tolist(), strict=True) if ok]
    cap.frames = int(lengths.size)
    cap.frame_bytes = int(lengths.sum())
    cap.min_frame = int(lengths.min()) if cap.frames else 0
    cap.max_frame = int(lengths.max()) if cap.frames else 0
    cap.vlan, cap.qinq = int((tags > 0).sum()), int((tags > 1).sum())
    cap.ipv4 = int((etype == linktype.ETH_P_IP).sum())
    cap.ipv6 = int((etype == linktype.ETH_P_IPV6).sum())
    counts = np.bincount(np.searchsorted(np.array(SIZE_BUCKETS), lengths, side="left"),
                         minlength=len(SIZE_BUCKETS) + 1)
    cap.sizes_hist = {label: int(c) for label, c in zip(SIZE_LABELS, counts.tolist(), strict=True) if c}
    if keep_frames:
        cap.blob, cap.offsets, cap.lengths = blob, offsets, lengths
        cap.etype, cap.l3 = etype.astype(np.uint16), (linktype.ETH_HLEN + 4 * tags).astype(np.uint16)
        # relative to the first record, clamped: captures hold timestamps that run backwards or
        # past 64 bits of nanoseconds (pcpp-pcapng-example.pcapng has a tshigh of 0xffffffff)
        first = cap.first_ns
        cap.rel_ns = np.array([min(max(ts - first, 0), REL_NS_MAX) for ts in stamps], dtype=np.int64)
    return cap


def _u16(b, at):
    """Big-endian 16-bit values of byte array ``b`` at offsets ``at``."""
    at = at.astype(np.int64)
    return (b[at].astype(np.uint32) << 8) | b[at + 1]


def _vlan_tags(b, offsets, lengths, etype):
    """(VLAN tags, ethertype after them) of each frame whose first ethertype is ``etype``
    (linktype.vlan_tags, vectorised)."""
    tags = np.zeros(offsets.size, dtype=np.int64)
    pos = offsets.astype(np.int64) + 12
    end = offsets.astype(np.int64) + lengths
    more = np.isin(etype, linktype.VLAN_TPIDS) & (pos + 6 <= end)
    while more.any():
        tags += more
        pos += 4 * more
        etype = np.where(more, _u16(b, np.where(more, pos, 0)), etype)
        more = more & np.isin(etype, linktype.VLAN_TPIDS) & (pos + 6 <= end)
    return tags, etype


def write_pcap(cap: Capture, f) -> None:
    """The frames of ``cap`` as a nanosecond pcap of Ethernet frames (for tcpreplay), into binary
    file ``f``."""
    f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, MAX_CAPLEN, linktype.EN10MB))
    hdr = struct.Struct("<IIII")
    for off, n, rel in zip(cap.offsets.tolist(), cap.lengths.tolist(), cap.rel_ns.tolist(), strict=True):
        sec, nsec = divmod(max(cap.first_ns + rel, 0), 1_000_000_000)
        f.write(hdr.pack(sec & 0xFFFFFFFF, nsec, n, n))
        f.write(cap.blob[off:off + n])


def cut_short_warning(cap: Capture) -> str | None:
    """The one line that says a file was cut short, where, and what of it was not read."""
    c = cap.cut_short
    if not c:
        return None
    return (f"nta: warning: {cap.path} is cut short: record {c['record']} at byte {c['offset']} is incomplete "
            f"({c['what']}); its {c['bytes_ignored']:,} bytes were ignored, the {cap.packets:,} complete records "
            "are used (--strict refuses such a file)")


def check_replayable(cap: Capture) -> None:
    """Refuse a capture none of whose packets can be replayed, saying why."""
    if cap.packets and not cap.frames:
        why = "; ".join(f"{n} {reason}" for reason, n in sorted(cap.skipped.items()))
        raise CaptureError(cap.path, f"none of its {cap.packets} packets can be replayed on a veth: {why}")

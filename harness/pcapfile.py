"""Read pcap and pcapng files, check them, and turn them into frames for a veth.

``records(path)`` (harness.pcapread) walks every record of a capture and yields its link type,
timestamp (ns), lengths and bytes; anything malformed raises CaptureError
with the file, the record number and the byte offset, before the harness
creates anything. ``load(path)`` turns the records into Ethernet frames
(harness.linktype), decides the MTU and counts what it skips and why, and
holds the frames in one buffer for the built-in replayer.

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
import struct

import numpy as np

from harness import linktype
from harness.pcapread import (  # noqa: F401  (records, CaptureError: part of this module's API)
    MAX_CAPLEN,
    REL_NS_MAX,
    SIZE_BUCKETS,
    VETH_MTU_MAX,
    CaptureError,
    Format,
    Record,
    records,
)


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

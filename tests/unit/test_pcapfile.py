"""The capture reader against real captures from other projects, and broken ones."""

import io
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.utils import RawPcapNgReader, RawPcapReader

from harness import linktype as lt
from harness.pcapfile import CaptureError, check_replayable, load, records, write_pcap

MALFORMED = {
    "libpcap-invalid-version-1.pcap": ("unsupported pcap savefile version 1.4", 4, None),
    "suricata-bug6875-fuzz.pcap": ("captured length 1409179648", 228, 2),
}


def test_counts_match_the_manifest(pcaps, pcap_manifest):
    checked = 0
    for name, row in pcap_manifest.items():
        if name in MALFORMED:
            continue
        info = load(os.path.join(pcaps, name), keep_frames=False)
        assert info.packets == int(row["packet_count"]), name
        assert info.format.startswith(row["format"].replace("ns-pcap", "pcap")), (name, info.format)
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_captures_name_what_and_where(pcaps, name):
    what, offset, record = MALFORMED[name]
    with pytest.raises(CaptureError) as ei:
        load(os.path.join(pcaps, name))
    err = ei.value
    assert what in str(err)
    assert err.offset == offset and err.record == record
    assert str(err).startswith(os.path.join(pcaps, name))
    assert "\n" not in str(err)


def test_facts_of_real_captures(pcaps):
    vlan = load(os.path.join(pcaps, "suricata-datasets06-vlan.pcap"))
    assert vlan.vlan == vlan.packets == 1200 and vlan.qinq == 0  # every frame carries an 802.1Q tag
    trunc = load(os.path.join(pcaps, "zeek-truncated-header-snaplen68.pcap"))
    assert trunc.truncated == trunc.packets == 24 and trunc.max_frame == 68
    ns = load(os.path.join(pcaps, "tcpdump-handshake-nano-sll.pcap"))
    assert ns.format == "pcap-ns" and ns.linktypes == {113: 3}
    ng = load(os.path.join(pcaps, "pcpp-pcapng-example.pcapng"))
    assert ng.linktypes == {1: 59, 113: 100}
    big = load(os.path.join(pcaps, "suricata-smb2-gro-frames.pcap"))
    assert big.max_frame == 5858 and len(big.lengths) == 792 and int(big.lengths.sum()) == big.bytes
    assert int((big.lengths > 1518).sum()) == 117  # the manifest's count of oversize frames
    assert big.sizes_hist["1519-9018"] == 117


def test_load_counts_and_converts(pcaps):
    ng = load(os.path.join(pcaps, "pcpp-pcapng-example.pcapng"))
    assert (ng.packets, ng.frames, ng.converted, ng.truncated, ng.interfaces) == (159, 159, 100, 39, 2)
    assert ng.skipped == {} and not ng.as_is and ng.mtu == 1500
    assert ng.frame_bytes == ng.bytes + 100 * (14 - 16)  # a 16-byte SLL header became a 14-byte one
    assert int(ng.lengths.sum()) == ng.frame_bytes == len(ng.blob)
    raw = load(os.path.join(pcaps, "pcpp-raw-ip.pcap"))
    assert (raw.ipv4, raw.ipv6, raw.converted) == (50, 50, 100) and raw.frame_bytes == raw.bytes + 14 * 100
    qinq = load(os.path.join(pcaps, "tcpdump-802.1ad-qinq.pcap"))
    assert (qinq.vlan, qinq.qinq) == (2, 2)
    plain = load(os.path.join(pcaps, "tcpreplay-test.pcap"))
    assert plain.as_is and plain.frames == 179 and plain.frame_bytes == plain.bytes
    assert sum(plain.sizes_hist.values()) == 179


def test_mtu_is_raised_for_jumbo_frames_or_they_are_skipped_and_counted(pcaps):
    path = os.path.join(pcaps, "suricata-smb2-gro-frames.pcap")
    auto = load(path)
    assert auto.mtu == auto.mtu_needed == 5844 and auto.frames == 792 and not auto.skipped
    fixed = load(path, mtu=1500)
    assert fixed.frames == 792 - 117 and fixed.skipped == {"larger than MTU 1500 carries": 117}
    assert fixed.max_frame == 1514 and not fixed.as_is
    vlan = load(os.path.join(pcaps, "suricata-datasets06-vlan.pcap"))
    assert vlan.mtu_needed == vlan.max_frame - 18  # the kernel allows a 802.1Q tag past the MTU
    assert load(vlan.path, mtu=vlan.mtu_needed).frames == 1200
    smaller = load(vlan.path, mtu=vlan.mtu_needed - 1)  # the largest frames no longer fit
    assert 0 < smaller.frames < 1200
    assert smaller.skipped == {"larger than MTU 65 carries": 1200 - smaller.frames}


def test_a_capture_nothing_of_which_can_be_replayed(tmp_path):
    path = tmp_path / "radiotap.pcap"
    recs = [b"\0\0\x08\0\0\0\0\0" + b"\x80" * 40] * 3
    path.write_bytes(pcap_bytes(127, recs))
    cap = load(str(path))
    assert (cap.packets, cap.frames) == (3, 0)
    with pytest.raises(CaptureError, match=r"none of its 3 packets can be replayed on a veth: 3 link "
                                           r"type IEEE802_11_RADIOTAP\(127\) cannot be put on Ethernet"):
        check_replayable(cap)
    assert CaptureError.exit_code == 2


def test_mixed_link_types_skip_per_packet(tmp_path):
    """A pcapng with an Ethernet interface and an 802.11 one: the 802.11 packets are skipped, counted."""
    eth = bytes(range(60))
    blocks = [shb("<"), idb("<", 1), idb("<", 105), epb("<", 0, 1, eth), epb("<", 1, 2, b"\x08" * 30),
              epb("<", 0, 3, eth)]
    path = tmp_path / "mixed.pcapng"
    path.write_bytes(b"".join(blocks))
    cap = load(str(path))
    assert (cap.packets, cap.frames) == (3, 2)
    assert cap.skipped == {"link type IEEE802_11(105) cannot be put on Ethernet": 1}
    check_replayable(cap)


def test_write_pcap_round_trips(pcaps):
    src = load(os.path.join(pcaps, "pcpp-pcapng-example.pcapng"))
    buf = io.BytesIO()
    write_pcap(src, buf)
    back = list(RawPcapReader(io.BytesIO(buf.getvalue())))
    assert len(back) == src.frames
    for k, (data, _md) in enumerate(back):
        off, n = int(src.offsets[k]), int(src.lengths[k])
        assert data == src.blob[off:off + n]


def _rewrite(src: str, dst, endian: str) -> None:
    """Rewrite a little-endian microsecond pcap in another byte order."""
    data = open(src, "rb").read()
    hdr = struct.unpack_from("<IHHiIII", data, 0)
    out = [struct.pack(endian + "IHHiIII", *hdr)]
    off = 24
    while off < len(data):
        rec = struct.unpack_from("<IIII", data, off)
        out.append(struct.pack(endian + "IIII", *rec))
        out.append(data[off + 16:off + 16 + rec[2]])
        off += 16 + rec[2]
    dst.write_bytes(b"".join(out))


def test_big_endian_pcap_reads_the_same(pcaps, tmp_path):
    src = os.path.join(pcaps, "tcpreplay-test.pcap")
    _rewrite(src, tmp_path / "be.pcap", ">")
    a, b = list(records(src)), list(records(str(tmp_path / "be.pcap")))
    assert len(a) == 179
    def fields(recs):
        return [(r.ts_ns, r.caplen, r.origlen, r.data) for r in recs]

    assert fields(a) == fields(b)
    assert load(str(tmp_path / "be.pcap")).byte_order == "big"


def test_a_cut_file_header_is_refused(pcaps, tmp_path):
    p = tmp_path / "cut.pcap"
    p.write_bytes(open(os.path.join(pcaps, "tcpreplay-test.pcap"), "rb").read()[:10])
    with pytest.raises(CaptureError, match="truncated pcap file header"):
        load(str(p))


def _offsets(path):
    return [r.offset for r in records(path)]


@pytest.mark.parametrize("name", ["tcpreplay-test.pcap", "pcpp-pcapng-example.pcapng"])
@pytest.mark.parametrize("where", ["in a header", "in the data"])
def test_a_file_cut_short_gives_its_complete_records(pcaps, tmp_path, name, where):
    """A file whose last record is incomplete (its writer was interrupted) is read up to it, as tcpdump
    does; the capture says where it was cut and how much was ignored; strict refuses it."""
    path = os.path.join(pcaps, name)
    data, offs = open(path, "rb").read(), _offsets(path)
    keep = 17  # complete records
    start = offs[keep]
    cut = start + (5 if where == "in a header" else 30)
    p = tmp_path / f"cut-{name}"
    p.write_bytes(data[:cut])
    cap = load(str(p))
    whole = load(path)
    assert cap.packets == cap.frames == keep
    assert cap.blob == whole.blob[:int(whole.offsets[keep])]  # the complete records, byte for byte
    assert cap.cut_short == {"record": keep + 1, "offset": start, "bytes_ignored": cut - start,
                             "what": cap.cut_short["what"]}
    assert cap.as_dict()["cut_short"]["offset"] == start
    with pytest.raises(CaptureError) as ei:
        load(str(p), strict=True)
    assert ei.value.offset == start and ei.value.record == keep + 1


def test_corruption_before_the_end_is_still_refused(pcaps, tmp_path):
    data = bytearray(open(os.path.join(pcaps, "tcpreplay-test.pcap"), "rb").read())
    data[24 + 8:24 + 12] = (1 << 30).to_bytes(4, "little")  # record 1 claims a gigabyte
    p = tmp_path / "bad.pcap"
    p.write_bytes(bytes(data))
    with pytest.raises(CaptureError, match="captured length 1073741824 is larger than the maximum"):
        load(str(p))


def test_not_a_capture(tmp_path):
    cases = {
        "text.pcap": b"this is not a capture file at all\n",
        "tiny.pcap": b"ab",
        "empty.pcap": b"",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CaptureError, match="not a pcap or pcapng file"):
            load(str(tmp_path / name))
    with pytest.raises(CaptureError, match="no such file"):
        load(str(tmp_path / "missing.pcap"))
    with pytest.raises(CaptureError, match="is a directory"):
        load(str(tmp_path))


def test_pcapng_bad_block_length(pcaps, tmp_path):
    data = bytearray(open(os.path.join(pcaps, "pcpp-pcapng-example.pcapng"), "rb").read())
    shb_len = struct.unpack_from("<I", data, 4)[0]
    struct.pack_into("<I", data, shb_len + 4, 0xFFFF0)  # the block after the SHB claims ~1 MB
    (tmp_path / "bad.pcapng").write_bytes(bytes(data))
    with pytest.raises(CaptureError, match="bad length") as ei:
        load(str(tmp_path / "bad.pcapng"))
    assert ei.value.offset == shb_len


# -- captures written here, block by block -----------------------------------------

def pcap_bytes(link: int, recs: list[bytes], e: str = "<", nano: bool = False) -> bytes:
    out = [struct.pack(e + "IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0, 65535, link)]
    for k, data in enumerate(recs):
        out.append(struct.pack(e + "IIII", 1_700_000_000 + k, 123 * k, len(data), len(data)) + data)
    return b"".join(out)


def _block(e: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def shb(e: str) -> bytes:
    return _block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(e: str, link: int, snap: int = 0, tsresol: int | None = None) -> bytes:
    opts = b""
    if tsresol is not None:
        opts = struct.pack(e + "HH", 9, 1) + bytes([tsresol]) + b"\0\0\0" + struct.pack(e + "HH", 0, 0)
    return _block(e, 1, struct.pack(e + "HHI", link, 0, snap) + opts)


def epb(e: str, ifid: int, ts: int, data: bytes, origlen: int | None = None) -> bytes:
    return _block(e, 6, struct.pack(e + "IIIII", ifid, ts >> 32, ts & 0xFFFFFFFF, len(data),
                                    origlen or len(data)) + data)


def spb(e: str, data: bytes) -> bytes:
    return _block(e, 3, struct.pack(e + "I", len(data)) + data)


def opb(e: str, ifid: int, ts: int, data: bytes) -> bytes:
    return _block(e, 2, struct.pack(e + "HHIIII", ifid, 0, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data))
                  + data)


V4 = bytes.fromhex("4500001c0001000040110000c6120001c6130001000100090008fff7")


@pytest.mark.parametrize("e", ["<", ">"])
def test_pcapng_interfaces_with_their_own_link_type_and_resolution(tmp_path, e):
    """Two interfaces (Ethernet at microseconds, raw IP at 2^-20 s), then a second section in the
    same byte order with one at nanoseconds; enhanced, simple and obsolete packet blocks."""
    eth = bytes.fromhex("020000000002020000000001") + b"\x08\x00" + V4
    blocks = [shb(e), idb(e, 1, snap=262144), idb(e, 101, tsresol=0x80 | 20),
              epb(e, 0, 5_000_001, eth), epb(e, 1, 3 << 20, V4), spb(e, eth), opb(e, 1, 1 << 21, V4),
              shb(e), idb(e, 228, tsresol=9), epb(e, 0, 7, V4, origlen=100)]
    path = tmp_path / "ng.pcapng"
    path.write_bytes(b"".join(blocks))
    recs = list(records(str(path)))
    assert [(r.linktype, r.ts_ns, r.data) for r in recs] == [
        (1, 5_000_001_000, eth), (101, 3_000_000_000, V4), (1, 0, eth), (101, 2_000_000_000, V4),
        (228, 7, V4)]
    assert recs[-1].origlen == 100 and recs[-1].caplen == len(V4)
    cap = load(str(path))
    assert (cap.format, cap.byte_order, cap.interfaces) == ("pcapng", "little" if e == "<" else "big", 3)
    assert (cap.frames, cap.converted, cap.truncated, cap.ipv4) == (5, 3, 1, 5)
    # what scapy reads, packet for packet, in the first section (scapy 2.8 keeps the first section's
    # interfaces in the next one, where the pcapng spec starts them again: it reads 228 as 1)
    one = tmp_path / "one.pcapng"
    one.write_bytes(b"".join(blocks[:7]))
    theirs = [(md.linktype, data) for data, md in RawPcapNgReader(str(one))]
    assert theirs == [(r.linktype, r.data) for r in recs[:4]]


@pytest.mark.parametrize("e, nano", [("<", False), (">", False), ("<", True), (">", True)])
def test_pcap_byte_orders_and_resolutions(tmp_path, e, nano):
    path = tmp_path / "x.pcap"
    path.write_bytes(pcap_bytes(101, [V4, V4[:20]], e, nano))
    recs = list(records(str(path)))
    unit = 1 if nano else 1000
    assert [r.ts_ns for r in recs] == [1_700_000_000 * 10**9, 1_700_000_001 * 10**9 + 123 * unit]
    assert [r.data for r in recs] == [V4, V4[:20]]
    assert load(str(path)).format == ("pcap-ns" if nano else "pcap")


def scapy_records(path: str) -> list[tuple]:
    """(link type, ns timestamp, captured bytes, original length) of each packet, as scapy reads them."""
    out = []
    reader = RawPcapReader(path)
    with reader:
        for data, md in reader:
            if hasattr(md, "tsresol"):  # pcapng
                ts = ((md.tshigh << 32) | md.tslow) * 10**9 // md.tsresol if md.tshigh is not None else 0
                out.append((md.linktype, ts, data, md.wirelen))
            else:
                ts = md.sec * 10**9 + md.usec * (1 if reader.nano else 1000)
                out.append((reader.linktype, ts, data, md.wirelen))
    return out


def test_every_packet_agrees_with_scapy(pcaps, pcap_manifest):
    """The reader against scapy's, on every capture both can read: same link type, timestamp, bytes and
    original length for every packet."""
    compared = 0
    for name in sorted(pcap_manifest):
        if name in MALFORMED:
            continue
        path = os.path.join(pcaps, name)
        ours = [(r.linktype, r.ts_ns, r.data, r.origlen) for r in records(path)]
        assert ours == scapy_records(path), name
        compared += len(ours)
    assert compared == sum(int(r["packet_count"]) for n, r in pcap_manifest.items() if n not in MALFORMED)


def test_what_scapy_lets_through_is_refused_here(pcaps):
    """Why the reader is not scapy's: on the fuzzed capture scapy yields record 2 as a short packet,
    and it reads a version 1.4 header as if it were 2.4."""
    fuzz = os.path.join(pcaps, "suricata-bug6875-fuzz.pcap")
    theirs = list(RawPcapReader(fuzz))
    assert len(theirs) == 2 and len(theirs[1][0]) < theirs[1][1].caplen
    with pytest.raises(CaptureError, match="record 2"):
        list(records(fuzz))
    assert len(list(RawPcapReader(os.path.join(pcaps, "libpcap-invalid-version-1.pcap")))) == 1


_ETYPES = [0x8100, 0x88A8, 0x9100, 0x0800, 0x86DD, 0x0806]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.lists(st.sampled_from(_ETYPES), min_size=1, max_size=4),
                          st.integers(min_value=0, max_value=1600)), min_size=1, max_size=40))
def test_load_counts_frames_as_linktype_does(tmp_path, spec):
    """load()'s counts over all frames at once agree with linktype's per-frame functions."""
    frames = []
    for etypes, pad in spec:
        frame = lt.DST_MAC + lt.SRC_MAC + b"".join(struct.pack(">HH", e, 7) for e in etypes[:-1])
        frames.append(frame + struct.pack(">H", etypes[-1]) + bytes(pad))
    path = tmp_path / "f.pcap"
    path.write_bytes(pcap_bytes(1, frames))
    cap = load(str(path))
    facts = [lt.vlan_tags(f) for f in frames]
    assert cap.vlan == sum(t > 0 for t, _ in facts) and cap.qinq == sum(t > 1 for t, _ in facts)
    assert cap.ipv4 == sum(e == 0x0800 for _, e in facts) and cap.ipv6 == sum(e == 0x86DD for _, e in facts)
    assert cap.mtu_needed == max(lt.mtu_for(f) for f in frames)
    assert sum(cap.sizes_hist.values()) == cap.frames == len(frames)


def test_a_captured_fcs_is_not_sent(tmp_path):
    """pcap's link-type field can say the frames end in an FCS (bit 26, length in bits 28-31, in
    16-bit words), and so can pcapng's if_fcslen: those bytes are cut off, as much as was captured."""
    frame = lt.DST_MAC + lt.SRC_MAC + b"\x08\x00" + V4 + bytes(22)  # 64 bytes
    fcs = b"\xde\xad\xbe\xef"
    network = 1 | 0x04000000 | (2 << 28)  # Ethernet, FCS of 2 words
    hdr = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, network)
    whole = struct.pack("<IIII", 1, 0, 68, 68) + frame + fcs
    cut = struct.pack("<IIII", 2, 0, 66, 68) + frame + fcs[:2]  # the snap length cut half the FCS
    path = tmp_path / "fcs.pcap"
    path.write_bytes(hdr + whole + cut)
    recs = list(records(str(path)))
    assert [r.fcs for r in recs] == [4, 4] and [r.without_fcs() for r in recs] == [frame, frame]
    cap = load(str(path))
    assert cap.lengths.tolist() == [64, 64] and cap.fcs_stripped == 2 and not cap.as_is
    assert cap.linktypes == {1: 2}
    # pcapng: if_fcslen (option 13) of 4 bytes on the interface
    opts = struct.pack("<HHB3x", 13, 1, 4) + struct.pack("<HH", 0, 0)
    ng = tmp_path / "fcs.pcapng"
    idb_fcs = _block("<", 1, struct.pack("<HHI", 1, 0, 0) + opts)
    ng.write_bytes(shb("<") + idb_fcs + epb("<", 0, 5, frame + fcs))
    got = load(str(ng))
    assert got.lengths.tolist() == [64] and got.fcs_stripped == 1
    assert got.blob == frame

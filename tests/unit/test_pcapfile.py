"""The capture reader against real captures from other projects, and broken ones."""

import os
import struct

import pytest

from harness.errors import NtaError
from harness.pcapfile import CaptureError, check_replayable, read_capture

MALFORMED = {
    "libpcap-invalid-version-1.pcap": ("unsupported pcap savefile version 1.4", 4, None),
    "suricata-bug6875-fuzz.pcap": ("captured length 1409179648", 228, 2),
}


def test_counts_match_the_manifest(pcaps, pcap_manifest):
    checked = 0
    for name, row in pcap_manifest.items():
        if name in MALFORMED:
            continue
        info = read_capture(os.path.join(pcaps, name))
        assert info.packets == int(row["packet_count"]), name
        assert info.format.startswith(row["format"].replace("ns-pcap", "pcap")), (name, info.format)
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_captures_name_what_and_where(pcaps, name):
    what, offset, record = MALFORMED[name]
    with pytest.raises(CaptureError) as ei:
        read_capture(os.path.join(pcaps, name))
    err = ei.value
    assert what in str(err)
    assert err.offset == offset and err.record == record
    assert str(err).startswith(os.path.join(pcaps, name))
    assert "\n" not in str(err)


def test_facts_of_real_captures(pcaps):
    vlan = read_capture(os.path.join(pcaps, "suricata-datasets06-vlan.pcap"))
    assert vlan.max_tagged > 0 and vlan.max_untagged == 0  # every frame carries an 802.1Q tag
    trunc = read_capture(os.path.join(pcaps, "zeek-truncated-header-snaplen68.pcap"))
    assert trunc.truncated == trunc.packets == 24 and trunc.max_caplen == 68
    ns = read_capture(os.path.join(pcaps, "tcpdump-handshake-nano-sll.pcap"))
    assert ns.format == "pcap-ns" and ns.linktypes == {113: 3}
    ng = read_capture(os.path.join(pcaps, "pcpp-pcapng-example.pcapng"))
    assert ng.linktypes == {1: 59, 113: 100}
    big = read_capture(os.path.join(pcaps, "suricata-smb2-gro-frames.pcap"), want_sizes=True)
    assert big.max_caplen == 5858 and len(big.sizes) == 792 and sum(big.sizes) == big.bytes
    assert sum(1 for s in big.sizes if s > 1518) == 117  # the manifest's count of oversize frames


@pytest.mark.parametrize("name, needle", [
    ("tcpdump-empty.pcapng", "holds no packets"),
    ("pcpp-raw-ip.pcap", "RAW(101)"),
    ("tcpdump-handshake-nano-sll.pcap", "LINUX_SLL(113)"),
    ("pcpp-pcapng-example.pcapng", "LINUX_SLL(113)"),
    ("suricata-smb2-gro-frames.pcap", "use --mtu 5844 or more"),
    ("ndpi-reddit-ipv6.pcap", "use --mtu 2848 or more"),
])
def test_not_replayable_on_a_1500_veth(pcaps, name, needle):
    info = read_capture(os.path.join(pcaps, name))
    with pytest.raises(NtaError, match=None) as ei:
        check_replayable(info, 1500)
    assert needle in str(ei.value)


def test_mtu_check_allows_a_vlan_tag(pcaps):
    # 1518-byte tagged frames fit MTU 1500 (veth adds VLAN_HLEN); the capture's frames are 84 bytes,
    # so 70 is the smallest MTU that carries them.
    info = read_capture(os.path.join(pcaps, "suricata-datasets06-vlan.pcap"))
    assert info.mtu_needed() == info.max_tagged - 18
    check_replayable(info, info.mtu_needed())
    with pytest.raises(NtaError):
        check_replayable(info, info.mtu_needed() - 1)


def test_replayable(pcaps):
    for name in ("tcpreplay-test.pcap", "ndpi-synscan.pcap", "tcpdump-802.1ad-qinq.pcap",
                 "zeek-truncated-header-snaplen68.pcap"):
        check_replayable(read_capture(os.path.join(pcaps, name)), 1500)


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
    a, b = read_capture(src), read_capture(str(tmp_path / "be.pcap"))
    assert (a.packets, a.bytes, a.max_caplen, a.first_ts) == (b.packets, b.bytes, b.max_caplen, b.first_ts)


@pytest.mark.parametrize("cut, needle", [
    (10, "truncated pcap file header"),
    (24 + 8, "truncated record header"),
    (24 + 16 + 10, "runs past the end of the file"),
])
def test_truncated_files(pcaps, tmp_path, cut, needle):
    data = open(os.path.join(pcaps, "tcpreplay-test.pcap"), "rb").read()
    p = tmp_path / "cut.pcap"
    p.write_bytes(data[:cut])
    with pytest.raises(CaptureError, match=needle):
        read_capture(str(p))


def test_not_a_capture(tmp_path):
    cases = {
        "text.pcap": b"this is not a capture file at all\n",
        "tiny.pcap": b"ab",
        "empty.pcap": b"",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CaptureError, match="not a pcap or pcapng file"):
            read_capture(str(tmp_path / name))
    with pytest.raises(CaptureError, match="no such file"):
        read_capture(str(tmp_path / "missing.pcap"))
    with pytest.raises(CaptureError, match="is a directory"):
        read_capture(str(tmp_path))


def test_pcapng_bad_block_length(pcaps, tmp_path):
    data = bytearray(open(os.path.join(pcaps, "pcpp-pcapng-example.pcapng"), "rb").read())
    shb_len = struct.unpack_from("<I", data, 4)[0]
    struct.pack_into("<I", data, shb_len + 4, 0xFFFF0)  # the block after the SHB claims ~1 MB
    (tmp_path / "bad.pcapng").write_bytes(bytes(data))
    with pytest.raises(CaptureError, match="bad length") as ei:
        read_capture(str(tmp_path / "bad.pcapng"))
    assert ei.value.offset == shb_len

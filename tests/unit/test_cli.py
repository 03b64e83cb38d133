"""The CLI as users meet it: help, bad flags, bad captures, no root. One line, non-zero, nothing left."""

import json
import os
import shutil
import subprocess

import pytest

from tests.conftest import ROOT, assert_one_line_error, nta


def nta_namespaces():
    try:
        return sorted(n for n in os.listdir("/run/netns") if n.startswith("nta-"))
    except FileNotFoundError:
        return []


@pytest.fixture
def nothing_left_behind():
    before = nta_namespaces()
    yield
    assert nta_namespaces() == before


def test_help_lists_every_command():
    out = nta("--help", check=True).stdout
    for cmd in ("run", "inspect", "topo", "pcap", "doctor"):
        assert cmd in out
    for cmd in ("run", "inspect", "topo", "pcap", "doctor"):
        assert "usage: nta " + cmd in nta(cmd, "--help", check=True).stdout
    assert "examples:" in nta("run", "--help").stdout


@pytest.mark.parametrize("args, needle", [
    (["run", "--pcap", "x.pcap", "--loops", "many"], "--loops: invalid integer 'many'"),
    (["run", "--pcap", "x.pcap", "--loops", "0"], "--loops: must be 1 or more"),
    (["run", "--pcap", "x.pcap", "--pps", "-5"], "--pps: must be positive"),
    (["run", "--pcap", "x.pcap", "--topspeed", "--pps", "5"], "not allowed with argument"),
    (["run", "--pcap", "x.pcap", "--mode", "turbo"], "invalid choice: 'turbo'"),
    (["run", "--pcap", "x.pcap", "--replayer", "scapy"], "invalid choice: 'scapy'"),
    (["run", "--pcap", "x.pcap", "--batch", "0"], "--batch: must be 1 or more"),
    (["inspect"], "required: FILE"),
    (["run", "--loops", "3"], "required: --pcap"),
    (["run", "--bogus"], "unrecognized arguments: --bogus"),
    (["frobnicate"], "invalid choice"),
    (["topo"], "required"),
])
def test_bad_flags_are_one_line_usage_errors(args, needle, nothing_left_behind):
    assert_one_line_error(nta(*args), needle, code=2)


def test_bad_captures_are_refused_before_anything_is_made(pcaps, tmp_path, nothing_left_behind):
    """Exit status 2, one line naming the file and what is wrong (and where), nothing created."""
    from tests.unit.test_pcapfile import pcap_bytes

    notcap = tmp_path / "notes.pcap"
    notcap.write_text("hello\n")
    radiotap = tmp_path / "radiotap.pcap"
    radiotap.write_bytes(pcap_bytes(127, [b"\0\0\x08\0\0\0\0\0" + b"\x80" * 40] * 2))
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(open(os.path.join(pcaps, "tcpreplay-test.pcap"), "rb").read()[:5000])
    cases = [
        (str(cut), "runs past the end of the file", "--strict"),
    ]
    for path, needle, flag in cases:
        for driver in ("tcpreplay", "builtin"):
            line = assert_one_line_error(nta("run", "--pcap", path, "--replayer", driver, flag), needle, code=2)
            assert line.startswith(f"nta: error: {path}")
    cases = [
        (str(tmp_path / "missing.pcap"), "no such file"),
        (str(notcap), "not a pcap or pcapng file"),
        (os.path.join(pcaps, "libpcap-invalid-version-1.pcap"), "unsupported pcap savefile version 1.4"),
        (os.path.join(pcaps, "suricata-bug6875-fuzz.pcap"), "record 2, byte 228"),
        (str(radiotap), "none of its 2 packets can be replayed on a veth: 2 link type "
                        "IEEE802_11_RADIOTAP(127)"),
    ]
    for path, needle in cases:
        for driver in ("tcpreplay", "builtin"):
            line = assert_one_line_error(nta("run", "--pcap", path, "--replayer", driver), needle, code=2)
            assert line.startswith(f"nta: error: {path}")


def test_an_empty_capture_replays_nothing_and_says_so(pcaps, tmp_path, nothing_left_behind):
    out = tmp_path / "empty.json"
    path = os.path.join(pcaps, "tcpdump-empty.pcapng")
    proc = nta("run", "--pcap", path, "--json", str(out))
    assert proc.returncode == 0 and proc.stderr == ""
    assert f"{path} holds no packets: nothing to replay" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["expected_packets"] == 0 and doc["capture"]["packets"] == 0


def test_bad_values_found_before_root_is_needed(tmp_path, imix_pcap, nothing_left_behind):
    assert_one_line_error(nta("run", "--pcap", imix_pcap, "--mtu", "40"), "bad MTU 40")
    assert_one_line_error(nta("run", "--pcap", imix_pcap, "--json", str(tmp_path / "no" / "x.json")),
                          "does not exist")
    assert_one_line_error(nta("run", "--pcap", imix_pcap, "--name", "Bad Name!"), "bad topology name")


@pytest.mark.parametrize("flags, needle", [
    (["--queues", "2"], "--queues 2: lo has 1 RX queue"),
    (["--rx", "afxdp"], "--rx afxdp: frames of MTU 65536"),
    (["--free-on", "other"], "--free-on other: only with --controller"),
    (["--xdp-mode", "zerocopy"], "--xdp-mode zerocopy: only with --rx afxdp"),
])
def test_what_a_named_interface_cannot_take(flags, needle, nothing_left_behind):
    """Refused before anything is attached (lo is named, never attached to)."""
    assert_one_line_error(nta("run", "--iface", "lo", "--no-replay", *flags), needle)


def _as_non_root(*args):
    """Run nta in a user namespace: it sees uid 65534, as an unprivileged user does."""
    if not shutil.which("unshare"):
        pytest.skip("unshare (util-linux) is missing")
    import sys
    return subprocess.run(["unshare", "--user", sys.executable, "-m", "harness", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_not_root_is_one_line(imix_pcap, nothing_left_behind):
    assert_one_line_error(_as_non_root("run", "--pcap", imix_pcap), "nta run needs root", "sudo")
    assert_one_line_error(_as_non_root("topo", "up"), "nta topo up needs root")
    assert_one_line_error(_as_non_root("topo", "down"), "nta topo down needs root")
    assert_one_line_error(_as_non_root("doctor", "--quiet"), "not root")


def test_setup_refuses_non_root_in_one_line():
    proc = subprocess.run(["unshare", "--user", "bash", os.path.join(ROOT, "scripts", "setup-system.sh")],
                          capture_output=True, text=True, timeout=60)
    assert_one_line_error(proc, "setup: error: must run as root")


def test_inspect_prints_and_writes_the_same_summary(pcaps, tmp_path):
    out = tmp_path / "info.json"
    ng, v6 = os.path.join(pcaps, "pcpp-pcapng-example.pcapng"), os.path.join(pcaps, "ndpi-reddit-ipv6.pcap")
    proc = nta("inspect", ng, v6, "--json", str(out), check=True)
    text = proc.stdout
    assert "pcapng, little-endian, 2 interfaces" in text
    assert "EN10MB(1) x59, LINUX_SLL(113) x100" in text
    assert "converted    100 given an Ethernet header" in text
    assert "truncated    39" in text
    assert "IPv4, IPv6   0, 1,942" in text and "MTU          2848 (chosen; the frames need 2848)" in text
    doc = json.loads(out.read_text())
    a, b = doc["captures"]
    assert (a["packets"], a["frames"], a["converted"], a["truncated"]) == (159, 159, 100, 39)
    assert a["linktypes"] == {"EN10MB(1)": 59, "LINUX_SLL(113)": 100}
    assert sum(b["sizes_hist"].values()) == b["frames"] == 1942 and b["sizes_hist"]["1519-9018"] == 10
    # the old spelling still works
    assert json.loads(nta("pcap", "info", ng, "--json", "-", check=True).stdout)["captures"] == [a]


def test_inspect_a_planned_mtu_counts_what_it_skips(pcaps):
    doc = json.loads(nta("inspect", os.path.join(pcaps, "suricata-smb2-gro-frames.pcap"), "--mtu", "1500",
                         "--json", "-", check=True).stdout)
    c = doc["captures"][0]
    assert (c["frames"], c["skipped"]) == (675, {"larger than MTU 1500 carries": 117})


def test_inspect_a_malformed_file_among_good_ones(pcaps):
    bad = os.path.join(pcaps, "suricata-bug6875-fuzz.pcap")
    proc = nta("inspect", os.path.join(pcaps, "ndpi-synscan.pcap"), bad)
    assert proc.returncode == 2
    assert "ndpi-synscan.pcap" in proc.stdout and "2,011 frames" in proc.stdout
    assert proc.stderr == f"nta: error: {bad} (record 2, byte 228): captured length 1409179648 is larger " \
                          "than the maximum 262144\n"


def test_ebpf_prints_the_program_and_its_flags():
    out = nta("run", "--ebpf", "--action", "pass", check=True).stdout
    assert "-DNTA_ACTION=NTA_ACT_PASS" in out
    assert "int nta_xdp_count(struct xdp_md *ctx)" in out


def test_a_timestamp_jump_is_refused_at_capture_timing(pcaps, nothing_left_behind):
    """pcpp-pcapng-example.pcapng's last record is stamped ~584,000 years after its first."""
    proc = nta("run", "--pcap", os.path.join(pcaps, "pcpp-pcapng-example.pcapng"))
    assert_one_line_error(proc, "one loop would take", "replay it with --topspeed")


def test_inspect_a_file_cut_short(pcaps, tmp_path):
    """One warning line, exit 0, the complete records; --strict: the one-line error and exit 2."""
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(open(os.path.join(pcaps, "tcpreplay-test.pcap"), "rb").read()[:5000])
    proc = nta("inspect", str(cut), "--json", str(tmp_path / "i.json"), check=True)
    warning = proc.stderr.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith(f"nta: warning: {cut} is cut short: record 22 at byte 3788")
    assert "1,212 bytes were ignored, the 21 complete records are used" in warning[0]
    doc = json.loads((tmp_path / "i.json").read_text())["captures"][0]
    assert doc["packets"] == 21 and doc["cut_short"]["bytes_ignored"] == 1212
    assert_one_line_error(nta("inspect", "--strict", str(cut)), "record 22, byte 3788", code=2)


def test_inspect_the_smallest_frame(pcaps):
    text = nta("inspect", os.path.join(pcaps, "ndpi-synscan.pcap"), check=True).stdout
    assert "2,011 frames, 116,672 bytes, 58..60 bytes each" in text  # the smallest is not 0


def test_ebpf_prints_the_program_the_run_would_load():
    plain = nta("run", "--ebpf", check=True).stdout
    meta = nta("run", "--ebpf", "--controller", "--ring-pages", "8", check=True).stdout
    assert plain.startswith("/* nta_xdp_count.c, compiled by BCC with: ") and "int nta_xdp_count(" in plain
    assert meta.startswith("/* nta_xdp_meta.c, compiled by BCC with: ") and "int nta_xdp_meta(" in meta
    assert "-DNTA_RING_PAGES=8" in meta.splitlines()[0] and "-DNTA_EXPECT_SHARED_VERSION=" in meta

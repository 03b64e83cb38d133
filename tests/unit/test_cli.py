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
    for cmd in ("run", "topo", "pcap", "doctor"):
        assert cmd in out
    for cmd in ("run", "topo", "pcap", "doctor"):
        assert "usage: nta " + cmd in nta(cmd, "--help", check=True).stdout
    assert "examples:" in nta("run", "--help").stdout


@pytest.mark.parametrize("args, needle", [
    (["run", "--pcap", "x.pcap", "--loops", "many"], "--loops: invalid integer 'many'"),
    (["run", "--pcap", "x.pcap", "--loops", "0"], "--loops: must be 1 or more"),
    (["run", "--pcap", "x.pcap", "--pps", "-5"], "--pps: must be positive"),
    (["run", "--pcap", "x.pcap", "--topspeed", "--pps", "5"], "not allowed with argument"),
    (["run", "--pcap", "x.pcap", "--mode", "turbo"], "invalid choice: 'turbo'"),
    (["run", "--loops", "3"], "required: --pcap"),
    (["run", "--bogus"], "unrecognized arguments: --bogus"),
    (["frobnicate"], "invalid choice"),
    (["topo"], "required"),
])
def test_bad_flags_are_one_line_usage_errors(args, needle, nothing_left_behind):
    assert_one_line_error(nta(*args), needle, code=2)


def test_bad_captures_are_refused_before_anything_is_made(pcaps, tmp_path, nothing_left_behind):
    notcap = tmp_path / "notes.pcap"
    notcap.write_text("hello\n")
    cases = [
        (str(tmp_path / "missing.pcap"), "no such file"),
        (str(notcap), "not a pcap or pcapng file"),
        (os.path.join(pcaps, "libpcap-invalid-version-1.pcap"), "unsupported pcap savefile version 1.4"),
        (os.path.join(pcaps, "suricata-bug6875-fuzz.pcap"), "record 2, byte 228"),
        (os.path.join(pcaps, "tcpdump-empty.pcapng"), "holds no packets"),
        (os.path.join(pcaps, "pcpp-raw-ip.pcap"), "only Ethernet (EN10MB)"),
        (os.path.join(pcaps, "suricata-smb2-gro-frames.pcap"), "use --mtu 5844 or more"),
    ]
    for path, needle in cases:
        line = assert_one_line_error(nta("run", "--pcap", path), needle)
        assert line.startswith(f"nta: error: {path}")


def test_bad_values_found_before_root_is_needed(tmp_path, imix_pcap, nothing_left_behind):
    assert_one_line_error(nta("run", "--pcap", imix_pcap, "--mtu", "40"), "bad MTU 40")
    assert_one_line_error(nta("run", "--pcap", imix_pcap, "--json", str(tmp_path / "no" / "x.json")),
                          "does not exist")
    assert_one_line_error(nta("run", "--pcap", imix_pcap, "--name", "Bad Name!"), "bad topology name")


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


def test_pcap_info_json(pcaps, tmp_path):
    out = tmp_path / "info.json"
    proc = nta("pcap", "info", os.path.join(pcaps, "tcpreplay-test.pcap"),
               os.path.join(pcaps, "ndpi-synscan.pcap"), "--json", str(out), check=True)
    assert "tcpreplay-test.pcap" in proc.stdout and "179" in proc.stdout
    doc = json.loads(out.read_text())
    assert [c["packets"] for c in doc["captures"]] == [179, 2011]
    assert doc["captures"][0]["linktypes"] == {"EN10MB(1)": 179}


def test_ebpf_prints_the_program_and_its_flags():
    out = nta("run", "--ebpf", "--action", "pass", check=True).stdout
    assert "-DNTA_ACTION=NTA_ACT_PASS" in out
    assert "int nta_xdp_count(struct xdp_md *ctx)" in out

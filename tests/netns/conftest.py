"""netns tests: root, real namespaces, real veth pairs, real XDP programs.

Each test must leave the machine as it found it: no nta-* namespace, no owner
record, no BPF program or map of the harness loaded (every one is named
nta_*: harness.xdp.PREFIX), no process of the harness or its senders. The
autouse fixture checks that after every test
(and cleans up, so one failure does not cascade). ``tag`` hands each test a
topology name of its own.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import time

import pytest

from harness import topology
from harness.xdp import PREFIX

pytestmark = pytest.mark.netns
_tags = itertools.count(1)


def nta_namespaces() -> list[str]:
    try:
        return sorted(n for n in os.listdir("/run/netns") if n.startswith(("nta-gen-", "nta-dut-")))
    except FileNotFoundError:
        return []


def _ours(kind: str) -> list[dict]:
    out = subprocess.run(["bpftool", "-j", kind, "show"], capture_output=True, text=True, check=True).stdout
    return [x for x in json.loads(out or "[]") if x.get("name", "").startswith(PREFIX)]


def nta_programs() -> list[dict]:
    """BPF programs of ours loaded in the kernel (bpftool truncates names to 15 characters)."""
    return _ours("prog")


def nta_maps() -> list[dict]:
    """BPF maps of ours (their programs' counters and rings)."""
    return _ours("map")


def harness_processes() -> list[str]:
    """Live processes of the harness or its senders (zombies left out: dead, only not reaped)."""
    found = []
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{d}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in "ZX":
                    continue
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(d) != os.getpid() and ("-m harness run" in cmd or cmd.startswith("/usr/bin/tcpreplay")):
            found.append(f"{d}: {cmd.strip()}")
    return found



def owner_records() -> list[str]:
    try:
        return sorted(os.listdir(topology.STATE_DIR))
    except FileNotFoundError:
        return []


def wait_until(pred, timeout=10.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    return pred()


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/netns/" in str(item.fspath):
            item.add_marker(pytest.mark.netns)


@pytest.fixture(autouse=True)
def root_and_clean():
    if os.geteuid() != 0:
        pytest.skip("needs root: real XDP programs on real veth pairs in new namespaces (sudo make test)")
    if not shutil.which("bpftool"):
        pytest.skip("bpftool is missing ('make setup-test' installs it)")
    assert nta_namespaces() == [], "nta namespaces exist before the test: run 'nta topo down'"
    yield
    left = (nta_namespaces(), owner_records())
    for rec in owner_records():
        topology.remove_namespaces(rec[:-5])
    for ns in nta_namespaces():
        topology.remove_namespaces(ns.split("-", 2)[2])
    gone = wait_until(lambda: not nta_programs() and not nta_maps(), timeout=5.0)
    assert left == ([], []), f"left behind: namespaces {left[0]}, owner records {left[1]}"
    assert gone, f"BPF left loaded: programs {nta_programs()}, maps {nta_maps()}"
    assert wait_until(lambda: not harness_processes(), timeout=5.0), f"processes left: {harness_processes()}"


@pytest.fixture
def tag() -> str:
    """A topology name no other test uses (in this run or a concurrent one)."""
    return f"t{os.getpid() % 100000}-{next(_tags)}"


@pytest.fixture(scope="session")
def ceilings(imix_pcap):
    """What this machine reaches, measured once (tests assume no speed: one that needs a rate held, or
    nothing dropped, asks for a share of these): IMIX by the xdp replayer at top speed (pps and Mbit/s at
    the XDP hook), and frames received through AF_XDP per second when sent at top speed."""
    from harness.replay import ReplayOptions
    from harness.run import RunConfig, run

    if os.geteuid() != 0:
        pytest.skip("needs root")
    out = {}

    def measure(key, **kw):
        if key not in out:
            r = run(RunConfig(pcap=imix_pcap, replay=ReplayOptions(loops=200, topspeed=True), quiet=True,
                              replayer="xdp", **kw))
            if key == "afxdp":
                x = r.consumer["xsk"]
                out[key] = {"pps": x["received"] / max(r.xdp.seconds, 1e-3)}
            else:
                out[key] = {"pps": r.xdp.pps, "mbps": r.xdp.bytes * 8 / 1e6 / max(r.xdp.seconds, 1e-3)}
        return out[key]

    return measure


def live_frame_max() -> int:
    """The longest frame an XDP live frame carries on this kernel, as the harness probes it (3,408 bytes on
    6.18, 3,368 on Debian's 6.1: never a constant)."""
    from harness import cmodule

    return cmodule.load("_traffic_c")[1].nta_xdp_live_max()

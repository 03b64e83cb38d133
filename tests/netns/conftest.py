"""netns tests: root, real namespaces, real veth pairs, real XDP programs.

Each test must leave the machine as it found it: no nta-* namespace, no owner
record, no nta XDP program loaded. The autouse fixture checks that after
every test (and cleans up, so one failure does not cascade).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from harness import topology

pytestmark = pytest.mark.netns
PROG_NAMES = {"nta_xdp_count"}


def nta_namespaces() -> list[str]:
    try:
        return sorted(n for n in os.listdir("/run/netns") if n.startswith(("nta-gen-", "nta-dut-")))
    except FileNotFoundError:
        return []


def nta_programs() -> list[dict]:
    """XDP programs of ours loaded in the kernel (bpftool truncates names to 15 characters)."""
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True).stdout
    return [p for p in json.loads(out or "[]") if p.get("name") in PROG_NAMES]


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
    progs = wait_until(lambda: not nta_programs(), timeout=5.0) or nta_programs()
    assert left == ([], []), f"left behind: namespaces {left[0]}, owner records {left[1]}"
    assert progs is True or progs == [], f"XDP programs left loaded: {progs}"

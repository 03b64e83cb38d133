"""Shared fixtures: the real captures in ../shared/pcaps and a CLI runner.

With CI=true, a skipped test is a failure: CI runs as root with every
capture present, so a skip there means a test that did not run.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys

import pytest
from hypothesis import settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PCAPS = os.path.join(os.path.dirname(ROOT), "shared", "pcaps")
IMIX = os.path.join(ROOT, "build", "imix.pcap")
IN_CI = os.environ.get("CI", "").lower() == "true"

# CI explores the same examples every run (a failure there is reproducible);
# developers' runs explore new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if IN_CI:
    settings.load_profile("ci")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if IN_CI and rep.skipped and not hasattr(rep, "wasxfail"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"skipped under CI=true, which counts as a failure: {reason}"


def manifest() -> dict[str, dict]:
    """The shared captures' manifest, by file name ({} when ../shared/pcaps is missing: the tests that
    use the pcaps fixture then say so)."""
    if not os.path.isfile(os.path.join(PCAPS, "MANIFEST.tsv")):
        return {}
    with open(os.path.join(PCAPS, "MANIFEST.tsv"), newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f, delimiter="\t")}


@pytest.fixture(scope="session")
def pcaps() -> str:
    if not os.path.isfile(os.path.join(PCAPS, "MANIFEST.tsv")):
        pytest.skip(f"the shared captures are not at {PCAPS}")
    return PCAPS


@pytest.fixture(scope="session")
def pcap_manifest(pcaps) -> dict[str, dict]:
    return manifest()


@pytest.fixture(scope="session")
def imix_pcap(tmp_path_factory) -> str:
    """The bundled IMIX capture: build/imix.pcap when 'make build' made it, else a fresh one."""
    if os.path.isfile(IMIX):
        return IMIX
    from harness.imix import write_imix

    path = str(tmp_path_factory.mktemp("imix") / "imix.pcap")
    write_imix(path)
    return path


def nta(*args: str, check: bool = False, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Run the CLI as a user would, in a child process. Past ``timeout`` it is ended as a user's Ctrl-C
    would end it (SIGINT: it removes what it made), and killed only if that does not end it."""
    with subprocess.Popen([sys.executable, "-m", "harness", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, cwd=ROOT, **kw) as child:
        try:
            out, err = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGINT)
            try:
                out, err = child.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                out, err = child.communicate()
            raise AssertionError(f"nta {' '.join(args)} did not end in {timeout:g} s:\n{out}\n{err}") from None
    proc = subprocess.CompletedProcess(child.args, child.returncode, out, err)
    if check and proc.returncode != 0:
        raise AssertionError(f"nta {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str, code: int = 1) -> str:
    """A user error: the given exit status, one line on stderr, no traceback, naming what and where."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]

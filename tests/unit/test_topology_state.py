"""Ownership records: live, stale and persistent, without touching the kernel."""

import json
import os
import subprocess

import pytest

from harness import topology, topostate
from harness.errors import NtaError


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(topostate, "STATE_DIR", str(tmp_path))  # where the owner records are read and written
    monkeypatch.setattr(topostate.netns, "listnetns", lambda: [])
    return tmp_path


def write(state_dir, tag, **record):
    (state_dir / f"{tag}.json").write_text(json.dumps({"tag": tag, **record}))


def dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_states(state_dir):
    me = os.getpid()
    write(state_dir, "mine", pid=me, starttime=topology.proc_starttime(me), persistent=False, mtu=1500)
    write(state_dir, "gone", pid=dead_pid(), starttime=1, persistent=False, mtu=1500)
    write(state_dir, "reused", pid=me, starttime=topology.proc_starttime(me) - 1, persistent=False)
    write(state_dir, "kept", pid=None, starttime=None, persistent=True, mtu=9000)
    (state_dir / "junk.json").write_text("{not json")
    states = {t.tag: t.state for t in topology.list_topologies(probe=False)}
    assert states == {"mine": "live", "gone": "stale", "reused": "stale", "kept": "persistent",
                      "junk": "stale"}


def test_remove_stale_removes_only_stale_records(state_dir):
    write(state_dir, "gone", pid=dead_pid(), starttime=1, persistent=False)
    write(state_dir, "kept", pid=None, starttime=None, persistent=True)
    removed = topology.remove_stale()
    assert [t.tag for t, ended in removed] == ["gone"] and removed[0][1] == []
    assert sorted(os.listdir(state_dir)) == ["kept.json"]


def test_proc_starttime():
    assert topology.proc_starttime(os.getpid()) > 0
    assert topology.proc_starttime(dead_pid()) == 0


@pytest.mark.parametrize("tag", ["", "-x", "A", "a b", "x" * 32, "../etc"])
def test_bad_tags(tag):
    with pytest.raises(NtaError, match="bad topology name"):
        topology.check_tag(tag)


@pytest.mark.parametrize("mtu", [0, 67, 65536])
def test_bad_mtu(mtu):
    with pytest.raises(NtaError, match=f"bad MTU {mtu}"):
        topology.check_mtu(mtu)

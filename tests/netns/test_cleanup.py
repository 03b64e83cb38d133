"""Nothing is left behind: after an exception, Ctrl-C, SIGTERM, and kill -9 of a run."""

import contextlib
import os
import signal
import subprocess
import sys

import pytest

import harness.xdp
from harness import cpus, topology
from harness.replay import ReplayOptions
from harness.run import RunConfig, run
from harness.topology import list_topologies
from tests.conftest import ROOT, assert_one_line_error, nta
from tests.netns.conftest import harness_processes, nta_maps, nta_namespaces, nta_programs, wait_until


def tcpreplay_pids() -> set[int]:
    pids = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().strip() == "tcpreplay":
                        pids.add(int(d))
            except OSError:
                pass
    return pids


def long_run(tag, *extra):
    """A run that would last a minute: IMIX looped at a modest rate."""
    return subprocess.Popen(
        [sys.executable, "-m", "harness", "run", "--pcap", "build/imix.pcap", "--loops", "1000",
         "--pps", "20000", "--name", tag, "--quiet", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_attached(tag, proc, replayer="tcpreplay"):
    def attached():
        assert proc.poll() is None, proc.communicate()
        return any(t.tag == tag and t.xdp for t in list_topologies())
    assert wait_until(attached, timeout=30), f"run {tag} never attached XDP"
    if replayer == "tcpreplay":
        assert wait_until(tcpreplay_pids, timeout=10), "tcpreplay never started"


@pytest.fixture(autouse=True)
def imix_built(imix_pcap, monkeypatch):
    # long_run() replays build/imix.pcap; 'make test' builds it first.
    if not os.path.exists(os.path.join(ROOT, "build", "imix.pcap")):
        pytest.skip("build/imix.pcap is missing: run 'make build'")


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_exception_mid_run(pcaps, monkeypatch, exc, tag):
    seen = {}

    def stats(self):  # the first interval sample, with tcpreplay mid-way through 179,000 packets
        seen["tcpreplay"] = tcpreplay_pids()
        seen["namespaces"] = nta_namespaces()
        seen["programs"] = nta_programs()
        raise exc

    monkeypatch.setattr(harness.xdp.XdpProgram, "stats", stats)
    with pytest.raises(type(exc)):
        run(RunConfig(pcap=os.path.join(pcaps, "tcpreplay-test.pcap"), interval=0.2,
                      replay=ReplayOptions(loops=1000, pps=20000), quiet=True, tag=tag))
    # It was all there when the exception struck ...
    assert seen["tcpreplay"] and len(seen["namespaces"]) == 2 and len(seen["programs"]) == 1
    # ... and none of it is now (the fixture also checks the programs are unloaded).
    assert nta_namespaces() == []
    assert wait_until(lambda: not tcpreplay_pids(), timeout=5)


@pytest.mark.parametrize("sig, why", [(signal.SIGINT, "nta: interrupted;"),
                                      (signal.SIGTERM, "nta: interrupted by SIGTERM;")])
def test_signal_mid_run_cleans_up(sig, why, tag):
    proc = long_run(tag)
    wait_attached(tag, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert err.strip().splitlines() == [err.strip()] and err.startswith(why)
    assert nta_namespaces() == []
    assert wait_until(lambda: not tcpreplay_pids(), timeout=5)


def signalled(body: str, tag: str) -> subprocess.CompletedProcess:
    """Run ``body`` (lines of Python indented four spaces, which send the process a signal somewhere) under
    the CLI's handlers in a process of its own, ``tag`` in sys.argv[1]. It prints "interrupted" to stderr
    when the KeyboardInterrupt reaches its end, and what the body prints if the signal was lost."""
    script = ("import json, os, signal, sys\nfrom harness import cli, topology\ncli._install_signal_handlers()\n"
              f"try:\n{body}\n    print('ran on after the signal')\n"
              "except KeyboardInterrupt:\n    print('interrupted', file=sys.stderr)\n")
    return subprocess.run([sys.executable, "-c", script, tag], cwd=ROOT, capture_output=True, text=True, timeout=30)


def test_a_signal_inside_a_netlink_request_waits_for_it_then_ends_the_run(tag):
    """A signal while pyroute2's asyncio loop runs a netlink request: the request ends, then the signal is
    raised. The CI run that failed on it (1 run in 40 of a Ctrl-C at a random moment) printed asyncio's
    tracebacks about async generators it could not close; 2 in 40 lost the signal in pyroute2's bare
    excepts and ran on."""
    done = signalled("""
    with topology.Topology(tag=sys.argv[1]) as topo:
        nl = topo.ipr(topo.gen_ns)
        getattr(nl, "_ipr", nl).asyncore.event_loop.call_soon(os.kill, os.getpid(), signal.SIGINT)
        topo.ifindex(topo.gen_ns, topo.gen_if)""", tag)
    assert (done.stdout, done.stderr) == ("", "interrupted\n")
    assert nta_namespaces() == []


def test_a_signal_while_the_owner_record_is_written_leaves_no_tmp(tag):
    """Its .tmp stayed in /run/nta-harness (1 Ctrl-C in 60 at a random moment of a run)."""
    done = signalled("""
    dump = json.dump
    json.dump = lambda *args, **kwargs: (os.kill(os.getpid(), signal.SIGINT), dump(*args, **kwargs))
    topology.Topology(tag=sys.argv[1]).create()""", tag)
    assert (done.stdout, done.stderr) == ("", "interrupted\n")
    assert [f for f in os.listdir(topology.STATE_DIR) if tag in f] == []
    assert nta_namespaces() == []


@pytest.mark.parametrize("extra", [["--replayer", "builtin"],
                                   ["--replayer", "builtin", "--send", "tx-ring", "--threads", "2"]])
def test_signal_mid_run_of_the_builtin_replayer(extra, tag):
    """The built-in replayer's threads stop within a wait slice; sockets, namespaces and XDP go."""
    proc = long_run(tag, *extra)
    wait_attached(tag, proc, "builtin")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.startswith("nta: interrupted;")
    assert nta_namespaces() == []


def test_kill_9_then_topo_down(tag):
    proc = long_run(tag)
    wait_attached(tag, proc)
    proc.kill()
    proc.communicate(timeout=30)
    # The replayer dies with its parent (PR_SET_PDEATHSIG) ...
    assert wait_until(lambda: not tcpreplay_pids(), timeout=5), "tcpreplay outlived its killed parent"
    # ... but the namespaces, and the XDP program attached in one, are left: a stale topology.
    (info,) = list_topologies()
    assert (info.tag, info.state, info.xdp) == (tag, "stale", "native")
    assert "stale" in nta("topo", "status", check=True).stdout
    out = nta("topo", "down", check=True).stdout
    assert f"removed {tag} (stale): nta-gen-{tag}, nta-dut-{tag}" in out
    assert nta_namespaces() == []
    assert wait_until(lambda: not nta_programs(), timeout=5)


def test_kill_9_then_the_next_run_cleans_up(pcaps, tag):
    proc = long_run(tag)
    wait_attached(tag, proc)
    proc.kill()
    proc.communicate(timeout=30)
    assert len(nta_namespaces()) == 2
    nxt = nta("run", "--pcap", os.path.join(pcaps, "tcpreplay-test.pcap"), "--topspeed", check=True)
    assert f"nta: removed stale topology {tag} (owner pid" in nxt.stderr
    assert "reconciled: sent 179" in nxt.stdout
    assert nta_namespaces() == []
    assert wait_until(lambda: not nta_programs(), timeout=5)


def test_topo_down_spares_a_live_run_unless_forced(tag):
    proc = long_run(tag)
    try:
        wait_attached(tag, proc)
        assert_one_line_error(nta("topo", "down"), f"skipped {tag}: in use by pid")
        assert len(nta_namespaces()) == 2 and proc.poll() is None
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert nta_namespaces() == []


@pytest.mark.parametrize("replayer, extra", [
    ("tcpreplay", ()), ("builtin", ()), ("xdp", ()),
    ("xdp", ("--queues", "2", "--controller", "--hold", "random:100", "--free-on", "other")),
    ("xdp", ("--rx", "afxdp", "--hold", "flow:16")),
])
def test_kill_9_mid_replay_leaves_nothing_once_topo_down_has_run(tag, replayer, extra):
    """Whatever the replayer (and with a ring, controller, pool and reader per queue): after kill -9 and
    'nta topo down', no process of the harness is left, no namespace, no program or map."""
    if "--queues" in extra and len(cpus.usable()) < 2:
        pytest.skip("two queues need two CPUs")
    proc = long_run(tag, "--replayer", replayer, *extra)
    wait_attached(tag, proc, replayer)
    proc.kill()
    proc.communicate(timeout=30)
    nta("topo", "down", check=True)
    assert nta_namespaces() == []
    assert wait_until(lambda: not harness_processes(), timeout=5), harness_processes()
    assert wait_until(lambda: not nta_programs(), timeout=5)
    assert wait_until(lambda: not nta_maps(), timeout=5), nta_maps()


def test_topo_down_ends_what_still_runs_in_a_stale_topology(tag):
    """A process left inside a stale topology's namespace (however it got there: it is not ours to know)
    keeps the namespace alive and may go on sending: 'nta topo down' ends it, says so, then removes it."""
    proc = long_run(tag)
    wait_attached(tag, proc)
    orphan = subprocess.Popen(["ip", "netns", "exec", f"nta-gen-{tag}", "sleep", "300"], start_new_session=True)
    proc.kill()
    proc.communicate(timeout=30)
    out = nta("topo", "down", check=True).stdout
    assert f"ended sleep (pid {orphan.pid}) still inside {tag}" in out, out
    assert f"removed {tag} (stale)" in out
    assert orphan.wait(timeout=5) == -signal.SIGKILL
    assert nta_namespaces() == []


def test_topo_down_removes_an_owner_record_left_half_written_by_a_killed_run(tag):
    """kill -9 cannot be held off: a run killed while writing its owner record leaves the .tmp, which the
    next 'nta topo down' (or nta run) removes once its writer is gone, and not before."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    os.makedirs(topology.STATE_DIR, exist_ok=True)
    gone, live = (os.path.join(topology.STATE_DIR, f"{tag}.json.{pid}.tmp") for pid in (dead.pid, os.getpid()))
    for path in (gone, live):
        with open(path, "w") as f:
            f.write('{"tag": "')
    try:
        out = nta("topo", "down", check=True).stdout
        assert f"removed {tag}.json.{dead.pid}.tmp (an owner record its process did not finish writing)" in out
        assert not os.path.exists(gone) and os.path.exists(live)
    finally:
        for path in (gone, live):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

"""The topology on a real kernel: two namespaces, a veth pair, IPv6 off, MTU, clean removal."""

import os
import socket
import time

import pytest

from harness import nsutil
from harness.errors import NtaError
from harness.topology import Topology, list_topologies
from tests.conftest import assert_one_line_error, nta
from tests.netns.conftest import nta_namespaces, owner_records


def test_up_and_down(tag):
    with Topology(tag, mtu=1400) as t:
        assert nta_namespaces() == [f"nta-dut-{tag}", f"nta-gen-{tag}"]
        assert owner_records() == [f"{tag}.json"]
        for ns, ifname in ((t.gen_ns, t.gen_if), (t.dut_ns, t.dut_if)):
            link = t.link(ns, ifname)
            assert link.get("IFLA_MTU") == 1400
            assert link.get("IFLA_OPERSTATE") == "UP"
            assert nsutil.read_sysctl(ns, f"net/ipv6/conf/{ifname}/disable_ipv6") == "1"
            assert t.ipr(ns).get_addr(family=socket.AF_INET6) == ()
            assert t.ipr(ns).get_addr(family=socket.AF_INET) == ()
            assert [lk.get("IFLA_IFNAME") for lk in t.ipr(ns).get_links()] == ["lo", ifname]
        assert t.xdp_attached() == (None, None)
        (info,) = list_topologies()
        assert (info.tag, info.state, info.mtu) == (tag, "live", 1400)
    assert nta_namespaces() == [] and owner_records() == []


def test_an_idle_pair_carries_no_packets(tag):
    """With IPv6 off and no addresses, the kernel sends nothing of its own: counts can be exact."""
    with Topology(tag) as t:
        time.sleep(2.0)  # router solicitations and MLD reports would go out within this time
        gen, dut = t.link_stats("gen"), t.link_stats("dut")
        assert (gen["tx_packets"], gen["rx_packets"], dut["tx_packets"], dut["rx_packets"]) == (0, 0, 0, 0)


def test_exception_inside_removes_everything(tag):
    with pytest.raises(RuntimeError, match="boom"):
        with Topology(tag):
            assert len(nta_namespaces()) == 2
            raise RuntimeError("boom")
    assert nta_namespaces() == []


def test_keyboard_interrupt_inside_removes_everything(tag):
    with pytest.raises(KeyboardInterrupt):
        with Topology(tag):
            raise KeyboardInterrupt
    assert nta_namespaces() == []


def test_same_name_twice_is_refused_and_the_first_survives(tag):
    with Topology(tag):
        with pytest.raises(NtaError, match="already exists"):
            Topology(tag).create()
        assert nta_namespaces() == [f"nta-dut-{tag}", f"nta-gen-{tag}"]


def test_cli_up_status_down(tag):
    out = nta("topo", "up", "--name", tag, "--mtu", "9000", check=True).stdout
    assert f"nta-gen-{tag}:veth-gen <=> nta-dut-{tag}:veth-dut, mtu 9000" in out
    assert_one_line_error(nta("topo", "up", "--name", tag), "already exists")
    status = nta("topo", "status", check=True).stdout
    assert tag in status and "persistent" in status and "9000" in status
    assert f"removed {tag} (persistent)" in nta("topo", "down", tag, check=True).stdout
    assert nta_namespaces() == []
    assert_one_line_error(nta("topo", "down", tag), f"no topology named {tag}")
    assert nta("topo", "status", check=True).stdout.strip() == "no nta topologies"


@pytest.fixture
def cli_signal_handlers():
    import signal

    from harness.cli import _install_signal_handlers

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    _install_signal_handlers()
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def _fork(child):
    pid = os.fork()
    if pid == 0:
        try:
            child()
        finally:
            os._exit(0)
    return pid


def test_a_forked_child_never_tears_down_its_parents_topology(cli_signal_handlers, tag):
    """pyroute2 forks helpers and stops them with SIGTERM; they must not run our clean-up."""
    import signal

    with Topology(tag) as t:
        # 1. A child told to stop dies of the signal instead of unwinding through our frames.
        pid = _fork(lambda: time.sleep(30))
        time.sleep(0.2)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
        # 2. Even a child that does unwind (or calls destroy) leaves the parent's topology alone.
        pid = _fork(t.destroy)
        assert os.waitpid(pid, 0)[1] == 0
        assert nta_namespaces() == [f"nta-dut-{tag}", f"nta-gen-{tag}"]
        assert owner_records() == [f"{tag}.json"]
        assert t.link_stats("gen")["tx_packets"] == 0  # the parent's netlink sockets still answer
    assert nta_namespaces() == []

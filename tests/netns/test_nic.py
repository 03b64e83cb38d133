"""nta run --iface on an interface the harness did not make: every RX queue, AF_XDP, what the NIC is, and
the interface left as found.

The test makes its own lab as a user would: two namespaces and a veth pair with 2 queues between them
(never an interface of the root namespace), and a sender that is a process of its own (tcpreplay, whose
frames the veth spreads over its queues by flow hash).
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from harness import cpus, nic, nsutil
from harness.replay import Replayer, ReplayOptions
from harness.xdp import XdpProgram
from tests.conftest import ROOT, assert_one_line_error, nta
from tests.netns.conftest import wait_until

QUEUES = 2
LOOPS = 5


class Lab:
    """Namespaces lab-gen-TAG and lab-dut-TAG, a veth pair of QUEUES queues between them, both ends up."""

    def __init__(self, tag: str):
        self.gen_ns, self.dut_ns = f"lab-gen-{tag}", f"lab-dut-{tag}"
        self.gen_if, self.dut_if = "lab0", "lab1"

    def __enter__(self) -> "Lab":
        for ns in (self.gen_ns, self.dut_ns):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            for conf in ("all", "default"):  # no IPv6 neighbour discovery: the sender's frames are all there is
                nsutil.write_sysctl(ns, f"net/ipv6/conf/{conf}/disable_ipv6", "1")
        q = str(QUEUES)
        subprocess.run(["ip", "link", "add", self.gen_if, "numtxqueues", q, "numrxqueues", q, "netns", self.gen_ns,
                        "type", "veth", "peer", "name", self.dut_if, "numtxqueues", q, "numrxqueues", q,
                        "netns", self.dut_ns], check=True)
        for ns, ifname in ((self.gen_ns, self.gen_if), (self.dut_ns, self.dut_if)):
            subprocess.run(["ip", "-n", ns, "link", "set", ifname, "up"], check=True)
        return self

    def __exit__(self, *exc) -> None:
        for ns in (self.gen_ns, self.dut_ns):
            subprocess.run(["ip", "netns", "del", ns], check=False)

    def attached(self):
        return nic.describe(self.dut_if, self.dut_ns).attached

    def start(self, tmp_path, *extra):
        """nta run on the dut end, once it is ready: its program on, and (the interval lines' header out)
        its rings or sockets made. Its output is read on a thread (proc.lines)."""
        out = tmp_path / "nic.json"
        proc = subprocess.Popen([sys.executable, "-m", "harness", "run", "--iface", self.dut_if, "--netns",
                                 self.dut_ns, "--no-replay", "--interval", "5", "--json", str(out), *extra], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc.lines = []
        proc.reader = threading.Thread(target=lambda: proc.lines.extend(proc.stdout), daemon=True)
        proc.reader.start()
        ready = wait_until(lambda: any(line.split()[:1] == ["time"] for line in list(proc.lines))
                           or proc.poll() is not None, timeout=60)
        assert ready and proc.poll() is None, proc.stderr.read() if proc.poll() is not None else "not ready"
        return proc, out

    def send(self, pcap: str):
        return Replayer(self.gen_ns, self.gen_if, pcap, ReplayOptions(pps=5000, loops=LOOPS)).start().finish()


def stop(proc, signals: int = 1) -> tuple[str, str]:
    """Ctrl-C (``signals`` times in a row); what it printed, on stdout and stderr."""
    for _ in range(signals):
        proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    proc.reader.join(timeout=10)
    return "".join(proc.lines), proc.stderr.read()


@pytest.mark.parametrize("extra", [
    ("--controller", "--hold", "random:300"),
    ("--rx", "afxdp", "--hold", "random:300", "--free-on", "other"),
], ids=["metadata", "afxdp"])
def test_every_queue_of_a_named_interface_reconciles(tag, tmp_path, imix_pcap, extra):
    """All of the interface's RX queues are taken without being told, each with its own ring or socket,
    controller and pool: every queue reconciles exactly, and the queues add up to what was sent."""
    if "--free-on" in extra and len(cpus.usable()) < 2:
        pytest.skip("frees on another CPU need two CPUs")
    with Lab(tag) as lab:
        proc, out = lab.start(tmp_path, *extra)
        sent = lab.send(imix_pcap)
        time.sleep(0.3)  # the last frames reach XDP; the run then drains what is in flight
        stdout, stderr = stop(proc)
        assert proc.returncode == 0, stderr
        doc = json.loads(out.read_text())
        assert doc["nic"]["driver"] == "veth" and doc["nic"]["rx_queues"] == QUEUES
        assert doc["config"]["queues"] == QUEUES and len(doc["queues"]) == QUEUES
        qs = doc["queues"]
        assert sent.sent == sum(q["xdp"]["packets"] for q in qs) == doc["points"]["xdp"]["packets"]
        assert all(q["xdp"]["packets"] > 0 for q in qs), "the veth spread the flows over both queues"
        assert all(q["reconciled"] for q in qs) and doc["reconciliation"]["queues"]["reconciled"]
        assert all(q["handled"] + (q["xsk"]["rx_dropped"] + q["xsk"]["rx_ring_full"] if q["xsk"] else 0)
                   + q["ring"]["lost"] == q["xdp"]["packets"] for q in qs)
        assert doc["reconciled"] is True and "queues reconciled" in stdout
        if "afxdp" in extra:  # zero-copy was asked for on every socket; veth has none, the kernel said so
            socks = doc["controller"]["xsk"]["sockets"]
            # both layouts were asked for in zero-copy mode (aligned pages after unaligned chunks), and the copy
            # mode that followed has unaligned chunks
            assert socks == [{"mode": "copy", "zerocopy_refused": os.strerror(95), "chunks": "unaligned",
                              "unaligned_refused": None}] * QUEUES
            assert "AF_XDP sockets: all sockets copy mode (zero-copy refused: Operation not supported)" in stdout
            assert doc["controller"]["reader"]["freed"] == sum(q["frees"] for q in qs)
        assert lab.attached() == (None, None)


def test_zerocopy_is_refused_in_one_line_where_the_driver_has_none(tag):
    with Lab(tag) as lab:
        assert_one_line_error(nta("run", "--iface", lab.dut_if, "--netns", lab.dut_ns, "--no-replay", "--rx", "afxdp",
                                  "--xdp-mode", "zerocopy", "--duration", "1"), "zero-copy AF_XDP")
        assert lab.attached() == (None, None)


def test_a_program_already_attached_is_never_replaced(tag):
    with Lab(tag) as lab, XdpProgram(lab.dut_ns, lab.dut_if, mode="generic"):
        before = lab.attached()
        assert before[0] == "generic"
        assert_one_line_error(nta("run", "--iface", lab.dut_if, "--netns", lab.dut_ns, "--no-replay", "--duration",
                                  "1"), f"already has an XDP program (generic, prog id {before[1]})", "never replaces")
        assert lab.attached() == before


def test_doctor_describes_the_interface(tag):
    with Lab(tag) as lab:
        out = nta("doctor", "--iface", lab.dut_if, "--netns", lab.dut_ns, check=True).stdout
        assert f"{lab.dut_if} [{lab.dut_ns}]: ifindex" in out and f"driver veth, {QUEUES} RX queues, MTU 1500" in out
        features = nic.describe(lab.dut_if, lab.dut_ns).xdp_features
        assert ("XDP features: unknown (kernel < 6.3)" if features is None else "basic, redirect") in out
        assert "attached: nothing" in out and "queue CPUs: 0->" in out


def test_left_as_found_after_ctrl_c_and_after_kill_9(tag, tmp_path):
    """Ctrl-C: the program detached on the way out. kill -9: the program stays on the device (netlink
    attachments outlive their process) until 'nta topo down' detaches it; sockets and UMEM went with the
    process, and the channels were never touched."""
    with Lab(tag) as lab:
        channels = nic.driver_and_channels(lab.dut_if, lab.dut_ns)
        proc, _ = lab.start(tmp_path, "--rx", "afxdp")
        stop(proc)
        assert proc.returncode == 0 and lab.attached() == (None, None)
        proc, _ = lab.start(tmp_path, "--rx", "afxdp")
        prog = lab.attached()[1]
        proc.kill()
        proc.wait(timeout=30)
        assert lab.attached()[1] == prog
        out = nta("topo", "down", check=True).stdout
        assert f"detached XDP prog id {prog} (native) from {lab.dut_if} [{lab.dut_ns}]" in out, out
        assert lab.attached() == (None, None)
        assert nic.driver_and_channels(lab.dut_if, lab.dut_ns) == channels


def test_two_ctrl_c_in_a_row_still_leave_it_as_found(tag, tmp_path, imix_pcap):
    """A second Ctrl-C while the first one's teardown runs (frames held, frees on another CPU, a socket
    per queue): no crash, one line, nothing left. Each handle is forgotten as it is destroyed, with the
    signals held: a signal between the two once destroyed a socket twice (a segmentation fault)."""
    if len(cpus.usable()) < 2:
        pytest.skip("frees on another CPU need two CPUs")
    with Lab(tag) as lab:
        for _ in range(3):
            proc, _ = lab.start(tmp_path, "--rx", "afxdp", "--hold", "random:3000", "--free-on", "other")
            lab.send(imix_pcap)
            _, stderr = stop(proc, signals=2)
            assert proc.returncode in (0, 130), stderr
            assert len(stderr.strip().splitlines()) <= 1 and "Fatal" not in stderr, stderr
            assert lab.attached() == (None, None)

"""nta run --iface IFACE --no-replay: an interface the user names, traffic from elsewhere.

The test names the dut end of a topology it made itself (never an interface
of the root namespace) and sends from the gen end while nta measures.
"""

import json
import os
import signal
import subprocess
import sys
import time

from harness.replay import Replayer, ReplayOptions
from harness.topology import Topology, list_topologies
from tests.conftest import ROOT, assert_one_line_error, nta
from tests.netns.conftest import wait_until


def start_live(t, tmp_path, *extra):
    out = tmp_path / "live.json"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", "--iface", t.dut_if, "--netns", t.dut_ns,
                             "--no-replay", "--json", str(out), *extra], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    attached = wait_until(lambda: any(x.tag == t.tag and x.xdp for x in list_topologies()), timeout=30)
    assert attached, proc.stderr.read() if proc.poll() is not None else "never attached"
    return proc, out


def test_external_traffic_counted_until_ctrl_c(pcaps, tmp_path, tag):
    with Topology(tag) as t:
        proc, out = start_live(t, tmp_path, "--controller", "--hold", "flow:4")
        result = Replayer(t.gen_ns, t.gen_if, os.path.join(pcaps, "tcpreplay-test.pcap"),
                          ReplayOptions(pps=5000)).start().finish()
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)  # Ctrl-C ends the measurement; the summary follows
        stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr
        doc = json.loads(out.read_text())
        assert result.sent == doc["points"]["xdp"]["packets"] == 179
        assert doc["ring"] == {"submitted": 179, "lost": 0}
        assert doc["controller"]["controller"]["handled"] == 179 and doc["reconciled"] is True
        assert doc["interrupted"] is True and f"Summary: veth-dut [nta-dut-{tag}]" in stdout
        assert t.xdp_attached() == (None, None)  # detached on the way out


def test_duration_ends_the_run(tmp_path, tag):
    with Topology(tag) as t:
        t0 = time.monotonic()
        proc = nta("run", "--iface", t.dut_if, "--netns", t.dut_ns, "--no-replay", "--duration", "1",
                   "--mode", "generic", check=True)
        assert 1.0 <= time.monotonic() - t0 < 20
        assert "XDP seen (generic)" in proc.stdout
        assert t.xdp_attached() == (None, None)


def test_bad_live_usage(tag):
    assert_one_line_error(nta("run", "--iface", "veth-x", "--netns", "nta-no-such-ns", "--no-replay"),
                          "no network namespace nta-no-such-ns")
    assert_one_line_error(nta("run", "--no-replay"), "--iface and --no-replay go together")
    with Topology(tag) as t:
        assert_one_line_error(nta("run", "--iface", "nope0", "--netns", t.dut_ns, "--no-replay"),
                              "no interface nope0")


def test_a_named_interface_at_the_limit(pcaps, tmp_path, tag):
    """The limits hold on an interface the harness did not replay into: a budget of 2 pages drops some,
    the permitted frames take the reserve, every frame is kept or dropped for a reason; --stuck needs a
    capture and is refused."""
    with Topology(tag) as t:
        proc, out = start_live(t, tmp_path, "--controller", "--hold", "packets:150", "--budget", "2",
                               "--permit", "tcp port 80", "--reserve", "64")
        Replayer(t.gen_ns, t.gen_if, os.path.join(pcaps, "tcpreplay-test.pcap"),
                 ReplayOptions(pps=5000)).start().finish()
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr
        doc = json.loads(out.read_text())
        p, c = doc["pressure"], doc["controller"]["controller"]
        assert c["handled"] == 179 and c["drop_nomem"] > 0 and p["drops"]["reconciled"]
        assert p["permitted"]["xdp"] == p["permitted"]["kept"] > 0 and p["reserve"]["balanced"]
        assert "drops reconciled: handled 179" in stdout and doc["reconciled"] is True
        assert_one_line_error(nta("run", "--iface", t.dut_if, "--netns", t.dut_ns, "--no-replay", "--controller",
                                  "--stuck", "2"), "--stuck 2: picks flows from a capture", code=2)

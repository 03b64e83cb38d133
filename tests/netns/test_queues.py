"""``nta run --queues N``: the veth pair with N queues, a sender on each, and with --controller a metadata
ring, controller thread and page pool per RX queue; ``--free-on other``: a reader on another CPU frees
what the hold policy lets go, through the owner's remote queue. Per-queue counts are exact (each queue
sees what its sender sent: the conversations flow_split gave it), they add up to the capture's, every
posted free is applied, and every pool balances."""

import json
import os
import signal

import pytest

from harness import cpus
from harness.builtin import flow_split
from harness.pcapfile import load
from harness.replay import ReplayOptions
from harness.run import RunConfig, run
from tests.conftest import assert_one_line_error, nta
from tests.netns.conftest import nta_maps, nta_namespaces
from tests.netns.test_cleanup import long_run, wait_attached

pytestmark = pytest.mark.skipif(len(cpus.usable()) < 2, reason="two queues need two CPUs")


def queued_run(pcap, replayer="xdp", **kw):
    fields = ("loops", "topspeed", "pps", "limit")
    opts = {k: kw.pop(k) for k in fields if k in kw}
    return run(RunConfig(pcap=pcap, replay=ReplayOptions(**opts), quiet=True, replayer=replayer, queues=2, **kw))


def each_senders_share(cap, loops):
    """Frames queue q gets: its sender's conversations, every loop."""
    return [len(part) * loops for part in flow_split(cap, 2)]


@pytest.mark.parametrize("replayer", ["xdp", "builtin"])
def test_each_queue_sees_its_senders_frames(pcaps, replayer):
    path = os.path.join(pcaps, "ndpi-reddit-ipv6.pcap")
    cap = load(path)
    r = queued_run(path, replayer, loops=20, topspeed=True)
    want = each_senders_share(cap, 20)
    assert min(want) > 0  # the capture's conversations reach both queues
    assert [q["sent"] for q in r.queues] == want
    assert [q["xdp"]["packets"] for q in r.queues] == want
    assert sum(q["xdp"]["bytes"] for q in r.queues) == r.xdp.bytes == 20 * cap.frame_bytes
    assert [q["cpu"] for q in r.queues] == cpus.usable()[:2]
    assert r.reconciled and r.queue_account["reconciled"]


def test_a_ring_controller_and_pool_per_queue_frees_on_another_cpu(pcaps):
    """Frames of a real capture, held (random lifetimes) and freed by a reader on the other CPU: each
    queue's ring, controller and pool account for its frames alone; every free was handed off, posted in
    batches and applied by the pool's owner; nothing is left held or live."""
    path = os.path.join(pcaps, "tcpreplay-test.pcap")
    cap = load(path)
    r = queued_run(path, loops=300, pps=100_000, controller=True, hold="random:500", free_on="other")
    want = each_senders_share(cap, 300)
    assert [q["xdp"]["packets"] for q in r.queues] == want
    for q in r.queues:
        assert q["ring"] == {"submitted": q["xdp"]["packets"], "lost": 0}
        assert q["handled"] == q["frees"] == q["xdp"]["packets"]
        assert q["handed_off"] + q["handoff_full"] == q["frees"]
        assert q["handed_off"] > 0
        rem = q["remote"]
        assert rem["posted"] == rem["applied"] == q["handed_off"]
        assert rem["pending"] == 0 and rem["bad"] == 0
        assert 0 < rem["batches"] <= rem["posted"]
        assert q["live_fragments"] == 0 and q["held"] == 0
    total = r.consumer
    assert total["controller"]["handled"] == sum(want) == r.xdp.packets
    assert total["reader"]["freed"] == sum(q["handed_off"] for q in r.queues)
    assert total["pool"]["frags"] == 0 and total["pool"]["pending"] == 0
    assert [f["queue"] for f in total["queues"]] == [0, 1]
    assert r.reconciled


def test_one_queue_frees_on_another_cpu(imix_pcap):
    r = run(RunConfig(pcap=imix_pcap, replay=ReplayOptions(loops=50, topspeed=True), quiet=True, replayer="xdp",
                      controller=True, hold="flow:8", free_on="other"))
    c, p = r.consumer["controller"], r.consumer["pool"]
    assert r.queues is None and r.reconciled
    assert c["handed_off"] + c["handoff_full"] == c["frees"] == c["handled"] == r.xdp.packets
    assert p["posted"] == p["applied"] == c["handed_off"] > 0
    assert p["frags"] == 0


def test_the_summary_and_json_count_each_queue(imix_pcap, tmp_path):
    out = tmp_path / "q.json"
    res = nta("run", "--pcap", imix_pcap, "--loops", "40", "--topspeed", "--replayer", "xdp", "--queues", "2",
              "--controller", "--hold", "packets:64", "--free-on", "other", "--json", str(out), check=True)
    doc = json.loads(out.read_text())
    assert doc["config"]["queues"] == 2 and doc["config"]["free_on"] == "other"
    assert [q["queue"] for q in doc["queues"]] == [0, 1]
    assert sum(q["xdp"]["packets"] for q in doc["queues"]) == doc["points"]["xdp"]["packets"] == 40 * 1200
    assert doc["reconciliation"]["queues"]["reconciled"] and doc["reconciled"]
    lines = res.stdout.splitlines()
    (head,) = [ln for ln in lines if ln.split()[:2] == ["queue", "cpu"]]
    assert "ring submitted" in head and "remote posted" in head
    (total,) = [ln for ln in lines if ln.split()[:1] == ["sum"]]
    assert f"{40 * 1200:,}" in total
    assert any(ln.strip().startswith("queues reconciled:") for ln in lines)
    assert any("frees on another CPU:" in ln and "all applied" in ln for ln in lines)


@pytest.mark.parametrize("args, why, code", [
    (["--queues", "2"], "--queues 2 needs a sender per queue", 1),
    (["--queues", "2", "--replayer", "xdp", "--threads", "1"], "--threads 1 with --queues 2: a sender per queue", 1),
    (["--queues", "99", "--replayer", "xdp"], "bad --queues 99", 1),
    (["--free-on", "other"], "--free-on other: only with --controller", 1),
    (["--free-on", "nobody", "--controller"], "invalid choice: 'nobody'", 2),  # a usage error
])
def test_bad_queue_options(imix_pcap, args, why, code):
    assert_one_line_error(nta("run", "--pcap", imix_pcap, *args), why, code=code)
    assert nta_namespaces() == []


def test_ctrl_c_with_two_queues_and_readers_leaves_nothing(tag):
    proc = long_run(tag, "--replayer", "xdp", "--queues", "2", "--controller", "--hold", "random:100",
                    "--free-on", "other")
    wait_attached(tag, proc, "xdp")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "Traceback" not in err, (proc.returncode, err)
    assert nta_namespaces() == [], (proc.returncode, err)  # -11: a thread the clean-up missed crashed
    assert not [m for m in nta_maps() if m.get("name", "").startswith("nta_meta")]

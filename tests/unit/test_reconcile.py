"""harness.reconcile: the accounts, on counts made up to hit each way one can fail."""

from harness import reconcile


def queue(sent, seen, submitted=None, lost=0, handled=None):
    q = {"sent": sent, "xdp": {"packets": seen}}
    if submitted is not None:
        q.update(ring={"submitted": submitted, "lost": lost}, handled=handled)
    return q


def test_traffic():
    assert reconcile.traffic(100, 0, 100, 0, 0, 100)["reconciled"]
    acct = reconcile.traffic(100, 0, 90, 12, 4, 100)  # 12 veth drops, 4 of them sent again: 8 lost
    assert (acct["resent"], acct["veth_lost"], acct["unaccounted"]) == (4, 8, 2)
    assert not acct["reconciled"]
    assert not reconcile.traffic(100, 0, 100, 0, 0, 101)["as_expected"]


def test_metadata():
    assert reconcile.metadata(10, {"submitted": 7, "lost": 3}, 7)["reconciled"]
    assert reconcile.metadata(10, {"submitted": 7, "lost": 2}, 7)["unaccounted"] == 1
    assert reconcile.metadata(10, {"submitted": 7, "lost": 3}, 6)["unaccounted"] == 1


def test_queues_each_and_their_sum():
    qs = [queue(60, 60, 58, 2, 58), queue(40, 40, 40, 0, 40)]
    acct = reconcile.queues(qs, 100, veth_lost=0)
    assert acct == {"xdp_packets": 100, "xdp_seen": 100, "reconciled": True}
    assert all(q["reconciled"] for q in qs)


def test_a_queue_that_lost_frames_or_records_does_not_reconcile():
    qs = [queue(60, 59, 59, 0, 59), queue(40, 40, 40, 0, 39)]
    acct = reconcile.queues(qs, 99, veth_lost=0)
    assert not acct["reconciled"]
    assert qs[0]["reconciliation"]["unaccounted"] == 1 and not qs[0]["reconciled"]
    assert qs[1]["reconciliation"]["metadata"]["unaccounted"] == 1 and not qs[1]["reconciled"]


def test_queues_that_do_not_add_up_to_xdp_seen():
    qs = [queue(50, 50), queue(50, 50)]
    assert not reconcile.queues(qs, 101, veth_lost=0)["reconciled"]


def test_with_veth_drops_lost_a_queue_frames_are_not_judged():
    """Which queue a lost veth drop was sent on is not counted: each queue's frames are then not judged,
    the sum still is."""
    qs = [queue(60, 55), queue(40, 40)]
    acct = reconcile.queues(qs, 95, veth_lost=5)
    assert acct["reconciled"] and qs[0]["reconciliation"]["unaccounted"] is None

"""Where every frame went: the one place the counting points are reconciled.

Counting points, in the order a frame meets them:

* the capture: its records, the frames made of them, and the records skipped,
  by reason (harness.pcapfile.load): ``expected = frames x loops``;
* the replayer's own count of frames it handed to the kernel, and of those it
  gave up on (harness.replay);
* veth sender drops: frames the gen end dropped (the peer's ring was full),
  its tx_dropped. The sender is told (ENOBUFS) and both replayers send such a
  frame again and count it, so only drops beyond those retries are lost;
* XDP seen: the per-CPU counters of the XDP program on the dut end.

With a controller, two more: the metadata ring (records submitted, and lost
when it was full) and the controller (records handled).

With ``--queues N``, each RX queue is a counting point of its own: the
frames its sender sent, XDP seen on it, its ring and its controller. Each
queue's metadata reconciles as the whole run's does; its frames do when no
veth drop was lost (then ``sent = XDP seen`` queue by queue), and the
queues' XDP counts add up to XDP seen.

A replayed run reconciles when ``sent = XDP seen + veth drops not sent
again``, the replayer sent (or failed) what the capture calls for, and with a
controller ``XDP seen = submitted + ring lost`` and ``handled = submitted``;
with limits on memory (harness.pressure) also ``handled = kept + drops by
reason`` and the reserve balanced (taken = returned, none outstanding).
"""

from __future__ import annotations


def traffic(sent: int, failed: int | None, seen: int, veth_dropped: int, retried_enobufs: int | None,
            expected: int | None) -> dict:
    """The replayed frames' account: how many veth drops were sent again, how many lost, how many
    frames are unaccounted for, and whether the replayer sent what the capture calls for."""
    resent = min(veth_dropped, retried_enobufs or 0)
    lost = veth_dropped - resent
    unaccounted = sent - seen - lost
    as_expected = expected is None or expected == sent + (failed or 0)
    return {"resent": resent, "veth_lost": lost, "unaccounted": unaccounted, "as_expected": as_expected,
            "reconciled": unaccounted == 0 and as_expected}


def queues(per_queue: list[dict], seen: int, veth_lost: int) -> dict:
    """The queues' account (``per_queue``: each queue's sent, xdp packets, and with a controller its ring
    and handled): each queue's metadata, each queue's frames when no veth drop was lost, and the
    queues' XDP counts against XDP seen."""
    for q in per_queue:
        acct = {"unaccounted": q["sent"] - q["xdp"]["packets"] if q["sent"] is not None and not veth_lost
                else None}
        if q.get("xsk"):
            acct["metadata"] = sockets(q["xdp"]["packets"], q["ring"], q["xsk"], q["handled"])
        elif q.get("ring") is not None:
            acct["metadata"] = metadata(q["xdp"]["packets"], q["ring"], q["handled"])
        if "kept" in q:  # every frame the queue's controller handled, kept or dropped for a reason
            acct["drops_reconciled"] = q["handled"] == q["kept"] + sum(q["drops"].values())
        q["reconciliation"] = acct
        q["reconciled"] = (not acct["unaccounted"] and acct.get("metadata", {"reconciled": True})["reconciled"]
                           and acct.get("drops_reconciled", True))
    total = sum(q["xdp"]["packets"] for q in per_queue)
    return {"xdp_packets": total, "xdp_seen": seen,
            "reconciled": total == seen and all(q["reconciled"] for q in per_queue)}


def sockets(seen: int, ring: dict, xsk: dict, handled: int) -> dict:
    """The AF_XDP path's account (``--rx afxdp``): XDP seen = redirected to a socket + no socket there;
    redirected = received into the arena + dropped by the socket (no fill buffer: rx_dropped; its RX
    ring full: rx_ring_full, both from XDP_STATISTICS); handled = received."""
    dropped = xsk["rx_dropped"] + xsk["rx_ring_full"]
    unaccounted = (abs(seen - ring["submitted"] - ring["lost"]) + abs(ring["submitted"] - xsk["received"] - dropped)
                   + abs(xsk["received"] - handled))
    return {"unaccounted": unaccounted, "reconciled": unaccounted == 0, "socket_dropped": dropped}


def metadata(seen: int, ring: dict, handled: int) -> dict:
    """The metadata path's account: XDP seen - ring submitted - ring lost, and submitted - handled."""
    unaccounted = abs(seen - ring["submitted"] - ring["lost"]) + abs(ring["submitted"] - handled)
    return {"unaccounted": unaccounted, "reconciled": unaccounted == 0}

"""A run's controller figures from its counters: interval counts, latency, memory, and the queues' added
up. Pure arithmetic on dicts and numpy arrays (the consumer and the tests call it)."""

from __future__ import annotations

import os

import numpy as np


def interval_counts(drained: int, c: dict, p: dict, lost: int, page_size: int) -> dict:
    """An interval line's cumulative counts from the controller's counters ``c`` and the pool's ``p``."""
    back = p["cached"] + p["ring"]
    gone = back + p["ring_full"] + p["released_refcnt"]
    held_bytes = p["pages_in_use"] * page_size
    return {"meta": drained, "lost": lost, "alloc": c["kept"], "dropped": c["drops"],
            **{k.replace("drop_", "dropped_", 1): v for k, v in c.items() if k.startswith("drop_")},
            "free": c["frees"], "pages": p["pages_in_use"], "inflight": p["inflight"],
            "recycle_pct": 100.0 * back / gone if gone else 0.0,
            # of the bytes of pages the pool has given to fragments, the share no frame asked for
            "frag_pct": 100.0 * (1 - c["bytes_held"] / held_bytes) if held_bytes else 0.0}


def latency_figures(hist: np.ndarray, max_ns: int) -> dict:
    """How long records waited from XDP's timestamp to the controller's drain, in microseconds, from the
    histogram of every record's wait (by microsecond) and the longest (exact)."""
    total = int(hist.sum())
    if not total:
        return {"samples": 0}
    cum = np.cumsum(hist)

    def at(q: float) -> float:
        return float(np.searchsorted(cum, q * total, side="left"))

    waited = np.flatnonzero(hist)  # the histogram itself, the microseconds some record waited
    return {"samples": total, "p50": at(0.50), "p99": at(0.99), "p999": at(0.999), "max": max_ns / 1000.0,
            "histogram": {"us": waited.tolist(), "records": hist[waited].tolist(),
                          "last_bucket_is_at_least": len(hist) - 1}}


def memory_figures(allocator: str, page: int, ctl: dict, pool: dict, util_sum: float, util_samples: int,
                   posted_each: int | None = None) -> dict:
    """What the frames' fragments took: the pool's pages holding them at their peak, the bytes the frames
    asked for then and at their own peak, utilisation (asked / bytes of those pages) at that moment and on
    average while the run went, and apart from those, the pages mapped and idle in the cache and ring at
    their peak. With buffers posted for frames to come (AF_XDP's fill ring, ``posted_each`` bytes a
    buffer as the pool hands it), those at the peak apart: the pages they would fill on their own (as
    many a page as fit), and what the pool's pages at the peak took beyond those, per frame then held
    (with fixed 2,048-byte chunks that is 2,048 a frame)."""
    peak = ctl["peak_pages"]
    posted = {}
    if posted_each is not None:
        held, fill = ctl["held_at_peak_pages"], ctl["posted_at_peak_pages"]
        fill_pages = -(-fill // max(1, page // posted_each))
        posted = {"fill_buffers_at_peak": fill, "fill_buffer_bytes": posted_each,
                  "fill_bytes_at_peak": fill * posted_each, "fill_pages_at_peak": fill_pages,
                  "frames_held_at_peak": held,
                  "bytes_per_frame_held": (peak - fill_pages) * page / held if held else None,
                  "asked_per_frame_held": ctl["bytes_at_peak_pages"] / held if held else None}
    return {**posted, "allocator": allocator, "page_size": page, "peak_pages": peak,
            "peak_fragments": ctl["peak_held"], "peak_bytes_asked": ctl["peak_bytes_held"],
            "bytes_asked_at_peak_pages": ctl["bytes_at_peak_pages"],
            "utilisation_at_peak": ctl["bytes_at_peak_pages"] / (peak * page) if peak else None,
            "utilisation_mean": util_sum / util_samples if util_samples else None,
            "utilisation_samples": util_samples, "idle_mapped_pages_peak": pool["peak_idle"]}


LONGEST = {"max_wait_ns", "data_off", "budget_pages"}  # of the counters, those that add up as the largest
SMALLEST = {"reserve_min_free"}  # and as the smallest


def added(dicts: list[dict]) -> dict:
    """Counters of several queues added up, key by key (a peak is the sum of each queue's peak; a longest
    wait the longest of theirs)."""
    return {k: (max if k in LONGEST else min if k in SMALLEST else sum)(d[k] for d in dicts) for k in dicts[0]}


SOCKET_MODE = {"bytes_per_frame_held", "zerocopy", "zc_errno", "aligned", "unaligned_errno",
               "buffer_bytes"}  # not added up


def xsk_added(per_queue: list[dict], page: int) -> dict:
    """The queues' socket counters added up, and what the frames held at the end took, per frame."""
    total = added([{k: v for k, v in x.items() if k not in SOCKET_MODE}
                   for x in per_queue])
    held = total["held_at_end"]
    return {**total, "bytes_per_frame_held": total["pages_at_end"] * page / held if held else None,
            "sockets": [socket_mode(x) for x in per_queue]}


def socket_mode(x: dict) -> dict:
    """How a socket was bound: zero-copy or copy, and when zero-copy was asked for and refused, the kernel's
    reason; its UMEM's chunks, and when unaligned ones were refused in zero-copy mode, the kernel's reason."""
    return {"mode": "zero-copy" if x["zerocopy"] else "copy",
            "zerocopy_refused": os.strerror(x["zc_errno"]) if x["zc_errno"] else None,
            "chunks": "aligned" if x["aligned"] else "unaligned",
            "unaligned_refused": os.strerror(x["unaligned_errno"]) if x["unaligned_errno"] else None}


def modes_text(sockets: list[dict]) -> str:
    """The sockets' modes in a few words: 'zero-copy mode', 'copy mode (zero-copy refused: ...)', 'zero-copy
    mode, aligned chunks (unaligned refused: ...)', or per queue."""
    def one(s):
        chunks = ", aligned chunks" if s["chunks"] == "aligned" else ""
        if s["unaligned_refused"]:
            chunks += f" (unaligned refused: {s['unaligned_refused']})"
        return s["mode"] + " mode" + chunks + (f" (zero-copy refused: {s['zerocopy_refused']})"
                                               if s["zerocopy_refused"] else "")
    texts = [one(s) for s in sockets]
    if len(set(texts)) == 1:
        return ("all sockets " if len(texts) > 1 else "") + texts[0]
    return "; ".join(f"queue {q} {t}" for q, t in enumerate(texts))

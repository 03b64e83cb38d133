"""The controller: XDP's metadata records in, page-pool fragments held and let go, in C (harness._ctl_c).

``Consumer`` is what a run uses: an arena (memfd), the dut's page pool on it,
the controller's per-packet work (``Controller``) and the XDP program's
metadata ring (``MetaRing``); ``pump()`` moves what the ring holds into the
controller a batch at a time, with no call per packet into Python.
"""

from __future__ import annotations

import contextlib
import os
import threading

import numpy as np

from harness import cmodule
from harness.errors import NtaError
from harness.nta import CELLS, Arena, ArenaError, Pool, counters_dict, pool_allocator

ffi, lib = cmodule.load("_ctl_c")

HOLDS = {"immediate": lib.NTA_HOLD_IMMEDIATE, "packets": lib.NTA_HOLD_PACKETS, "usec": lib.NTA_HOLD_USEC,
         "flow": lib.NTA_HOLD_FLOW, "random": lib.NTA_HOLD_RANDOM}


def parse_hold(text: str) -> tuple[str, int]:
    """'immediate', 'packets:N', 'usec:T', 'flow:K' or 'random:N' -> (policy, parameter)."""
    name, _, arg = text.partition(":")
    if name not in HOLDS:
        raise NtaError(f"bad hold policy {text!r}: use immediate, packets:N, usec:T, flow:K or random:N")
    if name == "immediate":
        if arg:
            raise NtaError(f"bad hold policy {text!r}: 'immediate' takes no number")
        return name, 0
    if not arg.isdigit() or int(arg) < 1:
        raise NtaError(f"bad hold policy {text!r}: {name} needs a positive number, as {name}:64")
    return name, int(arg)


def meta_dtype() -> np.dtype:
    """numpy dtype of struct nta_meta, from the real header (bpf/nta_shared.h) through cffi."""
    kinds = {"uint8_t": "u1", "uint16_t": "u2", "uint32_t": "u4", "uint64_t": "u8",
             "__u8": "u1", "__u16": "u2", "__u32": "u4", "__u64": "u8"}
    names, formats, offsets = [], [], []
    for name, f in ffi.typeof("struct nta_meta").fields:
        t = f.type
        if t.kind == "array":
            formats.append((np.dtype("<" + kinds[t.item.cname]), (t.length,)))
        else:
            formats.append(np.dtype("<" + kinds[t.cname]))
        names.append(name)
        offsets.append(f.offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": ffi.sizeof("struct nta_meta")})


META = meta_dtype()


class MetaRing:
    """The XDP program's BPF ring buffer of struct nta_meta, mapped here and drained in C."""

    def __init__(self, map_fd: int):
        self._rb = lib.nta_ringbuf_open(map_fd)
        if self._rb == ffi.NULL:
            raise NtaError(f"mapping the metadata ring: {os.strerror(ffi.errno)}")
        self.size = lib.nta_ringbuf_size(self._rb)  # bytes, as the kernel made the map

    def drain(self, max_records: int = 65536) -> np.ndarray:
        """Records written since the last drain (up to max_records), oldest first."""
        out = np.empty(max_records, dtype=META)
        odd = ffi.new("uint64_t *")
        n = lib.nta_ringbuf_drain(self._rb, ffi.from_buffer(out), META.itemsize, max_records, odd)
        if odd[0]:
            raise NtaError(f"the metadata ring held {odd[0]} records of another size than struct nta_meta")
        return out[:n]

    def close(self) -> None:
        if self._rb is not None:
            lib.nta_ringbuf_close(self._rb)
            self._rb = None


class Controller:
    """Metadata records in, pool fragments held and freed, in C, one call per batch (harness/csrc/ctl.c)."""

    def __init__(self, pool: Pool, hold: str = "immediate", max_held: int = 1 << 20, seed: int = 1):
        self.policy, self.param = parse_hold(hold)
        cfg = ffi.new("struct nta_ctl_config *")
        cfg.policy, cfg.param, cfg.max_held, cfg.seed = HOLDS[self.policy], self.param, max_held, seed
        c = lib.nta_ctl_create(pool._h(), pool.arena._h(), cfg)
        if c == ffi.NULL:
            raise ArenaError(ffi.errno, f"creating the controller ({hold}): {os.strerror(ffi.errno)}")
        self._c, self.pool, self.hold, self.max_held = c, pool, hold, max_held

    def handle(self, records: np.ndarray) -> int:
        """Process an array of struct nta_meta records (dtype META); returns how many got memory."""
        if records.dtype != META:
            raise NtaError(f"controller: records of dtype {records.dtype}, not struct nta_meta's")
        if not len(records):
            return 0
        recs = ffi.cast("struct nta_meta *", ffi.from_buffer(np.ascontiguousarray(records)))
        return lib.nta_ctl_handle(self._c, recs, len(records))

    def flush(self) -> int:
        return lib.nta_ctl_flush(self._c)

    def held(self) -> tuple[np.ndarray, np.ndarray]:
        """What it holds now: the fragments' offsets, and the bytes their frames asked for."""
        n = self.stats()["held"]
        offs, lens = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.uint32)
        k = lib.nta_ctl_held(self._c, ffi.from_buffer("int64_t[]", offs), ffi.from_buffer("uint32_t[]", lens),
                             n)
        return offs[:k], lens[:k]

    def stats(self) -> dict:
        st = ffi.new("struct nta_ctl_stats *")
        lib.nta_ctl_stats(self._c, st)
        return counters_dict(st)

    def close(self) -> None:
        if self._c is not None:
            self.flush()
            lib.nta_ctl_destroy(self._c)
            self._c = None

    def __enter__(self) -> "Controller":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Consumer:
    """The controller side of a run: an arena (memfd), the dut's page pool on it, the controller, the
    metadata ring. ``start()`` runs the controller's C loop (harness/csrc/ctlpoll.c) on a thread of its
    own, which drains the ring as records come, samples the pool and publishes its counters, and never
    needs Python (the GIL) until ``stop()``; ``pump()`` drains what is left, on the calling thread."""

    def __init__(self, ring_fd: int, ifindex: int, hold: str, allocator: str = "nta",
                 arena_pages: int = 65536, queue: int = 0, peak_map: bool = False):
        parse_hold(hold)
        self.hold, self.allocator = hold, pool_allocator(allocator)
        self._stack = contextlib.ExitStack()
        try:
            self.arena = self._stack.enter_context(Arena(max_pages=arena_pages))
            self.pool = self._stack.enter_context(Pool(self.arena, ifindex=ifindex, queue=queue,
                                                       allocator=self.allocator))
            self.ctl = self._stack.enter_context(Controller(self.pool, hold))
            self.ring = MetaRing(ring_fd)
            self._stack.callback(self.ring.close)
        except BaseException:
            self._stack.close()
            raise
        # The C loop's state: its batch buffer; per microsecond of wait (XDP's timestamp -> the drain),
        # how many records waited that long; the pool's samples; its counts add up over calls.
        p = self._poll = ffi.new("struct nta_ctl_poll *")
        self._buf = np.empty(self.BATCH, dtype=META)
        self._lat_hist = np.zeros(self.LAT_BUCKETS, dtype=np.uint64)
        p.buf, p.max = ffi.cast("struct nta_meta *", ffi.from_buffer(self._buf)), self.BATCH
        p.lat_hist, p.lat_buckets = ffi.cast("uint64_t *", ffi.from_buffer(self._lat_hist)), self.LAT_BUCKETS
        p.sample_ns = self.SAMPLE_EVERY_NS
        p.pool, p.arena = self.pool._h(), self.arena._h()
        p.page_size, p.chunk_size = self.arena.page_size, self.arena.chunk_size
        # with peak_map, the pool's page map at the sample with the most pages in use, and what was held
        self._map = self._held = None
        if peak_map:
            self._map = np.zeros(self.arena.max_pages * self.arena.chunks_per_page, dtype=np.uint8)
            self._held = (np.empty(self.ctl.max_held, dtype=np.int64), np.empty(self.ctl.max_held, dtype=np.uint32))
            p.map, p.map_cells = ffi.cast("uint8_t *", ffi.from_buffer(self._map)), len(self._map)
            p.held_offs = ffi.cast("int64_t *", ffi.from_buffer(self._held[0]))
            p.held_lens = ffi.cast("uint32_t *", ffi.from_buffer(self._held[1]))
            p.held_max = self.ctl.max_held
        self._thread: threading.Thread | None = None
        self._rc = 0

    SAMPLE_EVERY_NS = 10_000_000  # the pool's utilisation and the published counters
    BATCH = 8192  # records per drain
    LAT_BUCKETS = 1 << 17  # microseconds of wait counted one by one (131 ms); the last counts all longer

    # -- the loop on its own thread -------------------------------------------------------

    def start(self, idle_us: int, cpus: list[int] | None = None) -> None:
        """Run the loop on a thread of its own (on ``cpus``, when given), sleeping ``idle_us`` on an empty
        ring (0: spinning), until stop()."""
        p = self._poll
        p.until_ns, p.idle_ns, p.stop = 2**64 - 1, idle_us * 1000, 0

        def body():
            if cpus:
                os.sched_setaffinity(0, set(cpus))  # this thread only
            self._rc = lib.nta_ctl_poll(self.ctl._c, self.ring._rb, p)

        self._thread = threading.Thread(target=body, name="nta-controller", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def stop(self) -> None:
        """End the loop's thread (idempotent); what is still in the ring stays there for pump()."""
        if self._thread is None:
            return
        lib.nta_ctl_poll_stop(self._poll)
        self._thread.join()
        self._thread = None
        self._check(self._rc)

    def _check(self, rc: int) -> None:
        if rc < 0:
            raise NtaError(f"draining the metadata ring: {os.strerror(-rc)}")
        if self._poll.odd:
            raise NtaError(f"the metadata ring held {self._poll.odd} records of another size than struct nta_meta")

    def pump(self) -> int:
        """Drain what the ring holds into the controller now, on this thread (the loop's thread stopped).
        Returns records moved."""
        if self.running:
            raise RuntimeError("pump() while the controller's thread runs")
        p = self._poll
        before = p.drained
        p.until_ns, p.stop = 0, 0
        self._check(lib.nta_ctl_poll(self.ctl._c, self.ring._rb, p))
        return p.drained - before

    def _counters(self) -> tuple[int, dict, dict]:
        """Records drained, the controller's counters and the pool's: as last published while the thread
        runs, else now."""
        if self.running:
            snap = ffi.new("struct nta_ctl_snapshot *")
            lib.nta_ctl_poll_snapshot(self._poll, snap)
            return snap.drained, counters_dict(snap.ctl), counters_dict(snap.pool)
        return self._poll.drained, self.ctl.stats(), self.pool.stats()

    @property
    def drained(self) -> int:
        return self._counters()[0]

    # -- figures ------------------------------------------------------------------------

    @property
    def peak_map(self) -> np.ndarray | None:
        """The pool's page map at its peak (with peak_map), the chunks each held fragment was handed
        beyond what its frame asked for marked as slack (CELLS["slack"]); None when not kept."""
        p = self._poll
        if self._map is None or not p.map_peak_pages:
            return None
        cells = self.arena.chunks_per_page
        picture = self._map[:p.map_pages * cells].reshape(p.map_pages, cells).copy()
        flat, chunk = picture.reshape(-1), self.arena.chunk_size
        offs, lens = self._held[0][:p.held_n], self._held[1][:p.held_n]
        for off, size in zip(offs.tolist(), lens.tolist(), strict=True):
            first = (off - self.arena.data_off) // chunk
            asked, handed = -(-max(size, 1) // chunk), self.pool.frag_size(max(size, 1)) // chunk
            if handed > asked:
                flat[first + asked:first + handed] = CELLS["slack"]
        return picture

    def snapshot(self, ring_stats: dict) -> dict:
        """Cumulative counts for an interval line."""
        drained, c, p = self._counters()
        back = p["cached"] + p["ring"]
        gone = back + p["ring_full"] + p["released_refcnt"]
        held_bytes = p["pages_in_use"] * self.arena.page_size
        return {"meta": drained, "lost": ring_stats["lost"], "alloc": c["handled"] - c["alloc_fails"],
                "free": c["frees"], "pages": p["pages_in_use"], "inflight": p["inflight"],
                "recycle_pct": 100.0 * back / gone if gone else 0.0,
                # of the bytes of pages the pool has given to fragments, the share no frame asked for
                "frag_pct": 100.0 * (1 - c["bytes_held"] / held_bytes) if held_bytes else 0.0}

    def latency_us(self) -> dict:
        """How long records waited from XDP's timestamp to the controller's drain, in microseconds: every
        record counted (to the microsecond; max exact)."""
        hist = self._lat_hist
        total = int(hist.sum())
        if not total:
            return {"samples": 0}
        cum = np.cumsum(hist)

        def at(q: float) -> float:
            return float(np.searchsorted(cum, q * total, side="left"))

        return {"samples": total, "p50": at(0.50), "p99": at(0.99), "p999": at(0.999),
                "max": self._poll.lat_max_ns / 1000.0}

    def finish(self) -> dict:
        """The end of a run: the thread stopped, the ring drained, a last sample, what the policy still
        holds put back, pool and arena checked; the figures."""
        self.stop()
        self.pump()
        lib.nta_ctl_poll_sample(self.ctl._c, self._poll)
        self.ctl.flush()  # the pool must balance
        self.pool.check()
        self.arena.check()
        return self.figures()

    def memory(self, ctl: dict, pool: dict) -> dict:
        """What the frames' fragments took: the pool's pages holding them at their peak, the bytes the frames
        asked for then and at their own peak, utilisation (asked / bytes of those pages) at that moment and
        on average while the run went, and apart from those, the pages mapped and idle in the cache and
        ring at their peak."""
        page, peak, p = self.arena.page_size, ctl["peak_pages"], self._poll
        return {"allocator": self.allocator, "page_size": page, "peak_pages": peak,
                "peak_fragments": ctl["peak_held"], "peak_bytes_asked": ctl["peak_bytes_held"],
                "bytes_asked_at_peak_pages": ctl["bytes_at_peak_pages"],
                "utilisation_at_peak": ctl["bytes_at_peak_pages"] / (peak * page) if peak else None,
                "utilisation_mean": p.util_sum / p.util_samples if p.util_samples else None,
                "utilisation_samples": p.util_samples, "idle_mapped_pages_peak": pool["peak_idle"]}

    def figures(self) -> dict:
        ctl, pool = self.ctl.stats(), self.pool.stats()
        return {"page_size": self.arena.page_size, "controller": ctl, "pool": pool,
                "arena": self.arena.stats(), "memory": self.memory(ctl, pool),
                "latency_us": self.latency_us()}

    def close(self) -> None:
        """Stop the loop's thread (it uses all of the below), then free the ring, controller, pool, arena."""
        if self._thread is not None:
            lib.nta_ctl_poll_stop(self._poll)
            self._thread.join()
            self._thread = None
        self._stack.close()

"""The controller: XDP's metadata records in, page-pool fragments held and let go, in C (harness._ctl_c).

``Consumer`` is what a run uses: an arena (memfd), the dut's page pool on it,
the controller's per-packet work (``Controller``) and the XDP program's
metadata ring (``MetaRing``); ``pump()`` moves what the ring holds into the
controller a batch at a time, with no call per packet into Python.
"""

from __future__ import annotations

import contextlib
import os
import time

import numpy as np

from harness import cmodule
from harness.errors import NtaError
from harness.nta import CELLS, Arena, ArenaError, Pool, pool_allocator

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
        self._c, self.pool, self.hold = c, pool, hold

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
        return {name: getattr(st, name) for name, _ in ffi.typeof("struct nta_ctl_stats").fields}

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
    metadata ring; ``pump()`` moves what the ring holds into the controller, a batch at a time."""

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
        # the C loop's state: its batch buffer and, per microsecond of wait (XDP's timestamp -> the
        # drain), how many records waited that long; counts add up over calls
        self._buf = np.empty(self.BATCH, dtype=META)
        self._lat_hist = np.zeros(self.LAT_BUCKETS, dtype=np.uint64)
        self._poll = ffi.new("struct nta_ctl_poll *")
        self._poll.buf = ffi.cast("struct nta_meta *", ffi.from_buffer(self._buf))
        self._poll.max = self.BATCH
        self._poll.lat_hist = ffi.cast("uint64_t *", ffi.from_buffer(self._lat_hist))
        self._poll.lat_buckets = self.LAT_BUCKETS
        self._util: list[float] = []  # bytes asked / bytes of pages in use, a sample every UTIL_EVERY_NS
        self._util_next = 0
        # the pool's page map at the sample with the most pages in use
        self.peak_map: np.ndarray | None = None
        self._want_map, self._map_pages = peak_map, 0

    UTIL_EVERY_NS = 10_000_000
    BATCH = 8192  # records per drain
    LAT_BUCKETS = 1 << 17  # microseconds of wait counted one by one (131 ms); the last counts all longer

    def _sample_util(self) -> None:
        pages = self.pool.pages_in_use()
        if pages:
            self._util.append(self.ctl.stats()["bytes_held"] / (pages * self.arena.page_size))
        if self._want_map and pages > self._map_pages:
            self._map_pages, self.peak_map = pages, self.page_map()

    def page_map(self) -> np.ndarray:
        """The pool's page map over the pages the arena has used, with the chunks each held fragment was
        handed beyond what its frame asked for marked as slack (CELLS["slack"])."""
        top = self.arena.stats()["peak_pages_committed"]
        picture = self.pool.page_map(max(top, 1))
        flat, chunk = picture.reshape(-1), self.arena.chunk_size
        offs, lens = self.ctl.held()
        for off, size in zip(offs.tolist(), lens.tolist(), strict=True):
            first = (off - self.arena.data_off) // chunk
            asked, handed = -(-max(size, 1) // chunk), self.pool.frag_size(max(size, 1)) // chunk
            if handed > asked:
                flat[first + asked:first + handed] = CELLS["slack"]
        return picture

    @property
    def drained(self) -> int:
        return self._poll.drained

    def pump(self, until_ns: int = 0, idle_ns: int = 0) -> int:
        """Move what the ring holds into the controller, in C without the GIL: until the ring is empty,
        or, given a deadline (time.monotonic_ns()), until then, spinning (idle_ns 0) or sleeping idle_ns
        whenever it is empty. Samples the pool's utilisation between slices. Returns records moved."""
        before, p = self._poll.drained, self._poll
        while True:
            now = time.monotonic_ns()
            if now >= self._util_next:
                self._sample_util()
                self._util_next = now + self.UTIL_EVERY_NS
            p.until_ns, p.idle_ns = min(until_ns, self._util_next), idle_ns
            rc = lib.nta_ctl_poll(self.ctl._c, self.ring._rb, p)
            if rc < 0:
                raise NtaError(f"draining the metadata ring: {os.strerror(-rc)}")
            if p.odd:
                raise NtaError(f"the metadata ring held {p.odd} records of another size than struct nta_meta")
            if time.monotonic_ns() >= until_ns:
                return p.drained - before

    def snapshot(self, ring_stats: dict) -> dict:
        """Cumulative counts for an interval line."""
        c, p = self.ctl.stats(), self.pool.stats()
        back = p["cached"] + p["ring"]
        gone = back + p["ring_full"] + p["released_refcnt"]
        held_bytes = p["pages_in_use"] * self.arena.page_size
        return {"meta": self.drained, "lost": ring_stats["lost"], "alloc": c["handled"] - c["alloc_fails"],
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
        """The end of a run: what the policy still holds put back, pool and arena checked; the figures."""
        self._sample_util()
        self.ctl.flush()  # the pool must balance
        self.pool.check()
        self.arena.check()
        return self.figures()

    def memory(self, ctl: dict, pool: dict) -> dict:
        """What the frames' fragments took: the pool's pages holding them at their peak, the bytes the frames
        asked for then and at their own peak, utilisation (asked / bytes of those pages) at that moment and
        on average while the run went, and apart from those, the pages mapped and idle in the cache and
        ring at their peak."""
        page, peak = self.arena.page_size, ctl["peak_pages"]
        return {"allocator": self.allocator, "page_size": page, "peak_pages": peak,
                "peak_fragments": ctl["peak_held"], "peak_bytes_asked": ctl["peak_bytes_held"],
                "bytes_asked_at_peak_pages": ctl["bytes_at_peak_pages"],
                "utilisation_at_peak": ctl["bytes_at_peak_pages"] / (peak * page) if peak else None,
                "utilisation_mean": float(np.mean(self._util)) if self._util else None,
                "utilisation_samples": len(self._util), "idle_mapped_pages_peak": pool["peak_idle"]}

    def figures(self) -> dict:
        ctl, pool = self.ctl.stats(), self.pool.stats()
        return {"page_size": self.arena.page_size, "controller": ctl, "pool": pool,
                "arena": self.arena.stats(), "memory": self.memory(ctl, pool),
                "latency_us": self.latency_us()}

    def close(self) -> None:
        self._stack.close()

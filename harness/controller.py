"""The controller: XDP's metadata records in, page-pool fragments held and let go, in C (harness._ctl_c).

``Consumer`` is what a run uses for one RX queue: an arena (memfd), the
queue's page pool on it, the controller's per-packet work (``Controller``)
and the queue's metadata ring (``MetaRing``); ``pump()`` moves what the ring
holds into the controller a batch at a time, with no call per packet into
Python. With ``free_on="other"`` what the hold policy lets go is freed by a
``Reader`` on another CPU, through the pool's remote queue. ``Consumers``
runs one per RX queue (``nta run --queues N``) and adds their figures up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading

import numpy as np

from harness import cmodule, nsutil
from harness.errors import NtaError
from harness.nta import CELLS, Arena, ArenaError, Pool, counters_dict, pool_allocator
from harness.signals import held, started

ffi, lib = cmodule.load("_ctl_c")

FREE_ON = ("self", "other")  # who frees what the policy lets go: the controller, or a reader on another CPU
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


def interval_counts(drained: int, c: dict, p: dict, lost: int, page_size: int) -> dict:
    """An interval line's cumulative counts from the controller's counters ``c`` and the pool's ``p``."""
    back = p["cached"] + p["ring"]
    gone = back + p["ring_full"] + p["released_refcnt"]
    held_bytes = p["pages_in_use"] * page_size
    return {"meta": drained, "lost": lost, "alloc": c["handled"] - c["alloc_fails"],
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

    return {"samples": total, "p50": at(0.50), "p99": at(0.99), "p999": at(0.999), "max": max_ns / 1000.0}


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


LONGEST = {"max_wait_ns", "data_off"}  # of the counters, those that add up as the largest, not the sum


def added(dicts: list[dict]) -> dict:
    """Counters of several queues added up, key by key (a peak is the sum of each queue's peak; a longest
    wait the longest of theirs)."""
    return {k: (max if k in LONGEST else sum)(d[k] for d in dicts) for k in dicts[0]}


def xsk_added(per_queue: list[dict], page: int) -> dict:
    """The queues' socket counters added up, and what the frames held at the end took, per frame."""
    total = added([{k: v for k, v in x.items() if k != "bytes_per_frame_held"} for x in per_queue])
    held = total["held_at_end"]
    return {**total, "bytes_per_frame_held": total["pages_at_end"] * page / held if held else None}


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


@dataclasses.dataclass
class XskConfig:
    """An AF_XDP socket for a queue (harness/csrc/xsk.c): the device (``ifname`` in namespace ``ns``),
    its rings' size, the most buffers posted to the fill ring, a buffer's bytes (the largest frame the
    device takes), and the XDP program's XSKMAP."""

    ns: str | None
    ifname: str
    xskmap_fd: int
    buf_size: int
    ring_size: int = lib.NTA_XSK_RING
    fill_max: int = 0  # 0: ring_size
    copybreak: int = 0  # frames of at most this many bytes copied out of their buffer


class Xsk:
    """An AF_XDP socket on queue ``queue`` whose UMEM is ``pool``'s arena, its buffers the pool's, its
    frames held by ``ctl`` (made in the device's namespace; closed: the socket and UMEM gone, what was
    still posted back in the pool)."""

    def __init__(self, ctl: Controller, pool: Pool, cfg: XskConfig, queue: int):
        c = ffi.new("struct nta_xsk_config *")
        name = ffi.new("char[]", cfg.ifname.encode())
        c.ifname, c.queue, c.ring_size, c.fill_max = name, queue, cfg.ring_size, cfg.fill_max
        c.buf_size, c.xskmap_fd, c.copybreak = cfg.buf_size, cfg.xskmap_fd, cfg.copybreak
        why = ffi.new("char[]", 256)
        with nsutil.inside(cfg.ns) if cfg.ns else contextlib.nullcontext():
            x = lib.nta_xsk_create(ctl._c, pool._h(), pool.arena._h(), c, why, 256)
        if x == ffi.NULL:
            raise NtaError(f"AF_XDP on {cfg.ifname}: {ffi.string(why).decode(errors='replace')}")
        self._x, self.cfg = x, cfg

    def stats(self) -> dict:
        st = ffi.new("struct nta_xsk_stats *")
        rc = lib.nta_xsk_stats(self._x, st)
        if rc < 0:
            raise NtaError(f"XDP_STATISTICS: {os.strerror(-rc)}")
        return counters_dict(st)

    def close(self) -> None:
        if self._x is not None:
            lib.nta_xsk_destroy(self._x)
            self._x = None


class Reader:
    """A socket's reader, in C on a thread of its own (harness/csrc/handoff.c): it takes the fragments a
    controller hands it, reads each and frees it, posting the frees in batches to the fragment's pool,
    whose owner (the controller's thread) applies them."""

    HANDOFF = 1 << 16  # fragments in flight between the controller and the reader
    IDLE_US = 50

    def __init__(self, pool: Pool, batch: int = 64):
        self.pool = pool
        self._h = lib.nta_handoff_create(self.HANDOFF)
        if self._h == ffi.NULL:
            raise NtaError(f"making the reader's handoff: {os.strerror(ffi.errno)}")
        r = self._r = ffi.new("struct nta_free_reader *")
        r.pool, r.arena, r.batch, r.idle_ns = pool._h(), pool.arena._h(), batch, self.IDLE_US * 1000
        setattr(r, "from", self._h)  # a keyword in Python
        self._thread: threading.Thread | None = None
        self._rc = 0

    @property
    def handoff(self):
        return self._h

    def start(self, cpus: list[int] | None = None) -> None:
        self._r.stop = 0

        def body():
            if cpus:
                os.sched_setaffinity(0, set(cpus))
            self._rc = lib.nta_free_reader_run(self._r)

        self._thread = started(threading.Thread(target=body, name="nta-reader", daemon=True))

    def stop(self) -> None:
        """Let it free what it was handed, then end it; the pool's owner (the calling thread now) applies
        the posted frees meanwhile, so that a full queue cannot hold the reader up."""
        if self._thread is None:
            return
        lib.nta_free_reader_stop(self._r)
        while self._thread.is_alive():
            self.pool.drain_remote()
            self._thread.join(0.001)
        self._thread = None
        self.pool.drain_remote()
        if self._rc < 0:
            raise NtaError(f"the reader's frees: {os.strerror(-self._rc)}")

    def stats(self) -> dict:
        r = self._r
        return {"freed": r.taken, "batches": r.batches, "full_waits": r.full_waits}

    def close(self) -> None:
        with contextlib.suppress(NtaError):  # a failed post was said by stop() at the run's end, if it ran
            self.stop()
        if self._h is not None:
            lib.nta_handoff_destroy(self._h)
            self._h = None


class Consumer:
    """The controller side of a run: an arena (memfd), the dut's page pool on it, the controller, the
    metadata ring. ``start()`` runs the controller's C loop (harness/csrc/ctlpoll.c) on a thread of its
    own, which drains the ring as records come, samples the pool and publishes its counters, and never
    needs Python (the GIL) until ``stop()``; ``pump()`` drains what is left, on the calling thread."""

    def __init__(self, ring_fd: int | None, ifindex: int, hold: str, allocator: str = "nta",
                 arena_pages: int = 65536, queue: int = 0, peak_map: bool = False, free_on: str = "self",
                 xsk: XskConfig | None = None):
        parse_hold(hold)
        if free_on not in FREE_ON:
            raise NtaError(f"bad --free-on {free_on!r}: choose {', '.join(FREE_ON)}")
        self.hold, self.allocator, self.queue, self.free_on = hold, pool_allocator(allocator), queue, free_on
        self._stack = contextlib.ExitStack()
        self.reader: Reader | None = None
        self.ring = self.xsk = None
        self._xsk_end: dict | None = None
        # The signals held while the parts are made: one between a part's making and the registration of
        # its clean-up left it open (a socket whose posted buffers the pool's destroy then waited for).
        with held():
            try:
                self.arena = self._stack.enter_context(Arena(max_pages=arena_pages))
                self.pool = self._stack.enter_context(Pool(self.arena, ifindex=ifindex, queue=queue,
                                                           allocator=self.allocator))
                self.ctl = self._stack.enter_context(Controller(self.pool, hold))
                if free_on == "other":
                    self.reader = Reader(self.pool)
                    self._stack.callback(self.reader.close)  # before the controller and pool go
                    lib.nta_ctl_set_handoff(self.ctl._c, self.reader.handoff)
                if xsk is not None:
                    self.xsk = Xsk(self.ctl, self.pool, xsk, queue)
                    self._stack.callback(self.xsk.close)
                else:
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
        if self.xsk:
            self._offs = np.empty(self.BATCH, dtype=np.int64)
            p.xsk, p.offs = self.xsk._x, ffi.cast("int64_t *", ffi.from_buffer(self._offs))
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

    def start(self, idle_us: int, cpus: list[int] | None = None, reader_cpus: list[int] | None = None,
              nice: int = 0) -> None:
        """Run the loop on a thread of its own (on ``cpus``, when given, at ``nice``), sleeping ``idle_us``
        on an empty ring (0: spinning), until stop(); and the reader, when frees are on another CPU
        (``reader_cpus``)."""
        if self.reader:
            self.reader.start(reader_cpus)
        p = self._poll
        p.until_ns, p.idle_ns, p.stop = 2**64 - 1, idle_us * 1000, 0

        def body():
            if cpus:
                os.sched_setaffinity(0, set(cpus))  # this thread only
            if nice:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
            self._rc = lib.nta_ctl_poll(self.ctl._c, self._rb, p)

        self._thread = started(threading.Thread(target=body, name=f"nta-ctl-q{self.queue}", daemon=True))

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

    @property
    def _rb(self):
        return self.ring._rb if self.ring else ffi.NULL

    def xsk_stats(self) -> dict | None:
        """The socket's counters (harness/csrc/xsk.c), now or as they were when the run finished."""
        if self._xsk_end is not None:
            return self._xsk_end
        return self.xsk.stats() if self.xsk and self.xsk._x is not None else None

    def pump(self) -> int:
        """Drain what the ring holds into the controller now, on this thread (the loop's thread stopped).
        Returns records moved."""
        if self.running:
            raise RuntimeError("pump() while the controller's thread runs")
        p = self._poll
        before = p.drained
        p.until_ns, p.stop = 0, 0
        self._check(lib.nta_ctl_poll(self.ctl._c, self._rb, p))
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

    def accounted(self) -> int:
        """Records drained, and with a socket the frames it dropped (no fill buffer, its ring full)."""
        x = self.xsk_stats()
        return self.drained + (x["rx_dropped"] + x["rx_ring_full"] if x else 0)

    def caught_up(self, ring_stats: dict) -> bool:
        return self.accounted() >= ring_stats["submitted"]

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
        return interval_counts(drained, c, p, ring_stats["lost"], self.arena.page_size)

    def latency_us(self) -> dict:
        """How long records waited from XDP's timestamp to the controller's drain (latency_figures)."""
        return latency_figures(self._lat_hist, self._poll.lat_max_ns)

    def finish(self) -> dict:
        """The end of a run: the thread stopped, the ring drained, a last sample, what the policy still
        holds let go (the reader frees its share, and every free it posted is applied), pool and arena
        checked; the figures."""
        self.stop()
        self.pump()
        lib.nta_ctl_poll_sample(self.ctl._c, self._poll)
        if self.xsk:  # its last counts, then the socket gone and what it still had posted put back
            self._xsk_end = self.xsk.stats()
            self.xsk.close()
            # what the frames the policy still holds take, alone: the pool's pages now
            held, pages = self.ctl.stats()["held"], self.pool.pages_in_use()
            self._xsk_end.update(held_at_end=held, pages_at_end=pages,
                                 handed_at_end=self.pool.stats()["frag_bytes"],
                                 bytes_per_frame_held=pages * self.arena.page_size / held if held else None)
        self.ctl.flush()  # the pool must balance
        if self.reader:
            self.reader.stop()
        self.pool.check()
        self.arena.check()
        return self.figures()

    def memory(self, ctl: dict, pool: dict) -> dict:
        """What the frames' fragments took (memory_figures)."""
        return memory_figures(self.allocator, self.arena.page_size, ctl, pool, self._poll.util_sum,
                              self._poll.util_samples, self.posted_each)

    @property
    def posted_each(self) -> int | None:
        """The bytes the pool hands a buffer posted to the fill ring (with a socket)."""
        return self.pool.frag_size(self.xsk.cfg.buf_size) if self.xsk else None

    def figures(self) -> dict:
        ctl, pool = self.ctl.stats(), self.pool.stats()
        return {"queue": self.queue, "page_size": self.arena.page_size, "free_on": self.free_on,
                "controller": ctl, "pool": pool, "arena": self.arena.stats(), "memory": self.memory(ctl, pool),
                "latency_us": self.latency_us(), "reader": self.reader.stats() if self.reader else None,
                "xsk": self.xsk_stats()}

    def close(self) -> None:
        """Stop the loop's thread (it uses all of the below), then the reader's, then free the ring,
        controller, pool, arena."""
        if self._thread is not None:
            lib.nta_ctl_poll_stop(self._poll)
            self._thread.join()
            self._thread = None
        self._stack.close()


@dataclasses.dataclass
class Place:
    """Where a queue's controller thread runs (its CPUs; None: anywhere) and at what nice, and its reader's
    CPUs (with frees on another CPU)."""

    cpus: list[int] | None = None
    reader_cpus: list[int] | None = None
    nice: int = 0


class Consumers:
    """A Consumer per RX queue (``ring_fds[q]``: queue q's metadata ring), each with its own arena, pool
    (ifindex, q), controller and, with frees on another CPU, reader; what a run drives, with the
    interface of one Consumer: the counts and figures are the queues' added up, and ``figures()["queues"]``
    has each queue's. ``placement[q]``: where queue q's controller thread and reader run (Place)."""

    def __init__(self, ring_fds: list[int | None], ifindex: int, hold: str, allocator: str = "nta",
                 arena_pages: int = 65536, peak_map: bool = False, free_on: str = "self",
                 placement: list[Place] | None = None, xsk: XskConfig | None = None):
        self.queues: list[Consumer] = []
        self.placement = placement or [Place()] * len(ring_fds)
        try:
            for q, fd in enumerate(ring_fds):  # the page map at the peak: queue 0's pool
                self.queues.append(Consumer(fd, ifindex, hold, allocator, arena_pages, queue=q,
                                            peak_map=peak_map and q == 0, free_on=free_on, xsk=xsk))
        except BaseException:
            self.close()
            raise
        self.allocator, self.free_on = self.queues[0].allocator, free_on

    def start(self, idle_us: int) -> None:
        for c, where in zip(self.queues, self.placement, strict=True):
            c.start(idle_us, where.cpus, where.reader_cpus, where.nice)

    @property
    def running(self) -> bool:
        return any(c.running for c in self.queues)

    def pump(self) -> int:
        return sum(c.pump() for c in self.queues)

    @property
    def drained(self) -> int:
        return sum(c.drained for c in self.queues)

    def caught_up(self, ring_stats: dict) -> bool:
        """Has every record (or frame) XDP handed on been drained, or counted as dropped on the way?"""
        return sum(c.accounted() for c in self.queues) >= ring_stats["submitted"]

    def snapshot(self, ring_stats: dict) -> dict:
        counts = [c._counters() for c in self.queues]
        return interval_counts(sum(d for d, _, _ in counts), added([c for _, c, _ in counts]),
                               added([p for _, _, p in counts]), ring_stats["lost"],
                               self.queues[0].arena.page_size)

    @property
    def peak_map(self) -> np.ndarray | None:
        return self.queues[0].peak_map

    def finish(self) -> dict:
        """Each queue's end (Consumer.finish); the figures added up, and each queue's."""
        per_queue = [c.finish() for c in self.queues]
        if len(per_queue) == 1:
            return per_queue[0]
        ctl, pool = added([f["controller"] for f in per_queue]), added([f["pool"] for f in per_queue])
        first = self.queues[0]
        polls = [c._poll for c in self.queues]
        hist = sum((c._lat_hist for c in self.queues[1:]), first._lat_hist.copy())
        readers = [f["reader"] for f in per_queue if f["reader"]]
        return {"queue": None, "page_size": first.arena.page_size, "free_on": self.free_on,
                "controller": ctl, "pool": pool, "arena": added([f["arena"] for f in per_queue]),
                "memory": memory_figures(self.allocator, first.arena.page_size, ctl, pool,
                                         sum(p.util_sum for p in polls), sum(p.util_samples for p in polls),
                                         first.posted_each),
                "xsk": xsk_added([f["xsk"] for f in per_queue], first.arena.page_size) if per_queue[0]["xsk"] else None,
                "latency_us": latency_figures(hist, max(p.lat_max_ns for p in polls)),
                "reader": added(readers) if readers else None, "queues": per_queue}

    def close(self) -> None:
        for c in self.queues:
            c.close()

"""A run's controller side: ``Consumer`` for one RX queue (an arena (memfd), the queue's page pool on
it, the controller (harness.controller) and the queue's metadata ring or AF_XDP socket (harness.xsk));
``start()`` runs the controller's C loop on a thread of its own. With ``free_on="other"`` what the hold
policy lets go is freed by a ``FreeReader`` on another CPU (harness.freeing), through the pool's remote
queue. ``Consumers`` runs one per RX queue (``nta run --queues N``) and adds their figures up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading

import numpy as np

from harness import cmodule
from harness.controller import FREE_ON, META, Controller, MetaRing, ctl_counters, parse_hold
from harness.errors import NtaError
from harness.figures import added, interval_counts, latency_figures, memory_figures, xsk_added
from harness.freeing import FreeReader
from harness.nta import CELLS, Arena, Pool, counters_dict, pool_allocator
from harness.pressure import NONE, Limits
from harness.signals import held, started
from harness.timing import ControllerTiming
from harness.xsk import Xsk, XskConfig

ffi, lib = cmodule.load("_ctl_c")


class Consumer:
    """The controller side of a run: an arena (memfd), the dut's page pool on it, the controller, the
    metadata ring. ``start()`` runs the controller's C loop (harness/csrc/ctlpoll.c) on a thread of its
    own, which drains the ring as records come, samples the pool and publishes its counters, and never
    needs Python (the GIL) until ``stop()``; ``pump()`` drains what is left, on the calling thread."""

    def __init__(self, ring_fd: int | None, ifindex: int, hold: str, allocator: str = "nta",
                 arena_pages: int = 65536, queue: int = 0, peak_map: bool = False, free_on: str = "self",
                 xsk: XskConfig | None = None, limits: Limits = NONE):
        parse_hold(hold)
        if free_on not in FREE_ON:
            raise NtaError(f"bad --free-on {free_on!r}: choose {', '.join(FREE_ON)}")
        self.hold, self.allocator, self.queue, self.free_on = hold, pool_allocator(allocator), queue, free_on
        self._stack = contextlib.ExitStack()
        self.reader: FreeReader | None = None
        self.ring = self.xsk = None
        self._xsk_end: dict | None = None
        # The signals held while the parts are made: one between a part's making and the registration of
        # its clean-up left it open (a socket whose posted buffers the pool's destroy then waited for).
        with held():
            try:
                self.arena = self._stack.enter_context(Arena(max_pages=arena_pages, reserve_pages=limits.reserve))
                self.pool = self._stack.enter_context(Pool(self.arena, ifindex=ifindex, queue=queue,
                                                           allocator=self.allocator, budget=limits.budget))
                self.ctl = self._stack.enter_context(Controller(self.pool, hold, flow_limit=limits.flow_limit,
                                                                reserve=limits.may_reserve, stuck=limits.stuck))
                if free_on == "other":
                    self.reader = FreeReader(self.pool)
                    # undone in reverse: the reader closes (what it was handed freed, its posts applied
                    # when the pool goes), then the controller frees what it still holds itself, never
                    # into a handoff already gone (a run stopped before finish(): a second Ctrl-C)
                    self._stack.callback(lib.nta_ctl_set_handoff, self.ctl._c, ffi.NULL)
                    self._stack.callback(self.reader.close)
                    lib.nta_ctl_set_handoff(self.ctl._c, self.reader.handoff)
                if xsk is not None:  # with --permit, each buffer has room for the program's mark
                    xsk = dataclasses.replace(xsk, meta_room=lib.NTA_XSK_META_ROOM if limits.permit else 0,
                                              reserve=limits.may_reserve)
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
        self.timing: ControllerTiming | None = None

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

        started(threading.Thread(target=body, name=f"nta-ctl-q{self.queue}", daemon=True),
                lambda t: setattr(self, "_thread", t))

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

    def time_records(self, gaps) -> None:
        """Time the records' arrival at XDP against the schedule of the sender that feeds this queue (before
        the loop starts)."""
        if self.running:
            raise RuntimeError("time_records() while the controller's thread runs")
        self.timing = ControllerTiming(ffi, lib, self.ctl._c, gaps)

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
            return snap.drained, ctl_counters(snap.ctl), counters_dict(snap.pool)
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
        return self.pool.frag_size(self.xsk.buffer_bytes) if self.xsk else None

    def figures(self) -> dict:
        ctl, pool = self.ctl.stats(), self.pool.stats()
        return {"queue": self.queue, "page_size": self.arena.page_size, "free_on": self.free_on,
                "controller": ctl, "pool": pool, "arena": self.arena.stats(), "memory": self.memory(ctl, pool),
                "latency_us": self.latency_us(), "reader": self.reader.stats() if self.reader else None,
                "xsk": self.xsk_stats()}

    def close(self) -> None:
        """Stop the loop's thread (it uses all of the below), then the reader's, then free the ring,
        controller, pool, arena. With the signals held: a second Ctrl-C must not stop it half way (the
        thread left running over a socket or pool the rest destroys)."""
        with held():
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
                 placement: list[Place] | None = None, xsk: XskConfig | None = None, limits: Limits = NONE):
        self.queues: list[Consumer] = []
        self.placement = placement or [Place()] * len(ring_fds)
        try:
            for q, fd in enumerate(ring_fds):  # the page map at the peak: queue 0's pool
                self.queues.append(Consumer(fd, ifindex, hold, allocator, arena_pages, queue=q,
                                            peak_map=peak_map and q == 0, free_on=free_on, xsk=xsk,
                                            limits=limits))
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
            f = per_queue[0]
            return {**f, "xsk": xsk_added([f["xsk"]], self.queues[0].arena.page_size) if f["xsk"] else None}
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

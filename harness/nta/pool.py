"""The page pool over an arena, per device and RX queue (allocator/pool.c): pages, fragments, holders,
destructors, remote puts."""

from __future__ import annotations

import errno as E
import os

import numpy as np

from harness import signals
from harness.errors import NtaError
from harness.nta.arena import Arena
from harness.nta.binding import ArenaCorrupt, ArenaError, counters_dict, ffi, lib, raise_errno

VERDICTS = {"recycle": lib.NTA_DTOR_RECYCLE, "steal": lib.NTA_DTOR_STEAL, "release": lib.NTA_DTOR_RELEASE}

_PUT_WHY = {
    E.EALREADY: "nothing holds {off} (a put below zero, or a page in the cache, ring or "
                "awaiting its destructor)",
    E.ENOENT: "{off} is not a page or fragment the pool handed out",
    E.EINVAL: "{off} is not a chunk of the arena",
    E.EOVERFLOW: "too many holders of {off}",
}


class PoolBusy(ArenaError):
    """destroy() while pages are in flight: ``pages`` lists them (up to 64), ``count`` says how many."""

    def __init__(self, pages: list[int], count: int):
        shown = ", ".join(map(str, pages[:8])) + (", ..." if count > 8 else "")
        super().__init__(E.EBUSY, f"pool destroy: {count} pages in flight ({shown})")
        self.pages, self.count = pages, count


# who places a pool's fragments (enum nta_pool_alloc); "pow2" is the old name of "slab"
POOL_ALLOCATORS = {"nta": lib.NTA_POOL_NTA, "slab": lib.NTA_POOL_SLAB, "ppfrag": lib.NTA_POOL_PPFRAG,
                   "page": lib.NTA_POOL_PAGE}
ALLOCATOR_ALIASES = {"pow2": "slab"}


def pool_allocator(name: str) -> str:
    """The canonical name of a pool allocator (an alias resolved); NtaError for an unknown one."""
    name = ALLOCATOR_ALIASES.get(name, name)
    if name not in POOL_ALLOCATORS:
        raise NtaError(f"bad --allocator {name!r}: choose {', '.join(POOL_ALLOCATORS)} (pow2 = slab)")
    return name


class Pool:
    """A page pool over an arena, per device and RX queue (see allocator/pool.c).

    ``allocator`` places its fragments: "nta" (exact chunks, in any partly used
    page, combined on free), "slab" (powers of two, a page per class), "ppfrag"
    (the kernel's page_pool_alloc_frag: the current page only) or "page" (a
    page each).

    Destructors reach Python only in batches: with ``batch_destructor=True``
    pages whose last holder let go wait; ``destructed()`` takes them as a numpy
    array and ``judge(pages, verdicts)`` recycles, steals or releases each.
    """

    def __init__(self, arena: Arena, *, cache_size: int = 128, refill: int = 64, ring_size: int = 1024,
                 map_cost_ns: int = 0, ifindex: int = 0, queue: int = 0, batch_destructor: bool = False,
                 allocator: str = "nta", remote_size: int = 4096, budget: int = 0):
        self.allocator = pool_allocator(allocator)
        cfg = ffi.new("struct nta_pool_config *")
        cfg.cache_size, cfg.refill, cfg.ring_size = cache_size, refill, ring_size
        cfg.map_cost_ns, cfg.ifindex, cfg.queue = map_cost_ns, ifindex, queue
        cfg.flags = lib.NTA_POOL_BATCH_DTOR if batch_destructor else 0
        cfg.allocator = POOL_ALLOCATORS[self.allocator]
        cfg.remote_size = remote_size
        cfg.budget = budget  # ordinary pages it may hold (0: none); the arena's reserve is apart from it
        p = lib.nta_pool_create(arena._h(), cfg)
        if p == ffi.NULL:
            err = ffi.errno
            why = (f"all {lib.NTA_MAX_POOLS} pool slots of the arena are taken" if err == E.EUSERS else
                   "ring_size and remote_size must be powers of two, refill <= cache_size, and the arena "
                   "writable")
            raise ArenaError(err, f"creating a pool: {why}")
        self._p, self.arena = p, arena
        self.ifindex, self.queue = ifindex, queue
        arena._pools.add(id(self))

    def _h(self):
        if self._p is None:
            raise ArenaError(E.EBADF, "the pool is destroyed")
        return self._p

    def destroy(self, timeout: float = 0.0) -> None:
        """Give every page back to the arena; PoolBusy if some are still held after ``timeout`` seconds."""
        if self._p is None:
            return
        pages = np.zeros(64, dtype=np.int64)
        count = ffi.new("size_t *")
        with signals.held():  # a signal between the destroy and the forgetting destroyed it twice
            rc = lib.nta_pool_destroy(self._p, int(timeout * 1000), ffi.from_buffer("int64_t[]", pages), 64,
                                      count)
            if rc != -E.EBUSY:
                self._p = None
                self.arena._pools.discard(id(self))
        if rc == -E.EBUSY:
            raise PoolBusy([int(x) for x in pages[:min(64, count[0])]], int(count[0]))

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.destroy()
            return
        try:  # an error is on its way out: do not hide it behind PoolBusy
            self.destroy()
        except PoolBusy:
            self._p = None  # abandoned: its pages stay allocated in the arena, which is going away
            self.arena._pools.discard(id(self))

    def alloc_page(self, reserve: bool = False) -> int:
        off = lib.nta_pool_alloc_page(self._h(), lib.NTA_F_RESERVE if reserve else 0)
        if off < 0:
            raise_errno(off, "pool alloc_page: " + ("out of memory" if -off == E.ENOMEM else os.strerror(-off)))
        return off

    def alloc_frag(self, size: int, reserve: bool = False) -> int:
        off = lib.nta_pool_alloc_frag(self._h(), size, lib.NTA_F_RESERVE if reserve else 0)
        if off < 0:
            raise_errno(off, f"pool alloc_frag({size}): " + {E.ENOMEM: "out of memory", E.EINVAL: "size 0"}
                   .get(-off, os.strerror(-off)))
        return off

    def alloc_frags(self, sizes, reserve: bool = False) -> np.ndarray:
        """A fragment for each size, in one call; 0 where one failed."""
        sizes = np.ascontiguousarray(sizes, dtype=np.uint32)
        offs = np.empty(len(sizes), dtype=np.int64)
        lib.nta_pool_alloc_frag_bulk(self._h(), ffi.from_buffer("uint32_t[]", sizes),
                                     ffi.from_buffer("int64_t[]", offs), len(sizes),
                                     lib.NTA_F_RESERVE if reserve else 0)
        return offs

    def get(self, off: int) -> None:
        rc = lib.nta_pool_get(self._h(), off)
        if rc:
            raise_errno(rc, f"pool get({off}): " + _PUT_WHY.get(-rc, os.strerror(-rc)).format(off=off))

    def put(self, off: int, direct: bool = True) -> None:
        rc = lib.nta_pool_put(self._h(), off, lib.NTA_POOL_DIRECT if direct else 0)
        if rc:
            raise_errno(rc, f"pool put({off}): " + _PUT_WHY.get(-rc, os.strerror(-rc)).format(off=off))

    def put_bulk(self, offsets, direct: bool = True) -> None:
        offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        bad = ffi.new("size_t *")
        rc = lib.nta_pool_put_bulk(self._h(), ffi.from_buffer("int64_t[]", offsets), len(offsets),
                                   lib.NTA_POOL_DIRECT if direct else 0, bad)
        if rc:
            off = int(offsets[bad[0]])
            why = _PUT_WHY.get(-rc, os.strerror(-rc)).format(off=off)
            raise_errno(rc, f"pool put_bulk: entry {bad[0]}: {why}")

    def put_remote(self, off: int) -> bool:
        """A put from another thread, posted to the owner (applied on its next allocation or drain_remote());
        False when the queue is full (nothing posted: try again once the owner has drained)."""
        rc = lib.nta_pool_put_remote(self._h(), off)
        if rc == -E.EAGAIN:
            return False
        if rc:
            raise_errno(rc, "pool put_remote: " + os.strerror(-rc))
        return True

    def put_remote_bulk(self, offsets: np.ndarray) -> bool:
        """Puts from another thread, posted as one batch (one atomic operation); False when the queue has
        no room for all of them (nothing posted)."""
        offs = np.ascontiguousarray(offsets, dtype=np.int64)
        rc = lib.nta_pool_put_remote_bulk(self._h(), ffi.from_buffer("int64_t[]", offs), len(offs))
        if rc == -E.EAGAIN:
            return False
        if rc < 0:
            raise_errno(rc, f"pool put_remote_bulk of {len(offs)}: " + os.strerror(-rc))
        return True

    def drain_remote(self) -> int:
        """Apply what other threads posted (the owner); returns how many."""
        return lib.nta_pool_drain_remote(self._h())

    def reap(self) -> int:
        """Free what readers stopped pinning (and what dead readers pinned); return how many blocks."""
        return lib.nta_pool_reap(self._h())

    def destructed(self, limit: int = 4096) -> np.ndarray:
        """Pages waiting for their destructor (batch_destructor=True), at most ``limit``."""
        out = np.empty(limit, dtype=np.int64)
        n = lib.nta_pool_dtor_take(self._h(), ffi.from_buffer("int64_t[]", out), limit)
        return out[:n].copy()

    def judge(self, pages, verdicts) -> None:
        """Recycle, steal or release each page taken from destructed(): verdicts are names or codes."""
        pages = np.ascontiguousarray(pages, dtype=np.int64)
        if isinstance(verdicts, str):
            verdicts = [verdicts] * len(pages)
        codes = np.ascontiguousarray([VERDICTS[v] if isinstance(v, str) else v for v in verdicts],
                                     dtype=np.int32)
        if codes.shape != pages.shape:
            raise ArenaError(E.EINVAL, f"judge: {len(pages)} pages but {len(codes)} verdicts")
        rc = lib.nta_pool_dtor_complete(self._h(), ffi.from_buffer("int64_t[]", pages),
                                        ffi.from_buffer("int32_t[]", codes), len(pages))
        if rc:
            raise_errno(rc, "judge: a page is not waiting for its destructor, or a verdict is unknown; "
                       "nothing changed")

    def stats(self) -> dict:
        st = ffi.new("struct nta_pool_stats *")
        lib.nta_pool_stats(self._h(), st)
        return counters_dict(st)

    def frag_size(self, size: int) -> int:
        """The bytes a fragment of ``size`` takes in this pool, by its allocator (0: it cannot take one)."""
        return lib.nta_pool_frag_size(self._h(), size)

    def trim(self, off: int, size: int) -> int:
        """Cut the fragment at ``off`` down to ``size`` bytes, the tail back at once (NTA pools only);
        returns the bytes it now has."""
        rc = lib.nta_pool_frag_trim(self._h(), off, size)
        if rc < 0:
            raise_errno(rc, f"pool trim of {off} to {size}: " + os.strerror(-rc))
        return rc

    def cut(self, off: int, head: int, size: int) -> int:
        """Cut the fragment at ``off`` down to the ``size`` bytes ``head`` bytes into it, head and tail back at
        once (NTA pools only; one holder); returns its offset now, ``off + head``."""
        rc = lib.nta_pool_frag_cut(self._h(), off, head, size)
        if rc < 0:
            raise_errno(rc, f"pool cut of {off} to {size} bytes {head} in: " + os.strerror(-rc))
        return rc

    def pages_in_use(self) -> int:
        """Pages handed out whole or holding fragments now, read in place (no copy, nothing published)."""
        return lib.nta_pool_counters(self._h()).pages.pages_in_use

    def page_map(self, npages: int | None = None) -> np.ndarray:
        """The pool's picture (see nta_pool_page_map), shape (npages, chunks per page)."""
        npages = npages or self.arena.max_pages
        out = np.empty((npages, self.arena.chunks_per_page), dtype=np.uint8)
        rc = lib.nta_pool_page_map(self._h(), ffi.from_buffer("uint8_t[]", out), npages)
        if rc < 0:
            raise_errno(rc, f"pool page_map({npages}): " + os.strerror(-rc))
        return out

    def check(self) -> None:
        why = ffi.new("char[512]")
        rc = lib.nta_pool_check(self._h(), why, 512)
        if rc:
            raise ArenaCorrupt(-rc, "nta_pool_check: " + ffi.string(why).decode())

"""The Network Tree Allocator from Python: an arena object over allocator/.

::

    with Arena(max_pages=4096) as arena:          # anonymous (memfd), NTA, 4 KiB pages, 32 B chunks
        off = arena.alloc(1514)                   # an offset into the arena
        arena.view(off, 1514)[:] = frame          # numpy view of the block, no copy
        arena.free(off, 1514)
        offs = arena.alloc_bulk(sizes)            # a numpy batch in one C call
        arena.free_bulk(offs, sizes)
        arena.check()                             # nta_check(): raises ArenaCorrupt
        arena.page_map()                          # (pages, chunks per page) uint8

    with Arena.attach("/dev/shm/nta-x") as ro:   # another process, read-only
        ro.view(off, n)                           # reads in place

Errors are ``ArenaError`` (an ``OSError``: ``.errno`` is the C call's errno)
with a message that names the offset and size. Views are numpy arrays over
a Python mmap of the same memory, so closing an arena with views alive is
refused (``ArenaError``, EBUSY) instead of leaving them dangling.
"""

from __future__ import annotations

import errno as E
import mmap
import os

import numpy as np

from harness import cmodule
from harness.errors import NtaError

ffi, lib = cmodule.load("_nta_c")

KINDS = {"nta": lib.NTA_KIND_NTA, "pow2": lib.NTA_KIND_POW2}
KIND_NAMES = {v: k for k, v in KINDS.items()}
# one cell per chunk in a page map (enum nta_cell); "slack" is drawn by pictures only
CELLS = {name: getattr(lib, f"NTA_CELL_{name.upper()}")
         for name in ("untouched", "free", "used", "cached", "large", "slack")}
PAGE_SIZE, CHUNK_SIZE = lib.NTA_PAGE_SIZE_DEFAULT, lib.NTA_CHUNK_SIZE_DEFAULT

_FREE_WHY = {
    E.EALREADY: "double free: the block at offset {off} is already free",
    E.ENOENT: "no live block starts at offset {off}",
    E.ERANGE: "size {size} does not match the block at offset {off}",
    E.EINVAL: "offset {off} is not a chunk of a page in use (or size {size} is 0)",
    E.EROFS: "the arena is attached read-only",
}


class ArenaError(NtaError, OSError):
    """A failed allocator call: ``errno`` is the C call's errno."""

    def __init__(self, err: int, message: str):
        OSError.__init__(self, err, message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} ({E.errorcode.get(self.errno, self.errno)})"


class ArenaCorrupt(ArenaError):
    """nta_check() found bitmaps, lists or counters that disagree."""


def _raise(rc: int, message: str):
    raise ArenaError(-rc, message)


def counters_dict(cdata) -> dict:
    """A C struct of counters (a struct or a pointer to one, of any of the harness's C modules) as a flat
    dict, field by field, the fields of nested groups inlined (names from the real header)."""
    ctype = ffi.typeof(cdata)
    if ctype.kind == "pointer":
        ctype, cdata = ctype.item, cdata[0]
    out = {}
    for name, field in ctype.fields:
        if field.type.kind == "struct":
            out.update(counters_dict(getattr(cdata, name)))
        else:
            out[name] = getattr(cdata, name)
    return out


def counter_groups(ctype: str) -> list[tuple[str, list[str]]]:
    """The groups of a C struct of counters and the names in each, as the header lays them out."""
    return [(name, [n for n, _ in field.type.fields]) for name, field in ffi.typeof(ctype).fields
            if field.type.kind == "struct"]


def proc_starttime(pid: int) -> int:
    """The start time of process ``pid`` in clock ticks since boot, 0 when it is gone or a zombie: with the
    pid, what names a process (nta_proc_starttime, which the reader slots use too)."""
    return lib.nta_proc_starttime(pid)


def _view(mm: mmap.mmap, data_off: int, total: int, off: int, size: int) -> np.ndarray:
    if off < data_off or size < 0 or off + size > total:
        raise ArenaError(E.EINVAL, f"view({off}, {size}): outside the arena's data")
    return np.frombuffer(mm, dtype=np.uint8, count=size, offset=off)


class Arena:
    """One shared-memory arena and its allocator (NTA or the pow2 baseline)."""

    def __init__(self, path: str | None = None, *, max_pages: int, kind: str = "nta",
                 page_size: int = PAGE_SIZE, chunk_size: int = CHUNK_SIZE, reserve_pages: int = 0,
                 cache_depth: int | None = None, unlink: bool = True):
        if kind not in KINDS:
            raise ArenaError(E.EINVAL, f"unknown allocator {kind!r}: choose {', '.join(KINDS)}")
        cfg = ffi.new("struct nta_config *")
        cfg.kind = KINDS[kind]
        cfg.page_size, cfg.chunk_size = page_size, chunk_size
        cfg.max_pages, cfg.reserve_pages = max_pages, reserve_pages
        cfg.cache_depth = lib.NTA_CACHE_OFF if cache_depth == 0 else (cache_depth or 0)
        cfg.flags = lib.NTA_ARENA_UNLINK if unlink and path else 0
        a = lib.nta_arena_create(path.encode() if path else ffi.NULL, cfg)
        if a == ffi.NULL:
            err = ffi.errno
            what = {E.EINVAL: "bad geometry (page 4096..65536, chunk >= 16, both powers of two, "
                              "at most 256 chunks a page; reserve below max_pages)",
                    E.EEXIST: f"{path} already exists"}.get(err, os.strerror(err))
            raise ArenaError(err, f"creating an arena: {what}")
        self._open(a, path, writable=True)

    @classmethod
    def attach(cls, path: str, writable: bool = False) -> "Arena":
        """Attach to the arena another process created at ``path`` (read-only by default)."""
        a = lib.nta_arena_attach(path.encode(), int(writable))
        if a == ffi.NULL:
            err = ffi.errno
            what = {E.EBADMSG: "not an NTA arena (bad magic, geometry or size)",
                    E.EPROTO: "an arena of another layout version"}.get(err, os.strerror(err))
            raise ArenaError(err, f"attaching {path}: {what}")
        self = cls.__new__(cls)
        self._open(a, path, writable=writable)
        return self

    def _open(self, a, path, writable):
        self._a = a
        self._pools: set[int] = set()
        self.path = path
        self.writable = writable
        cfg = ffi.new("struct nta_config *")
        lib.nta_arena_config(a, cfg)
        self.kind = KIND_NAMES[cfg.kind]
        self.page_size, self.chunk_size = cfg.page_size, cfg.chunk_size
        self.max_pages, self.reserve_pages = cfg.max_pages, cfg.reserve_pages
        self.cache_depth = 0 if cfg.cache_depth == lib.NTA_CACHE_OFF else cfg.cache_depth
        self.chunks_per_page = self.page_size // self.chunk_size
        st = ffi.new("struct nta_stats *")
        lib.nta_stats(a, st)
        self.size, self.data_off = st.arena_bytes, st.data_off
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        self._mm = mmap.mmap(lib.nta_arena_fd(a), self.size, mmap.MAP_SHARED, prot)

    @property
    def reader_path(self) -> str:
        """Where another process attaches (Reader, 'nta attach'): the arena's file, or for a memfd this
        process's descriptor of it under /proc."""
        return self.path or f"/proc/{os.getpid()}/fd/{lib.nta_arena_fd(self._h())}"

    # -- life cycle -----------------------------------------------------------

    def close(self, force: bool = False) -> None:
        """Unmap (and, as its creator, unlink) the arena. Refused while pools or views use it,
        unless ``force``: then the file goes anyway and live views keep only their own mapping."""
        if self._a is None:
            return
        if self._pools and not force:
            raise ArenaError(E.EBUSY,
                             f"{len(self._pools)} pools still use this arena: destroy them before close()")
        try:
            self._mm.close()
        except BufferError:
            if not force:
                raise ArenaError(E.EBUSY,
                                 "views of this arena are still alive: delete them before close()") from None
        lib.nta_arena_close(self._a)
        self._a = None

    @property
    def closed(self) -> bool:
        return self._a is None

    def __enter__(self) -> "Arena":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        # On the way out of an error, leave nothing behind and do not hide the error.
        self.close(force=exc_type is not None)

    def _h(self):
        if self._a is None:
            raise ArenaError(E.EBADF, "the arena is closed")
        return self._a

    # -- allocation -------------------------------------------------------------

    def alloc(self, size: int, reserve: bool = False) -> int:
        off = lib.nta_alloc(self._h(), size, lib.NTA_F_RESERVE if reserve else 0)
        if off < 0:
            _raise(off, f"alloc({size}): " + {E.ENOMEM: "out of memory", E.EINVAL: "size 0",
                                              E.EROFS: "the arena is attached read-only"}
                   .get(-off, os.strerror(-off)))
        return off

    def free(self, off: int, size: int) -> None:
        if off < 0 or size < 0:
            raise ArenaError(E.EINVAL, f"free({off}, {size}): negative")
        rc = lib.nta_free(self._h(), off, size)
        if rc:
            why = _FREE_WHY.get(-rc, os.strerror(-rc)).format(off=off, size=size)
            _raise(rc, f"free({off}, {size}): {why}")

    def alloc_bulk(self, sizes, reserve: bool = False) -> np.ndarray:
        """Allocate len(sizes) blocks in one call; failed ones get offset 0."""
        sizes = np.ascontiguousarray(sizes, dtype=np.uint32)
        offs = np.empty(len(sizes), dtype=np.int64)
        rc = lib.nta_alloc_bulk(self._h(), ffi.from_buffer("uint32_t[]", sizes),
                                ffi.from_buffer("int64_t[]", offs), len(sizes),
                                lib.NTA_F_RESERVE if reserve else 0)
        if rc < 0:
            _raise(rc, "alloc_bulk: " + os.strerror(-rc))
        return offs

    def free_bulk(self, offsets, sizes) -> None:
        """Free a batch in one call. Each bad entry changes nothing; the first one is raised."""
        offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        sizes = np.ascontiguousarray(sizes, dtype=np.uint32)
        if offsets.shape != sizes.shape:
            raise ArenaError(E.EINVAL, f"free_bulk: {len(offsets)} offsets but {len(sizes)} sizes")
        bad = ffi.new("size_t *")
        rc = lib.nta_free_bulk(self._h(), ffi.from_buffer("int64_t[]", offsets),
                               ffi.from_buffer("uint32_t[]", sizes), len(offsets), bad)
        if rc:
            i = bad[0]
            off, size = int(offsets[i]), int(sizes[i])
            why = _FREE_WHY.get(-rc, os.strerror(-rc)).format(off=off, size=size)
            _raise(rc, f"free_bulk: entry {i}: {why}")

    def cache_flush(self) -> None:
        rc = lib.nta_cache_flush(self._h())
        if rc:
            _raise(rc, "cache_flush: " + os.strerror(-rc))

    def trim(self) -> int:
        """Hand the memory of whole free runs of pages back; return how many pages."""
        rc = lib.nta_arena_trim(self._h())
        if rc < 0:
            _raise(rc, "trim: " + os.strerror(-rc))
        return rc

    # -- looking ---------------------------------------------------------------

    def alloc_size(self, size: int) -> int:
        """The bytes an allocation of ``size`` takes here (chunks, a power of two, or pages); 0: none."""
        return lib.nta_alloc_size(self._h(), size)

    def view(self, off: int, size: int) -> np.ndarray:
        """The bytes [off, off + size) as a numpy uint8 array over the shared memory (no copy)."""
        return _view(self._mm, self.data_off, self.size, off, size)

    def check(self) -> None:
        why = ffi.new("char[512]")
        rc = lib.nta_check(self._h(), why, 512)
        if rc:
            raise ArenaCorrupt(-rc, "nta_check: " + ffi.string(why).decode())

    def stats(self) -> dict:
        st = ffi.new("struct nta_stats *")
        lib.nta_stats(self._h(), st)
        return counters_dict(st)

    def page_map(self, npages: int | None = None) -> np.ndarray:
        """One cell per chunk (see CELLS), shape (npages, chunks per page); default: pages used so far."""
        if npages is None:
            npages = self.max_pages
        out = np.empty((npages, self.chunks_per_page), dtype=np.uint8)
        rc = lib.nta_page_map(self._h(), ffi.from_buffer("uint8_t[]", out), npages)
        if rc < 0:
            _raise(rc, f"page_map({npages}): " + os.strerror(-rc))
        return out

    def pools(self) -> list[dict]:
        """The pools using this arena, as they last published their counters."""
        out = ffi.new("struct nta_pool_info[]", lib.NTA_MAX_POOLS)
        n = lib.nta_arena_pools(self._h(), out, lib.NTA_MAX_POOLS)
        return [{"pid": out[i].pid, "ifindex": out[i].ifindex, "queue": out[i].queue,
                 "torn": bool(out[i].flags & lib.NTA_POOL_INFO_TORN),
                 "stats": counters_dict(out[i].st)} for i in range(n)]

    def free_histogram(self, nbins: int | None = None) -> tuple[np.ndarray, int]:
        """(regions by length in chunks, free page runs)."""
        nbins = nbins or self.chunks_per_page + 1
        hist = np.zeros(nbins, dtype=np.uint64)
        runs = ffi.new("uint64_t *")
        rc = lib.nta_free_histogram(self._h(), ffi.from_buffer("uint64_t[]", hist), nbins, runs)
        if rc < 0:
            _raise(rc, "free_histogram: " + os.strerror(-rc))
        return hist, int(runs[0])


# -- the page pool ------------------------------------------------------------

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
                 allocator: str = "nta", remote_size: int = 4096):
        self.allocator = pool_allocator(allocator)
        cfg = ffi.new("struct nta_pool_config *")
        cfg.cache_size, cfg.refill, cfg.ring_size = cache_size, refill, ring_size
        cfg.map_cost_ns, cfg.ifindex, cfg.queue = map_cost_ns, ifindex, queue
        cfg.flags = lib.NTA_POOL_BATCH_DTOR if batch_destructor else 0
        cfg.allocator = POOL_ALLOCATORS[self.allocator]
        cfg.remote_size = remote_size
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
        rc = lib.nta_pool_destroy(self._p, int(timeout * 1000), ffi.from_buffer("int64_t[]", pages), 64,
                                  count)
        if rc == -E.EBUSY:
            raise PoolBusy([int(x) for x in pages[:min(64, count[0])]], int(count[0]))
        self._p = None
        self.arena._pools.discard(id(self))

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
            _raise(off, "pool alloc_page: " + ("out of memory" if -off == E.ENOMEM else os.strerror(-off)))
        return off

    def alloc_frag(self, size: int, reserve: bool = False) -> int:
        off = lib.nta_pool_alloc_frag(self._h(), size, lib.NTA_F_RESERVE if reserve else 0)
        if off < 0:
            _raise(off, f"pool alloc_frag({size}): " + {E.ENOMEM: "out of memory", E.EINVAL: "size 0"}
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
            _raise(rc, f"pool get({off}): " + _PUT_WHY.get(-rc, os.strerror(-rc)).format(off=off))

    def put(self, off: int, direct: bool = True) -> None:
        rc = lib.nta_pool_put(self._h(), off, lib.NTA_POOL_DIRECT if direct else 0)
        if rc:
            _raise(rc, f"pool put({off}): " + _PUT_WHY.get(-rc, os.strerror(-rc)).format(off=off))

    def put_bulk(self, offsets, direct: bool = True) -> None:
        offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        bad = ffi.new("size_t *")
        rc = lib.nta_pool_put_bulk(self._h(), ffi.from_buffer("int64_t[]", offsets), len(offsets),
                                   lib.NTA_POOL_DIRECT if direct else 0, bad)
        if rc:
            off = int(offsets[bad[0]])
            why = _PUT_WHY.get(-rc, os.strerror(-rc)).format(off=off)
            _raise(rc, f"pool put_bulk: entry {bad[0]}: {why}")

    def put_remote(self, off: int) -> bool:
        """A put from another thread, posted to the owner (applied on its next allocation or drain_remote());
        False when the queue is full (nothing posted: try again once the owner has drained)."""
        rc = lib.nta_pool_put_remote(self._h(), off)
        if rc == -E.EAGAIN:
            return False
        if rc:
            _raise(rc, "pool put_remote: " + os.strerror(-rc))
        return True

    def put_remote_bulk(self, offsets: np.ndarray) -> bool:
        """Puts from another thread, posted as one batch (one atomic operation); False when the queue has
        no room for all of them (nothing posted)."""
        offs = np.ascontiguousarray(offsets, dtype=np.int64)
        rc = lib.nta_pool_put_remote_bulk(self._h(), ffi.from_buffer("int64_t[]", offs), len(offs))
        if rc == -E.EAGAIN:
            return False
        if rc < 0:
            _raise(rc, f"pool put_remote_bulk of {len(offs)}: " + os.strerror(-rc))
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
            _raise(rc, "judge: a page is not waiting for its destructor, or a verdict is unknown; "
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
            _raise(rc, f"pool trim of {off} to {size}: " + os.strerror(-rc))
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
            _raise(rc, f"pool page_map({npages}): " + os.strerror(-rc))
        return out

    def check(self) -> None:
        why = ffi.new("char[512]")
        rc = lib.nta_pool_check(self._h(), why, 512)
        if rc:
            raise ArenaCorrupt(-rc, "nta_pool_check: " + ffi.string(why).decode())


# -- the zero-copy reader -----------------------------------------------------------


class Reader:
    """Another process's view of an arena: read-only, in place, with pins.

    ::

        with Reader("/dev/shm/nta-x") as r:
            r.pin(off)                 # the owner's free of off now waits for us
            frame = r.view(off, n)     # numpy, read-only, no copy
            r.unpin(off)

    A reader that dies keeps nothing pinned: the owner reclaims its slot.
    """

    def __init__(self, path: str):
        r = lib.nta_reader_attach(path.encode())
        if r == ffi.NULL:
            err = ffi.errno
            what = {E.EUSERS: "all reader slots are taken",
                    E.EBADMSG: "not an NTA arena"}.get(err, os.strerror(err))
            raise ArenaError(err, f"attaching a reader to {path}: {what}")
        self._r, self.path = r, path
        a = lib.nta_reader_arena(r)
        st = ffi.new("struct nta_stats *")
        lib.nta_stats(a, st)
        self.size, self.data_off = st.arena_bytes, st.data_off
        self._mm = mmap.mmap(lib.nta_arena_fd(a), self.size, mmap.MAP_SHARED, mmap.PROT_READ)

    def pin(self, off: int) -> None:
        rc = lib.nta_reader_pin(self._h(), off)
        if rc:
            _raise(rc, f"pin({off}): " + {E.ESTALE: "the block was freed before the pin took",
                                         E.ENOSPC: "this reader's pins are full",
                                         E.EINVAL: "not a chunk of the arena"}.get(-rc, os.strerror(-rc)))

    def pin_many(self, offsets) -> np.ndarray:
        """Pin a batch with one barrier; returns 0 or a negative errno per offset (-ESTALE: gone)."""
        offsets = np.ascontiguousarray(offsets, dtype=np.uint64)
        res = np.empty(len(offsets), dtype=np.int32)
        lib.nta_reader_pin_many(self._h(), ffi.from_buffer("uint64_t[]", offsets),
                                ffi.from_buffer("int[]", res), len(offsets))
        return res

    def unpin(self, off: int) -> None:
        rc = lib.nta_reader_unpin(self._h(), off)
        if rc:
            _raise(rc, f"unpin({off}): not pinned by this reader")

    def view(self, off: int, size: int) -> np.ndarray:
        """The bytes [off, off + size), read-only, in place."""
        return _view(self._mm, self.data_off, self.size, off, size)

    def stats(self) -> dict:
        st = ffi.new("struct nta_stats *")
        lib.nta_stats(lib.nta_reader_arena(self._h()), st)
        return counters_dict(st)

    def _h(self):
        if self._r is None:
            raise ArenaError(E.EBADF, "the reader is closed")
        return self._r

    def close(self) -> None:
        if self._r is None:
            return
        try:
            self._mm.close()
        except BufferError:
            raise ArenaError(E.EBUSY,
                             "views of this reader are still alive: delete them before close()") from None
        lib.nta_reader_close(self._r)
        self._r = None

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

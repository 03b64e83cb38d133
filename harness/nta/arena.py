"""An arena and its allocator (NTA or the pow2 baseline): allocation, frees, checks, pictures."""

from __future__ import annotations

import errno as E
import mmap
import os

import numpy as np

from harness import signals
from harness.nta.binding import (
    CHUNK_SIZE,
    KIND_NAMES,
    KINDS,
    PAGE_SIZE,
    ArenaCorrupt,
    ArenaError,
    counters_dict,
    ffi,
    lib,
    raise_errno,
    view_of,
)

_FREE_WHY = {
    E.EALREADY: "double free: the block at offset {off} is already free",
    E.ENOENT: "no live block starts at offset {off}",
    E.ERANGE: "size {size} does not match the block at offset {off}",
    E.EINVAL: "offset {off} is not a chunk of a page in use (or size {size} is 0)",
    E.EROFS: "the arena is attached read-only",
}



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
        with signals.held():  # a signal between the close and the forgetting closed it twice
            a, self._a = self._a, None
            lib.nta_arena_close(a)

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
            raise_errno(off, f"alloc({size}): " + {E.ENOMEM: "out of memory", E.EINVAL: "size 0",
                                              E.EROFS: "the arena is attached read-only"}
                   .get(-off, os.strerror(-off)))
        return off

    def free(self, off: int, size: int) -> None:
        if off < 0 or size < 0:
            raise ArenaError(E.EINVAL, f"free({off}, {size}): negative")
        rc = lib.nta_free(self._h(), off, size)
        if rc:
            why = _FREE_WHY.get(-rc, os.strerror(-rc)).format(off=off, size=size)
            raise_errno(rc, f"free({off}, {size}): {why}")

    def alloc_bulk(self, sizes, reserve: bool = False) -> np.ndarray:
        """Allocate len(sizes) blocks in one call; failed ones get offset 0."""
        sizes = np.ascontiguousarray(sizes, dtype=np.uint32)
        offs = np.empty(len(sizes), dtype=np.int64)
        rc = lib.nta_alloc_bulk(self._h(), ffi.from_buffer("uint32_t[]", sizes),
                                ffi.from_buffer("int64_t[]", offs), len(sizes),
                                lib.NTA_F_RESERVE if reserve else 0)
        if rc < 0:
            raise_errno(rc, "alloc_bulk: " + os.strerror(-rc))
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
            raise_errno(rc, f"free_bulk: entry {i}: {why}")

    def cache_flush(self) -> None:
        rc = lib.nta_cache_flush(self._h())
        if rc:
            raise_errno(rc, "cache_flush: " + os.strerror(-rc))

    def trim(self) -> int:
        """Hand the memory of whole free runs of pages back; return how many pages."""
        rc = lib.nta_arena_trim(self._h())
        if rc < 0:
            raise_errno(rc, "trim: " + os.strerror(-rc))
        return rc

    # -- looking ---------------------------------------------------------------

    def alloc_size(self, size: int) -> int:
        """The bytes an allocation of ``size`` takes here (chunks, a power of two, or pages); 0: none."""
        return lib.nta_alloc_size(self._h(), size)

    def view(self, off: int, size: int) -> np.ndarray:
        """The bytes [off, off + size) as a numpy uint8 array over the shared memory (no copy)."""
        return view_of(self._mm, self.data_off, self.size, off, size)

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
            raise_errno(rc, f"page_map({npages}): " + os.strerror(-rc))
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
            raise_errno(rc, "free_histogram: " + os.strerror(-rc))
        return hist, int(runs[0])

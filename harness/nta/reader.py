"""The zero-copy reader: another process's read-only view of an arena, with pins (allocator/reader.c)."""

from __future__ import annotations

import errno as E
import mmap
import os

import numpy as np

from harness.nta.binding import ArenaError, counters_dict, ffi, lib, raise_errno, view_of


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
            raise_errno(rc, f"pin({off}): " + {E.ESTALE: "the block was freed before the pin took",
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
            raise_errno(rc, f"unpin({off}): not pinned by this reader")

    def view(self, off: int, size: int) -> np.ndarray:
        """The bytes [off, off + size), read-only, in place."""
        return view_of(self._mm, self.data_off, self.size, off, size)

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

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

from harness.nta.arena import Arena
from harness.nta.binding import (
    CELLS,
    CHUNK_SIZE,
    KINDS,
    PAGE_SIZE,
    ArenaCorrupt,
    ArenaError,
    counter_groups,
    counters_dict,
    proc_starttime,
)
from harness.nta.pool import ALLOCATOR_ALIASES, POOL_ALLOCATORS, VERDICTS, Pool, PoolBusy, pool_allocator
from harness.nta.reader import Reader

__all__ = ["ALLOCATOR_ALIASES", "CELLS", "CHUNK_SIZE", "KINDS", "PAGE_SIZE", "POOL_ALLOCATORS", "VERDICTS",
           "Arena", "ArenaCorrupt", "ArenaError", "Pool", "PoolBusy", "Reader", "counter_groups",
           "counters_dict", "pool_allocator", "proc_starttime"]

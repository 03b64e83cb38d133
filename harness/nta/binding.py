"""The allocator's binding (harness._nta_c, built from allocator/nta.h): its errors, counters and
constants, shared by the arena, the pool and the reader."""

from __future__ import annotations

import errno as E
import mmap

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

class ArenaError(NtaError, OSError):
    """A failed allocator call: ``errno`` is the C call's errno."""

    def __init__(self, err: int, message: str):
        OSError.__init__(self, err, message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} ({E.errorcode.get(self.errno, self.errno)})"


class ArenaCorrupt(ArenaError):
    """nta_check() found bitmaps, lists or counters that disagree."""


def raise_errno(rc: int, message: str):
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


def view_of(mm: mmap.mmap, data_off: int, total: int, off: int, size: int) -> np.ndarray:
    if off < data_off or size < 0 or off + size > total:
        raise ArenaError(E.EINVAL, f"view({off}, {size}): outside the arena's data")
    return np.frombuffer(mm, dtype=np.uint8, count=size, offset=off)



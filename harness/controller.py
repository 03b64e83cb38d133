"""The controller's binding (harness._ctl_c): XDP's metadata records in, page-pool fragments held and let
go under a lifetime policy, in C, one call a batch (``Controller``); the metadata ring drained in C
(``MetaRing``). A run's controller side, a queue at a time, is harness.consumer.
"""

from __future__ import annotations

import os

import numpy as np

from harness import cmodule, signals
from harness.errors import NtaError
from harness.nta import ArenaError, Pool, counters_dict

ffi, lib = cmodule.load("_ctl_c")

# why the controller drops a frame (enum nta_drop_reason, bpf/nta_shared.h), by its names: NTA_DROP_NOMEM
# is "nomem"; the counters are drop_<name>
DROP_REASONS = [name.removeprefix("NTA_DROP_").lower()
                for _, name in sorted(ffi.typeof("enum nta_drop_reason").elements.items())
                if name != "NTA_DROP_REASONS"]
STUCK_MAX = lib.NTA_CTL_STUCK_MAX


def ctl_counters(cdata) -> dict:
    """The controller's counters (struct nta_ctl_stats) as a flat dict, the drops by reason as drop_<name>
    and their sum as drops."""
    d = counters_dict(cdata)
    per = list(d.pop("drops"))
    d.update({f"drop_{name}": per[i] for i, name in enumerate(DROP_REASONS)}, drops=sum(per))
    return d

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
        with signals.held():  # a signal between the close and the forgetting closed it twice
            rb, self._rb = self._rb, None
            if rb is not None:
                lib.nta_ringbuf_close(rb)


class Controller:
    """Metadata records in, pool fragments held and freed, in C, one call per batch (harness/csrc/ctl.c)."""

    def __init__(self, pool: Pool, hold: str = "immediate", max_held: int = 1 << 20, seed: int = 1,
                 flow_limit: int = 0, reserve: bool = False, stuck: list[int] = ()):
        self.policy, self.param = parse_hold(hold)
        if len(stuck) > STUCK_MAX:
            raise NtaError(f"{len(stuck)} stuck flows: at most {STUCK_MAX}")
        cfg = ffi.new("struct nta_ctl_config *")
        cfg.policy, cfg.param, cfg.max_held, cfg.seed = HOLDS[self.policy], self.param, max_held, seed
        # at the limit: a flow's bytes (its fragments as the pool hands them out), permitted frames to the
        # reserve, the flows never read (by flow hash)
        cfg.flow_limit, cfg.reserve, cfg.nstuck = flow_limit, int(reserve), len(stuck)
        for i, h in enumerate(stuck):
            cfg.stuck[i] = h
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
        return ctl_counters(st)

    def close(self) -> None:
        with signals.held():
            if self._c is not None:
                self.flush()
                c, self._c = self._c, None
                lib.nta_ctl_destroy(c)

    def __enter__(self) -> "Controller":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

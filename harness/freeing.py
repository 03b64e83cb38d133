"""Frees on another CPU: a socket's reader in C on a thread of its own (harness/csrc/handoff.c), which
takes what a controller lets go, reads it and posts the frees to the pool's owner."""

from __future__ import annotations

import contextlib
import os
import threading

from harness import cmodule, signals
from harness.errors import NtaError
from harness.nta import Pool

ffi, lib = cmodule.load("_ctl_c")


class FreeReader:
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

        signals.started(threading.Thread(target=body, name="nta-reader", daemon=True),
                        lambda t: setattr(self, "_thread", t))

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
        with signals.held():
            h, self._h = self._h, None
            if h is not None:
                lib.nta_handoff_destroy(h)

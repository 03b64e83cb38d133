"""The CPUs this process may use, and thread counts checked against them (one place for both)."""

from __future__ import annotations

import contextlib
import os

from harness.errors import NtaError


def usable() -> list[int]:
    """The CPUs this process may run on, in order."""
    return sorted(os.sched_getaffinity(0))


def check_threads(n: int, what: str = "--threads") -> list[int]:
    """The first ``n`` usable CPUs, one a thread; NtaError unless 1 <= n <= how many there are."""
    cpus = usable()
    if not 1 <= n <= len(cpus):
        raise NtaError(f"bad {what} {n}: 1..{len(cpus)}, a CPU each (this process may use {len(cpus)})")
    return cpus[:n]



@contextlib.contextmanager
def pinned(cpus: list[int]):
    """The calling thread runs on ``cpus`` only until the block ends (threads it starts meanwhile inherit
    that, unless they pin themselves)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)

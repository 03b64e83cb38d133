"""Entering network namespaces, for this thread or for a child process.

Python 3.11 has no os.setns; pyroute2's pushns/popns switch the calling
thread and restore it. Children started with ``in_netns_preexec`` enter the
namespace between fork and exec and die with their parent (PR_SET_PDEATHSIG),
so a killed run leaves no replayer behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

from pyroute2 import netns

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
NETNS_RUN_DIR = "/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def inside(name: str):
    """Run the body with this thread in network namespace ``name``."""
    netns.pushns(name)
    try:
        yield
    finally:
        netns.popns()


def in_netns_preexec(name: str, cpu: int | None = None):
    """A subprocess preexec_fn: enter ``name``, die with the parent (and run on ``cpu`` if given)."""
    path = os.path.join(NETNS_RUN_DIR, name)
    parent = os.getpid()

    def _enter():
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed: it will never come
            os._exit(1)
        fd = os.open(path, os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns({path}): {os.strerror(err)}")
        finally:
            os.close(fd)

    return _enter


def write_sysctl(name: str, key: str, value: str) -> None:
    """Write /proc/sys/<key> as seen from network namespace ``name``."""
    with inside(name):
        with open(os.path.join("/proc/sys", key), "w") as f:
            f.write(value)


def read_sysctl(name: str, key: str) -> str:
    with inside(name):
        with open(os.path.join("/proc/sys", key)) as f:
            return f.read().strip()


def processes_in(name: str) -> list[tuple[int, str]]:
    """The processes (pid, command name) whose network namespace is ``name``; zombies left out."""
    try:
        want = os.stat(os.path.join(NETNS_RUN_DIR, name)).st_ino
    except OSError:
        return []
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino != want:
                continue
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm, state = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2]
        if state not in "ZX":
            found.append((int(pid), comm))
    return found

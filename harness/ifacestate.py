"""XDP programs 'nta run --iface' attached to interfaces it did not make, by owner record
(``/run/nta-harness/ifaces/<pid>.json``), so that a run killed with -9 leaves nothing behind for long:
the next 'nta run' or 'nta topo down' detaches its program.

A program attached through netlink stays on its device when its process dies (AF_XDP sockets and their
UMEM go with the process; the channels are never changed). The record names the interface, its
namespace, and the program's id once attached: a stale record's program is detached only while that
same program is still there, so a program someone attached since is never touched.
"""

from __future__ import annotations

import contextlib
import json
import os

from harness import signals
from harness.netlink import Netlink
from harness.nta import proc_starttime
from harness.topostate import STATE_DIR, link_xdp

IFACE_DIR = os.path.join(STATE_DIR, "ifaces")


class Attachment:
    """The owner record of one run's program on a named interface: written before the program is loaded
    (``begin``), given its id once loaded and before it is attached (``attached``), removed when the run has
    detached it (``end``)."""

    def __init__(self, iface: str, netns: str | None, mode: str):
        self.path = os.path.join(IFACE_DIR, f"{os.getpid()}.json")
        self.record = {"pid": os.getpid(), "starttime": proc_starttime(os.getpid()), "iface": iface,
                       "netns": netns, "mode": mode, "prog_id": None}

    def _write(self) -> None:
        tmp = f"{self.path}.tmp"
        for attempt in range(3):  # another run may remove the directory, empty, between the two steps
            os.makedirs(IFACE_DIR, mode=0o755, exist_ok=True)
            try:
                with signals.held():
                    with open(tmp, "w") as f:
                        json.dump(self.record, f)
                    os.replace(tmp, self.path)
                return
            except FileNotFoundError:
                if attempt == 2:
                    raise

    def begin(self) -> None:
        self._write()

    def attached(self, prog_id: int | None) -> None:
        self.record["prog_id"] = prog_id
        self._write()

    def end(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        _tidy()


def _tidy() -> None:
    """The records' directory goes when the last record does (another run may be writing one: then it stays)."""
    with contextlib.suppress(OSError):
        os.rmdir(IFACE_DIR)


def _records() -> list[tuple[str, dict]]:
    out = []
    for fn in sorted(os.listdir(IFACE_DIR)) if os.path.isdir(IFACE_DIR) else []:
        path = os.path.join(IFACE_DIR, fn)
        try:
            with open(path) as f:
                out.append((path, json.load(f)))
        except (OSError, ValueError):
            if fn.endswith(".tmp"):  # half written by a process killed meanwhile
                with contextlib.suppress(OSError):
                    os.unlink(path)
    return out


def _live(rec: dict) -> bool:
    pid = rec.get("pid")
    return bool(pid) and proc_starttime(pid) == rec.get("starttime")


def detach_stale() -> list[str]:
    """Detach the program of every record whose run is gone, if it is still the one on its interface, and
    remove the record; return a line for each program detached."""
    done = []
    for path, rec in _records():
        if _live(rec):
            continue
        iface, ns, prog = rec.get("iface"), rec.get("netns"), rec.get("prog_id")
        where = f"{iface} [{ns}]" if ns else str(iface)
        if prog and (ns is None or os.path.exists(os.path.join("/run/netns", ns))):
            with contextlib.suppress(OSError, IndexError), Netlink(ns) as ipr:
                found = ipr.link_lookup(ifname=iface)
                mode, now = link_xdp(ipr.get_links(found[0])[0]) if found else (None, None)
                if now == prog:
                    from harness.xdp import MODE_FLAGS, remove_xdp  # BCC: only when there is one to detach

                    remove_xdp(ns, iface, MODE_FLAGS[rec.get("mode") or "native"])
                    done.append(f"detached XDP prog id {prog} ({mode}) from {where}: its run (pid {rec['pid']}) "
                                "is gone")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    _tidy()
    return done

"""The topologies on this machine, by their owner records (``/run/nta-harness/<tag>.json``) and
namespaces: which are live, stale (their owner process gone) or persistent, and removing the stale ones
with whatever still runs inside them. harness.topology makes and removes one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import time

from pyroute2 import netns

from harness import nsutil
from harness.netlink import Netlink
from harness.nta import proc_starttime

GEN_PREFIX = "nta-gen-"
DUT_PREFIX = "nta-dut-"
GEN_IF = "veth-gen"
DUT_IF = "veth-dut"
STATE_DIR = "/run/nta-harness"

# IFLA_XDP_ATTACHED (include/uapi/linux/if_link.h: XDP_ATTACHED_*), as a number
# or as the name pyroute2 decodes it to.
XDP_ATTACHED = {0: None, 1: "native", 2: "generic", 3: "offload", 4: "multi",
                "none": None, "xdp": "native", "xdpgeneric": "generic",
                "xdpoffload": "offload", "xdpmulti": "multi"}


@dataclasses.dataclass
class TopoInfo:
    """What ``nta topo status`` reports about one topology."""

    tag: str
    state: str  # "live", "stale" or "persistent"
    owner_pid: int | None
    namespaces: list[str]
    mtu: int | None = None
    xdp: str | None = None  # attach mode, or None
    xdp_prog_id: int | None = None

    @property
    def stale(self) -> bool:
        return self.state == "stale"



def owner_path(tag: str) -> str:
    return os.path.join(STATE_DIR, f"{tag}.json")


def read_owner(tag: str) -> dict | None:
    try:
        with open(owner_path(tag)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def link_xdp(link) -> tuple[str | None, int | None]:
    xdp = link.get("IFLA_XDP")
    if not xdp:
        return None, None
    attached = xdp.get("IFLA_XDP_ATTACHED")
    mode = XDP_ATTACHED.get(attached or 0, f"unknown ({attached})")
    return mode, xdp.get("IFLA_XDP_PROG_ID")


def end_processes(tag: str, timeout: float = 2.0) -> list[tuple[int, str]]:
    """End every process still inside topology ``tag``'s namespaces (a sender orphaned by a killed run
    keeps a namespace alive and goes on sending): SIGKILL, then wait for them. Returns (pid, name) of each."""
    ended = []
    for name in (GEN_PREFIX + tag, DUT_PREFIX + tag):
        for pid, comm in nsutil.processes_in(name):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                ended.append((pid, comm))
    deadline = time.monotonic() + timeout
    while ended and time.monotonic() < deadline and any(
            nsutil.processes_in(n) for n in (GEN_PREFIX + tag, DUT_PREFIX + tag)):
        time.sleep(0.01)
    return ended


def ended_text(ended: list[tuple[int, str]]) -> str:
    return ", ".join(f"{comm} (pid {pid})" for pid, comm in ended)


def remove_namespaces(tag: str) -> list[str]:
    """Remove the namespaces and owner record of topology ``tag``; return what was removed. (A process
    still inside keeps a namespace alive: end_processes first, for a topology nobody owns.)"""
    removed = []
    present = set(netns.listnetns())
    for name in (GEN_PREFIX + tag, DUT_PREFIX + tag):
        if name in present:
            with contextlib.suppress(OSError):
                netns.remove(name)
                removed.append(name)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(owner_path(tag))
    return removed


def list_topologies(probe: bool = True) -> list[TopoInfo]:
    """Every topology with a namespace or an owner record on this machine."""
    tags: dict[str, list[str]] = {}
    for name in sorted(netns.listnetns()):
        for prefix in (GEN_PREFIX, DUT_PREFIX):
            if name.startswith(prefix):
                tags.setdefault(name[len(prefix):], []).append(name)
    if os.path.isdir(STATE_DIR):
        for fn in os.listdir(STATE_DIR):
            if fn.endswith(".json"):
                tags.setdefault(fn[:-5], [])
    infos = []
    for tag, names in sorted(tags.items()):
        owner = read_owner(tag)
        if owner is None:
            state, pid = "stale", None
        elif owner.get("persistent"):
            state, pid = "persistent", None
        else:
            pid = owner.get("pid")
            started = proc_starttime(pid) if pid is not None else 0
            alive = started != 0 and started == owner.get("starttime")
            state = "live" if alive else "stale"
        info = TopoInfo(tag=tag, state=state, owner_pid=pid, namespaces=names,
                        mtu=(owner or {}).get("mtu"))
        if probe and DUT_PREFIX + tag in names:
            with contextlib.suppress(Exception), Netlink(DUT_PREFIX + tag) as ipr:
                idx = ipr.link_lookup(ifname=DUT_IF)
                if idx:
                    link = ipr.get_links(idx[0])[0]
                    info.mtu = link.get("IFLA_MTU")
                    info.xdp, info.xdp_prog_id = link_xdp(link)
        infos.append(info)
    return infos


def remove_half_written() -> list[str]:
    """Remove the owner records a process killed while writing one left half written (``<tag>.json.<pid>.tmp``,
    its pid gone); return their names."""
    removed = []
    for fn in sorted(os.listdir(STATE_DIR)) if os.path.isdir(STATE_DIR) else []:
        m = re.fullmatch(r".+\.json\.(\d+)\.tmp", fn)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(STATE_DIR, fn))
                removed.append(fn)
    return removed


def remove_stale() -> list[tuple[TopoInfo, list[tuple[int, str]]]]:
    """Remove every stale topology (its owner process is gone), ending what still runs inside it, and any
    half-written owner record; return each topology with the processes that were ended."""
    remove_half_written()
    out = []
    for t in list_topologies(probe=False):
        if t.stale:
            out.append((t, end_processes(t.tag)))
            remove_namespaces(t.tag)
    return out

"""The test topology: two namespaces the harness owns and a veth pair between them.

::

    netns nta-gen-<tag>                 netns nta-dut-<tag>
    [ replayer ] -> veth-gen  <======>  veth-dut -> [ XDP program ]

Both ends live in namespaces created here, so no traffic touches the root
namespace. IPv6 is off in both namespaces before the veth exists (otherwise
the kernel sends router solicitations and MLD reports on it and counts are
not exact), the loopback stays down, no addresses are configured.

Ownership: before a namespace is created, an owner record
``/run/nta-harness/<tag>.json`` names the process that owns the topology
(pid and start time) or marks it persistent (``nta topo up``). A topology
whose owner process is gone is *stale*; ``nta topo down`` and every
``nta run`` remove stale ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import time

from pyroute2 import netns
from pyroute2.netlink.exceptions import NetlinkError

from harness import cmodule, nsutil, signals
from harness.errors import NtaError
from harness.netlink import Netlink
from harness.nta import proc_starttime

GEN_PREFIX = "nta-gen-"
DUT_PREFIX = "nta-dut-"
GEN_IF = "veth-gen"
DUT_IF = "veth-dut"
STATE_DIR = "/run/nta-harness"
MTU_MIN, MTU_MAX = 68, 65535
TAG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,30}$")

# IFLA_XDP_ATTACHED (include/uapi/linux/if_link.h: XDP_ATTACHED_*), as a number
# or as the name pyroute2 decodes it to.
XDP_ATTACHED = {0: None, 1: "native", 2: "generic", 3: "offload", 4: "multi",
                "none": None, "xdp": "native", "xdpgeneric": "generic",
                "xdpoffload": "offload", "xdpmulti": "multi"}


def check_tag(tag: str) -> str:
    if not TAG_RE.match(tag):
        raise NtaError(
            f"bad topology name {tag!r}: use 1-31 of a-z, 0-9, '-', '_', starting with a letter or digit"
        )
    return tag


def check_mtu(mtu: int) -> int:
    if not MTU_MIN <= mtu <= MTU_MAX:
        raise NtaError(f"bad MTU {mtu}: veth takes {MTU_MIN}..{MTU_MAX}")
    return mtu


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


class Topology:
    """Two namespaces and a veth pair; a context manager that always cleans up.

    ``with Topology(tag, mtu=1500) as topo:`` creates everything or nothing;
    leaving the block (normally, by exception, or by KeyboardInterrupt)
    removes the namespaces, which removes the veth pair and detaches any XDP
    program on it.
    """

    def __init__(self, tag: str | None = None, mtu: int = 1500, persistent: bool = False, queues: int = 1):
        self.tag = check_tag(tag if tag is not None else str(os.getpid()))
        self.mtu = check_mtu(mtu)
        self.persistent = persistent
        self.queues = queues  # tx and rx queues of each veth end
        self.gen_ns = GEN_PREFIX + self.tag
        self.dut_ns = DUT_PREFIX + self.tag
        self.gen_if = GEN_IF
        self.dut_if = DUT_IF
        self._ipr: dict[str, Netlink] = {}
        self._creator = os.getpid()

    # -- life cycle -------------------------------------------------------

    def create(self) -> "Topology":
        existing = set(netns.listnetns())
        if {self.gen_ns, self.dut_ns} & existing:
            raise NtaError(
                f"topology {self.tag!r} already exists ({self.gen_ns}, {self.dut_ns}); "
                f"remove it with 'nta topo down {self.tag}'"
            )
        try:
            self._write_owner()
            for name in (self.gen_ns, self.dut_ns):
                netns.create(name)
                # IPv6 off before the veth exists: no RS, no MLD, exact counts.
                for conf in ("all", "default"):
                    nsutil.write_sysctl(name, f"net/ipv6/conf/{conf}/disable_ipv6", "1")
            gen = self.ipr(self.gen_ns)
            q = {"num_tx_queues": self.queues, "num_rx_queues": self.queues}
            gen.link("add", ifname=self.gen_if, kind="veth", **q,
                     peer={"ifname": self.dut_if, "net_ns_fd": self.dut_ns, **q})
            for ns, ifname in ((self.gen_ns, self.gen_if), (self.dut_ns, self.dut_if)):
                ipr = self.ipr(ns)
                idx = self.ifindex(ns, ifname)
                ipr.link("set", index=idx, mtu=self.mtu)
                ipr.link("set", index=idx, state="up")
            self._wait_carrier()
        except BaseException as exc:
            self.destroy()
            if isinstance(exc, NetlinkError):
                raise NtaError(f"creating topology {self.tag!r}: {exc.args[-1]} "
                               f"(netlink error {exc.code})") from None
            if isinstance(exc, OSError):
                raise NtaError(f"creating topology {self.tag!r}: {exc.strerror or exc}") from None
            raise
        return self

    def destroy(self) -> None:
        """Remove everything this topology made. Idempotent; never raises.

        A no-op in any other process than the creator: a forked child (pyroute2
        forks helpers) that unwinds must not tear down its parent's topology.
        """
        if os.getpid() != self._creator:
            return
        with signals.held():  # a second Ctrl-C must not leave the namespaces behind
            for ipr in self._ipr.values():
                with contextlib.suppress(Exception):
                    ipr.close()
            self._ipr.clear()
            remove_namespaces(self.tag)

    def __enter__(self) -> "Topology":
        return self.create()

    def __exit__(self, *exc) -> None:
        self.destroy()

    # -- netlink ----------------------------------------------------------

    def ipr(self, ns: str) -> Netlink:
        """A netlink socket bound to namespace ``ns``, kept open until destroy()."""
        if ns not in self._ipr:
            self._ipr[ns] = Netlink(ns)
        return self._ipr[ns]

    def ifindex(self, ns: str, ifname: str) -> int:
        found = self.ipr(ns).link_lookup(ifname=ifname)
        if not found:
            raise NtaError(f"interface {ifname} not found in namespace {ns}")
        return found[0]

    def link(self, ns: str, ifname: str):
        return self.ipr(ns).get_links(self.ifindex(ns, ifname))[0]

    def link_stats(self, side: str) -> dict:
        """IFLA_STATS64 of the gen or dut veth end."""
        ns, ifname = self._side(side)
        return dict(self.link(ns, ifname).get("IFLA_STATS64"))

    def driver_stats(self, side: str) -> dict:
        """The gen or dut veth end's driver statistics (what 'ethtool -S' prints): per queue, the frames
        XDP redirected into it (tx_queue_N_xdp_xmit) and those its peer could not take (..._errors)."""
        ns, ifname = self._side(side)
        ffi, lib = cmodule.load("_traffic_c")
        with nsutil.inside(ns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        with sock:
            most = 64 * (self.queues + 1)
            names, values = ffi.new("char[]", 32 * most), ffi.new("uint64_t[]", most)
            got = lib.nta_ethtool_stats(sock.fileno(), ifname.encode(), names, values, most)
        if got < 0:
            raise NtaError(f"reading {ifname}'s driver statistics in {ns}: {os.strerror(-got)}")
        return {ffi.string(names + 32 * i).decode(): values[i] for i in range(got)}

    def set_xps(self, cpus: list[int]) -> None:
        """Transmit packet steering on the gen end: CPU cpus[i] sends on queue i, so a sender pinned to
        it feeds the dut's ring i (veth delivers tx queue i to the peer's rx queue i)."""
        for i, cpu in enumerate(cpus[:self.queues]):
            self._sysfs(self.gen_ns, f"/sys/class/net/{self.gen_if}/queues/tx-{i}/xps_cpus", f"{1 << cpu:x}",
                        "transmit packet steering")

    def _sysfs(self, ns: str, path: str, value: str, what: str) -> None:
        """Write a sysfs file of namespace ``ns``: /sys/class/net shows the devices of the namespace
        sysfs was mounted in, so this goes through 'ip netns exec', which mounts one for the command."""
        proc = subprocess.run(["ip", "netns", "exec", ns, "tee", path], input=value + "\n",
                              capture_output=True, text=True)
        if proc.returncode != 0:
            why = (proc.stderr.strip().splitlines() or ["?"])[-1]
            raise NtaError(f"{what} ({path} in {ns}): {why}")

    def set_napi_threaded(self) -> list[int]:
        """Run the dut veth's NAPI poll (where native XDP runs) in a kernel thread of its own, which the
        scheduler may put on another CPU than the sender's. Without it, veth polls in the softirq of the
        CPU that sent the frame. Needs the NAPI instance that native XDP creates: call after attaching.
        Returns the pids of the kernel threads it started (named napi/veth-dut-<napi id>)."""
        before = napi_threads(self.dut_if)
        self._sysfs(self.dut_ns, f"/sys/class/net/{self.dut_if}/threaded", "1",
                    f"threaded NAPI on {self.dut_if} (veth has a NAPI instance only with native XDP: use "
                    "--mode native)")
        return sorted(set(napi_threads(self.dut_if)) - set(before))

    def xdp_attached(self) -> tuple[str | None, int | None]:
        """(mode, prog id) of the XDP program on the dut end, as the kernel reports it."""
        return link_xdp(self.link(self.dut_ns, self.dut_if))

    def _side(self, side: str) -> tuple[str, str]:
        if side == "gen":
            return self.gen_ns, self.gen_if
        if side == "dut":
            return self.dut_ns, self.dut_if
        raise ValueError(side)

    def _wait_carrier(self, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = [self.link(ns, ifn).get("IFLA_OPERSTATE")
                      for ns, ifn in ((self.gen_ns, self.gen_if), (self.dut_ns, self.dut_if))]
            if all(s == "UP" for s in states):
                return
            if time.monotonic() > deadline:
                raise NtaError(f"veth pair of topology {self.tag!r} did not come up (operstate {states})")
            time.sleep(0.01)

    def _write_owner(self) -> None:
        os.makedirs(STATE_DIR, mode=0o755, exist_ok=True)
        pid = os.getpid()
        record = {
            "tag": self.tag,
            "pid": None if self.persistent else pid,
            "starttime": None if self.persistent else proc_starttime(pid),
            "persistent": self.persistent,
            "mtu": self.mtu,
            "created": time.time(),
        }
        path = owner_path(self.tag)
        tmp = f"{path}.{pid}.tmp"
        with signals.held():  # a signal between the open and the rename left the .tmp behind
            try:
                with open(tmp, "w") as f:
                    json.dump(record, f)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise


def napi_threads(ifname: str) -> list[int]:
    """Pids of the NAPI kernel threads of devices named ``ifname`` (any namespace)."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                continue
            if comm.startswith(f"napi/{ifname}-"):
                out.append(int(pid))
    return out


def owner_path(tag: str) -> str:
    return os.path.join(STATE_DIR, f"{tag}.json")


def _read_owner(tag: str) -> dict | None:
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
        owner = _read_owner(tag)
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

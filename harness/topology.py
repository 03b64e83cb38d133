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
import json
import os
import re
import socket
import subprocess
import time

from pyroute2 import netns
from pyroute2.netlink.exceptions import NetlinkError

from harness import cmodule, nsutil, signals, topostate
from harness.errors import NtaError
from harness.netlink import Netlink
from harness.nta import proc_starttime
from harness.topostate import (  # noqa: F401  (the topologies on this machine: part of this module's API)
    DUT_IF,
    DUT_PREFIX,
    GEN_IF,
    GEN_PREFIX,
    STATE_DIR,
    XDP_ATTACHED,
    TopoInfo,
    end_processes,
    ended_text,
    link_xdp,
    list_topologies,
    owner_path,
    read_owner,
    remove_half_written,
    remove_namespaces,
    remove_stale,
)

MTU_MIN, MTU_MAX = 68, 65535
TAG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,30}$")



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
        os.makedirs(topostate.STATE_DIR, mode=0o755, exist_ok=True)
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

"""What a named interface is: its driver, RX queues, MTU, XDP features, the programs already on it, and
the CPU each RX queue's frames arrive on.

Read from the kernel, never from a subprocess: the driver and channels by the ethtool ioctl, the MTU and
attached programs by rtnetlink, the XDP features by the netdev generic-netlink family (Linux 6.3 and
later; older kernels have no such report), each from a socket made in the interface's namespace. The
CPU of a queue comes from the IRQ that services it (/proc/irq); a device with no IRQs of its own (veth)
takes its receive packet steering map, or else round robin over the usable CPUs, and says which.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import fcntl
import os
import re
import socket
import struct

from pyroute2.netlink import NLM_F_REQUEST, genlmsg
from pyroute2.netlink.generic import GenericNetlinkSocket

from harness import cpus, nsutil, signals
from harness.errors import NtaError
from harness.netlink import Netlink
from harness.topostate import link_xdp

SIOCETHTOOL = 0x8946
ETHTOOL_GDRVINFO = 0x03
ETHTOOL_GCHANNELS = 0x3C
IFNAMSIZ = 16

# include/uapi/linux/netdev.h (the netdev family, Linux 6.3+)
NETDEV_CMD_DEV_GET = 1
XDP_ACT = (("basic", 1), ("redirect", 2), ("redirect target", 4), ("zero-copy", 8), ("offload", 16),
           ("frags", 32), ("redirect target frags", 64))


class _netdev_dev(genlmsg):
    prefix = "NETDEV_A_DEV_"
    nla_map = (("NETDEV_A_DEV_UNSPEC", "none"), ("NETDEV_A_DEV_IFINDEX", "uint32"), ("NETDEV_A_DEV_PAD", "none"),
               ("NETDEV_A_DEV_XDP_FEATURES", "uint64"), ("NETDEV_A_DEV_XDP_ZC_MAX_SEGS", "uint32"))


@dataclasses.dataclass
class Nic:
    """An interface as the run and 'nta doctor --iface' describe it."""

    ifname: str
    netns: str | None
    ifindex: int
    driver: str
    mtu: int
    rx_queues: int
    xdp_features: list[str] | None  # None: the kernel has no report (before 6.3)
    zc_max_segs: int | None
    attached: tuple[str | None, int | None]  # (mode, prog id) of a program already on it
    queue_cpus: list[int]
    cpus_from: str  # where queue_cpus came from: "irq", "rps" or "round robin" (with why)

    @property
    def where(self) -> str:
        return f"{self.ifname} [{self.netns}]" if self.netns else self.ifname

    def features_text(self) -> str:
        if self.xdp_features is None:
            return "unknown (kernel < 6.3)"
        return ", ".join(self.xdp_features) or "none"

    @property
    def zero_copy(self) -> bool | None:
        return None if self.xdp_features is None else "zero-copy" in self.xdp_features

    def lines(self) -> list[str]:
        mode, prog = self.attached
        return [f"{self.where}: ifindex {self.ifindex}, driver {self.driver}, {self.rx_queues} RX "
                f"queue{'s' if self.rx_queues != 1 else ''}, MTU {self.mtu}",
                f"  XDP features: {self.features_text()}"
                + (f" (zero-copy up to {self.zc_max_segs} segments)" if self.zc_max_segs and self.zero_copy else ""),
                "  attached: " + (f"XDP {mode} (prog id {prog}): 'nta run' never replaces it" if mode else "nothing"),
                "  queue CPUs: " + ", ".join(f"{q}->{c}" for q, c in enumerate(self.queue_cpus))
                + f" ({self.cpus_from})"]

    def as_dict(self) -> dict:
        return {"ifname": self.ifname, "netns": self.netns, "ifindex": self.ifindex, "driver": self.driver,
                "mtu": self.mtu, "rx_queues": self.rx_queues, "xdp_features": self.xdp_features,
                "zc_max_segs": self.zc_max_segs, "attached": {"mode": self.attached[0], "prog_id": self.attached[1]},
                "queue_cpus": self.queue_cpus, "cpus_from": self.cpus_from}


def _ethtool(sock: socket.socket, ifname: str, cmd: int, words: int, fmt_tail: str = "") -> bytes:
    """An ethtool get command: a buffer of the command word and ``words`` more u32 (or fmt_tail), filled."""
    buf = ctypes.create_string_buffer(struct.pack("I", cmd) + bytes(struct.calcsize(fmt_tail) if fmt_tail
                                                                     else 4 * words))
    ifr = struct.pack(f"{IFNAMSIZ}sP", ifname.encode(), ctypes.addressof(buf)) + bytes(16)
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifr)
    return buf.raw


def driver_and_channels(ifname: str, netns: str | None) -> tuple[str, dict | None]:
    """The driver's name (ETHTOOL_GDRVINFO) and its channels (ETHTOOL_GCHANNELS; None: not reported)."""
    with nsutil.inside(netns) if netns else contextlib.nullcontext():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    with sock:
        try:
            raw = _ethtool(sock, ifname, ETHTOOL_GDRVINFO, 0, "32s32s32s32s32s12s5I")
            driver = raw[4:36].split(b"\0")[0].decode(errors="replace") or "?"
        except OSError as exc:
            driver = f"? ({exc.strerror})"
        try:
            raw = _ethtool(sock, ifname, ETHTOOL_GCHANNELS, 8)
        except OSError:
            return driver, None
    names = ("max_rx", "max_tx", "max_other", "max_combined", "rx", "tx", "other", "combined")
    return driver, dict(zip(names, struct.unpack_from("8I", raw, 4), strict=True))


def rx_queues(driver: str, channels: dict | None, allocated: int) -> int:
    """The RX queues: the combined channels and the RX-only ones, as ethtool counts them; veth reports a
    combined count that is min(rx, tx), a view of its queues rather than queues of their own. No channels
    report: the queues the device was made with (rtnetlink's IFLA_NUM_RX_QUEUES)."""
    if not channels:
        return max(1, allocated)
    n = channels["rx"] if driver == "veth" else channels["rx"] + channels["combined"]
    return max(1, min(n, allocated) if allocated else n)


def xdp_features(ifindex: int, netns: str | None) -> tuple[list[str] | None, int | None]:
    """The device's XDP features (names) and zero-copy segment limit from the netdev family; (None, None)
    on a kernel without that family (before 6.3)."""
    with signals.deferred(), nsutil.inside(netns) if netns else contextlib.nullcontext():
        gs = GenericNetlinkSocket()
    with signals.deferred():
        try:
            try:
                gs.bind("netdev", _netdev_dev)
            except Exception:  # pyroute2 raises NetlinkError or its own: no such family
                return None, None
            msg = _netdev_dev()
            msg["cmd"] = NETDEV_CMD_DEV_GET
            msg["version"] = 1
            msg["attrs"] = [("NETDEV_A_DEV_IFINDEX", ifindex)]
            reply = gs.nlm_request(msg, msg_type=gs.prid, msg_flags=NLM_F_REQUEST)
        finally:
            gs.close()
    got = tuple(reply)[0] if reply else None
    if got is None:
        return None, None
    bits = got.get_attr("NETDEV_A_DEV_XDP_FEATURES") or 0
    return [name for name, bit in XDP_ACT if bits & bit], got.get_attr("NETDEV_A_DEV_XDP_ZC_MAX_SEGS")


def _irq_names() -> dict[int, str]:
    """Each IRQ's action names, from /proc/interrupts."""
    out = {}
    with contextlib.suppress(OSError), open("/proc/interrupts") as f:
        ncpu = len(f.readline().split())
        for line in f:
            head, _, rest = line.partition(":")
            if head.strip().isdigit():
                out[int(head)] = " ".join(rest.split()[ncpu:])
    return out


def _irq_cpu(irq: int) -> int | None:
    for name in ("effective_affinity_list", "smp_affinity_list"):
        with contextlib.suppress(OSError, ValueError):
            with open(f"/proc/irq/{irq}/{name}") as f:
                text = f.read().strip()
            if text:
                return int(re.split(r"[-,]", text)[0])
    return None


def _device_irqs(ifname: str) -> list[int]:
    """The IRQs of the device behind ifname (its PCI function's MSI vectors), as sysfs shows them in
    this namespace; none for a virtual device."""
    base = f"/sys/class/net/{ifname}/device"
    for d in (base, base + "/.."):  # virtio-net: the PCI function is the virtio device's parent
        with contextlib.suppress(OSError):
            return sorted(int(x) for x in os.listdir(d + "/msi_irqs"))
    return []


RX_IRQ = re.compile(r"(?i)(rx|txrx|input|comp|fp|queue)[^0-9]*(\d+)(@|$)")


def irq_queue(name: str) -> int | None:
    """The RX queue an IRQ's name says it serves (eth0-TxRx-3, mlx5_comp3@pci:..., virtio0-input.3,
    ice-eth0-TxRx-3: 3), or None (a transmit-only or a control one: virtio0-output.0, eth0-tx-2)."""
    m = RX_IRQ.search(name)
    return int(m.group(2)) if m else None


def queue_cpus_from_irqs(ifname: str, queues: int) -> list[int] | None:
    """Queue q's CPU: the affinity of the IRQ whose name ends in q among the device's receive ones
    (eth0-TxRx-3, mlx5_comp3@pci:..., virtio0-input.3, ice-eth0-TxRx-3), or None when not all are found."""
    names = _irq_names()
    irqs = _device_irqs(ifname) or [i for i, n in names.items() if ifname in n]
    found: dict[int, int] = {}
    for irq in irqs:
        q, cpu = irq_queue(names.get(irq, "")), _irq_cpu(irq)
        if q is not None and cpu is not None:
            found.setdefault(q, cpu)
    if all(q in found for q in range(queues)):
        return [found[q] for q in range(queues)]
    return None


def queue_cpus_from_rps(ifname: str, queues: int) -> list[int] | None:
    """Queue q's CPU from its receive packet steering map (the first CPU in it), when every queue has one."""
    out = []
    for q in range(queues):
        try:
            with open(f"/sys/class/net/{ifname}/queues/rx-{q}/rps_cpus") as f:
                mask = int(f.read().strip().replace(",", ""), 16)
        except (OSError, ValueError):
            return None
        if not mask:
            return None
        out.append((mask & -mask).bit_length() - 1)
    return out


def queue_cpus(ifname: str, netns: str | None, queues: int) -> tuple[list[int], str]:
    """The CPU each RX queue's frames arrive on, and where that came from."""
    if netns is None:  # sysfs shows this namespace's devices: an interface in another has no IRQ seen here
        got = queue_cpus_from_irqs(ifname, queues)
        if got:
            return got, "irq affinity"
        got = queue_cpus_from_rps(ifname, queues)
        if got:
            return got, "rps_cpus, no IRQ per queue"
        why = "no IRQ per queue, no RPS map"
    else:
        why = f"in namespace {netns}, whose IRQs are not seen from here"
    usable = cpus.usable()
    return [usable[q % len(usable)] for q in range(queues)], f"round robin: {why}"


def describe(ifname: str, netns: str | None = None) -> Nic:
    """Everything the run and 'nta doctor --iface' say about ``ifname``; NtaError when it is not there."""
    if netns and not os.path.exists(os.path.join(nsutil.NETNS_RUN_DIR, netns)):
        raise NtaError(f"no network namespace {netns}")
    try:
        with Netlink(netns) as ipr:
            found = ipr.link_lookup(ifname=ifname)
            link = ipr.get_links(found[0])[0] if found else None
    except OSError as exc:
        raise NtaError(f"namespace {netns}: {exc.strerror or exc}") from None
    if link is None:
        raise NtaError(f"no interface {ifname}" + (f" in namespace {netns}" if netns else ""))
    ifindex = found[0]
    driver, channels = driver_and_channels(ifname, netns)
    n = rx_queues(driver, channels, link.get("IFLA_NUM_RX_QUEUES") or 0)
    features, zc = xdp_features(ifindex, netns)
    per_queue, source = queue_cpus(ifname, netns, n)
    return Nic(ifname=ifname, netns=netns, ifindex=ifindex, driver=driver, mtu=link.get("IFLA_MTU") or 0,
               rx_queues=n, xdp_features=features, zc_max_segs=zc, attached=link_xdp(link),
               queue_cpus=per_queue, cpus_from=source)

"""``nta run``'s configuration: its options, what can be checked of them before anything is made, and
which XDP program they call for."""

from __future__ import annotations

import dataclasses
import os

from harness import cpus, pressure, topology
from harness.builtin import check_builtin
from harness.controller import FREE_ON, parse_hold
from harness.controller import lib as ctl_lib
from harness.errors import NtaError
from harness.jsonfile import check_writable
from harness.nta import pool_allocator
from harness.permit import Filter
from harness.replay import DRIVERS, ReplayOptions
from harness.xdp import RING_PAGES, MetaProgram, XdpProgram, XskProgram
from harness.xsk import UMEM_CHUNKS, XDP_MODES

NAPI_MODES = ("softirq", "threaded")
RX_PATHS = ("ring", "afxdp")  # how frames reach the controller: metadata records, or the frames (AF_XDP)
XSK_RING = ctl_lib.NTA_XSK_RING  # AF_XDP fill and RX ring entries
XDP_PACKET_HEADROOM = ctl_lib.NTA_XSK_HEADROOM  # the kernel's, before a frame in an AF_XDP buffer
DRAIN_US = 200  # the controller's sleep between drains of an empty ring, when it shares a CPU
DRAIN_US_OWN_CPU = 50  # and when it has one of its own
RATE_TOLERANCE = 0.01  # a --pps or --mbps rate is held when reached within 1%
# A controller sharing its CPU with a sender runs at this nice: the sender (with XDP and NAPI in its time
# slices) then yields to it, as a user-space generator yields to the softirq that runs a page pool. At nice
# 0 the two split the CPU and the ring overflows (measured: --queues 2, two xdp senders, IMIX: 11-17% of
# the records lost at nice 0; none at -5 or -10).
CONTROLLER_NICE = -10
FLOW_TABLE = 1 << 18  # distinct flows XDP counts at most (nta_flows); more are counted as overflowing
MAX_TIMED_SPAN = 86400.0  # seconds: a loop at capture timing longer than a day is a bad timestamp



@dataclasses.dataclass
class RunConfig:
    pcap: str
    replay: ReplayOptions = dataclasses.field(default_factory=ReplayOptions)
    mode: str = "native"
    action: str = "drop"
    mtu: int | None = None  # None: the smallest that carries every frame, at least 1500
    interval: float = 1.0
    json_path: str | None = None
    tag: str | None = None
    quiet: bool = False
    controller: bool = False  # metadata ring -> controller -> page pool on an NTA arena
    hold: str = "immediate"
    ring_pages: int = RING_PAGES
    arena_pages: int = 65536
    drain_us: int | None = None  # the ring drained every US when empty; 0: polled; None: see drain_for()
    plot_dir: str | None = None
    allocator: str = "nta"  # who places fragments in the pool: nta, slab (alias pow2), ppfrag or page
    replayer: str = "tcpreplay"  # or "builtin", or "xdp" (live frames)
    napi: str = "softirq"  # or "threaded": the dut veth polls in a kernel thread (see Topology)
    batch: int | None = None  # frames per sendmmsg, TX ring send or BPF_PROG_RUN (None: builtin.DEFAULT_BATCH)
    send: str = "sendmmsg"  # or "tx-ring" (builtin)
    threads: int | None = None  # builtin or xdp senders, each on its own CPU and veth queue (None: one a queue)
    queues: int = 1  # RX queues of the dut, each with its own ring, controller and pool (and a sender each)
    free_on: str = "self"  # who frees what the hold policy lets go: the controller, or a reader ("other")
    peak_map: bool = False  # keep the pool's page map at its peak (RunResult.peak_map; --plot does too)
    strict: bool = False  # refuse a capture cut short instead of replaying its complete records
    rx: str = "ring"  # or "afxdp": an AF_XDP socket per RX queue, the arena its UMEM (implies the controller)
    fill: int = 0  # afxdp: buffers posted to a fill ring at most (0: the ring's size)
    copybreak: int = 0  # afxdp: frames of at most this many bytes copied out, their buffers reused whole
    xdp_mode: str = "auto"  # afxdp: how each socket binds (harness.xsk.XDP_MODES): zero-copy first, else copy
    umem_chunks: str = "auto"  # afxdp: the UMEM's layout (harness.xsk.UMEM_CHUNKS): aligned if the driver asks
    # memory at the limit (harness.pressure): None is not given
    budget: int | None = None  # ordinary pages each pool may hold
    reserve: int | None = None  # pages of each queue's arena for permitted frames, beside the budget
    permit: object = None  # the frames that may take the reserve: a tcpdump filter (text; a Filter once checked)
    flow_limit: int | None = None  # bytes one flow may hold, charged as its pool hands them out
    stuck: int | None = None  # flows (picked from the capture by hash) never read until the run ends

    def check(self) -> None:
        """Everything about the options that can be checked before anything is made."""
        self.replay.validate()
        if self.mtu is not None:
            topology.check_mtu(self.mtu)
        if self.napi not in NAPI_MODES:
            raise NtaError(f"bad --napi {self.napi!r}: choose {', '.join(NAPI_MODES)}")
        if self.napi == "threaded" and self.mode != "native":
            raise NtaError(f"threaded NAPI on {topology.DUT_IF}: veth has a NAPI instance only with native "
                           "XDP: use --mode native")
        if self.replayer not in DRIVERS:
            raise NtaError(f"bad --replayer {self.replayer!r}: choose {', '.join(DRIVERS)}")
        check_builtin(self.batch, self.method)
        cpus.check_threads(self.queues, "--queues")
        if self.queues > 1 and self.replayer == "tcpreplay":
            raise NtaError(f"--queues {self.queues} needs a sender per queue: use --replayer builtin or xdp")
        if self.threads is None:
            self.threads = self.queues
        if self.threads > 1 and self.replayer == "tcpreplay":
            raise NtaError("--threads is for the built-in replayers (--replayer builtin or xdp)")
        if self.replayer == "xdp" and self.mode != "native":
            raise NtaError(f"--replayer xdp redirects frames into {topology.DUT_IF}, which veth takes only with "
                           "native XDP on it: use --mode native")
        if self.queues > 1 and self.threads != self.queues:
            raise NtaError(f"--threads {self.threads} with --queues {self.queues}: a sender per queue")
        cpus.check_threads(self.threads)
        if self.tag is not None:
            topology.check_tag(self.tag)
        self.check_receive()

    def check_receive(self) -> None:
        """What is checked of the receiving side's options, for a replayed run and a named interface alike."""
        if self.interval <= 0:
            raise NtaError(f"bad --interval {self.interval}: must be positive")
        if self.rx not in RX_PATHS:
            raise NtaError(f"bad --rx {self.rx!r}: choose {', '.join(RX_PATHS)}")
        if self.rx == "afxdp":
            self.controller = True  # the frames go to the controller's pool
            if not 0 <= self.fill <= XSK_RING:
                raise NtaError(f"bad --fill {self.fill}: 1..{XSK_RING} buffers (0: the ring's size)")
        elif self.fill or self.copybreak or self.xdp_mode != "auto" or self.umem_chunks != "auto":
            flag = ("--fill" if self.fill else "--copybreak" if self.copybreak else
                    f"--xdp-mode {self.xdp_mode}" if self.xdp_mode != "auto" else f"--umem-chunks {self.umem_chunks}")
            raise NtaError(f"{flag}: only with --rx afxdp")
        if self.xdp_mode not in XDP_MODES:
            raise NtaError(f"bad --xdp-mode {self.xdp_mode!r}: choose {', '.join(XDP_MODES)}")
        if self.umem_chunks not in UMEM_CHUNKS:
            raise NtaError(f"bad --umem-chunks {self.umem_chunks!r}: choose {', '.join(UMEM_CHUNKS)}")
        if self.umem_chunks == "aligned" and pool_allocator(self.allocator) != "nta":
            raise NtaError(f"--umem-chunks aligned: only with --allocator nta (it cuts each page's headroom off; "
                           f"{self.allocator} cannot)")
        if self.free_on not in FREE_ON:
            raise NtaError(f"bad --free-on {self.free_on!r}: choose {', '.join(FREE_ON)}")
        if self.free_on == "other":
            if not self.controller:
                raise NtaError("--free-on other: only with --controller (it frees the controller's fragments)")
            if len(cpus.usable()) < 2:
                raise NtaError("--free-on other frees on another CPU, and this process may use only one")
        if self.controller:
            parse_hold(self.hold)
            self.allocator = pool_allocator(self.allocator)
        pressure.check(self.budget, self.reserve, self.permit, self.flow_limit, self.stuck, self.arena_pages,
                       self.controller)
        self.permit = self.permit_filter
        if self.plot_dir is not None and not os.path.isdir(self.plot_dir):
            raise NtaError(f"--plot {self.plot_dir}: not a directory")
        check_writable(self.json_path)

    @property
    def permit_filter(self) -> Filter | None:
        """--permit's filter, compiled by libpcap and translated (BadFilter, exit status 2, when it is bad)."""
        return self.permit if self.permit is None or isinstance(self.permit, Filter) else Filter(self.permit)

    def limits(self, cap) -> pressure.Limits:
        """What each queue's pool and controller are held to, on this capture: the flow limit checked against
        its largest frame, the stuck flows picked from its flows."""
        permit = self.permit_filter
        pressure.check_flow_limit(self.flow_limit, cap, self.allocator)
        stuck = pressure.pick_stuck(cap, self.stuck, permit) if self.stuck else []
        return pressure.Limits(budget=self.budget or 0, reserve=self.reserve or 0, permit=permit,
                               flow_limit=self.flow_limit or 0, stuck=tuple(h for h, _ in stuck),
                               stuck_names=tuple(name for _, name in stuck))

    @property
    def paced(self) -> bool:
        """A run at a rate or at the capture's timing: its frames have a schedule to be timed against."""
        return not self.replay.topspeed

    def program(self, ns: str | None, ifname: str, timed_frames: int = 0) -> XdpProgram:
        """The XDP program this run attaches (not yet attached); with ``timed_frames`` (a paced run's
        schedule, in frames) the counting programs time the frames (the metadata one leaves that to the
        controller)."""
        timing = {"NTA_TIMING": 1, "NTA_TIMING_GAPS": max(1, timed_frames)} if timed_frames else {}
        flows = {"NTA_FLOWS": FLOW_TABLE} if self.count_flows else {}
        if self.rx == "afxdp":
            return XskProgram(ns, ifname, self.action, self.mode, queues=self.queues, permit=self.permit_filter,
                              defines=timing)
        if self.controller:
            return MetaProgram(ns, ifname, self.action, self.mode, ring_pages=self.ring_pages, queues=self.queues,
                               permit=self.permit_filter, defines=flows)
        return XdpProgram(ns, ifname, self.action, self.mode, queues=self.queues, defines={**timing, **flows})

    @property
    def count_flows(self) -> bool:
        """Whether XDP counts the distinct flows it sees (with --unique-flows; not on the AF_XDP path)."""
        return self.replay.unique_flows and self.rx != "afxdp"

    def drain_for(self, own_cpu: bool) -> int:
        """How long the controller sleeps on an empty ring, unless told: DRAIN_US_OWN_CPU when it has a
        CPU of its own (a short sleep costs only that CPU), else DRAIN_US (it shares the sender's). Not
        0 (spinning) by default: a consumer reading each record as it is written pulls its cache line
        away from the CPU running XDP, and the XDP rate halves (measured with one xdp sender)."""
        if self.drain_us is not None:
            return self.drain_us
        return DRAIN_US_OWN_CPU if own_cpu else DRAIN_US

    @property
    def method(self) -> str:
        """How the built-in replayers hand frames to the kernel: --send, or xdp."""
        return "xdp" if self.replayer == "xdp" else self.send

    def replayer_text(self) -> str:
        if self.replayer == "xdp":
            return "xdp live frames" + (f" ({self.threads} senders)" if self.threads > 1 else "")
        if self.replayer != "builtin":
            return self.replayer
        return f"builtin ({self.send}" + (f", {self.threads} threads)" if self.threads > 1 else ")")



def buffer_size(mtu: int) -> int:
    """An AF_XDP receive buffer: the largest frame a device of this MTU takes (veth refuses one longer than
    the MTU, an Ethernet header and a VLAN tag), in whole chunks of the arena."""
    return -(-(mtu + 18) // 32) * 32


def check_afxdp(mtu: int, permit: bool = False) -> None:
    room = ctl_lib.NTA_XSK_META_ROOM if permit else 0
    if buffer_size(mtu) + room + XDP_PACKET_HEADROOM > os.sysconf("SC_PAGE_SIZE"):
        raise NtaError(f"--rx afxdp: frames of MTU {mtu} and the kernel's {XDP_PACKET_HEADROOM} bytes of headroom "
                       f"do not fit an AF_XDP buffer of a page; use --rx ring")

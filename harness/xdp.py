"""Compile, attach and read the XDP programs on the dut end, with BCC.

The programs live in bpf/ and are configured with -D flags, never by string
templating (as bcc's own examples do). BCC compiles them and relocates their
maps; harness._traffic_c loads the result frags-aware (BPF_F_XDP_HAS_FRAGS,
which BCC cannot ask for), so native XDP on veth takes jumbo MTUs. An
``XdpProgram`` is a context manager: it attaches on entry and always detaches
on exit.

Every program and map of the harness is named ``nta_*`` (the leak checks of
the tests rely on it).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import os
import re
import sys
import tempfile

from harness import cmodule, nsutil
from harness.errors import NtaError

BPF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bpf")
PREFIX = "nta_"  # of every program and map name

ACTIONS = {"drop": "NTA_ACT_DROP", "pass": "NTA_ACT_PASS"}
MODES = ("native", "generic")
# XDP_FLAGS_* (include/uapi/linux/if_link.h)
XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
MODE_FLAGS = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}


@dataclasses.dataclass
class XdpStats:
    """Counters summed over CPUs; first/last are CLOCK_MONOTONIC ns."""

    packets: int = 0
    bytes: int = 0
    first_ns: int = 0
    last_ns: int = 0

    @property
    def seconds(self) -> float:
        return (self.last_ns - self.first_ns) / 1e9 if self.packets > 1 else 0.0

    @property
    def pps(self) -> float:
        """Rate at the hook: packets after the first over the first-to-last span."""
        return (self.packets - 1) / self.seconds if self.seconds > 0 else 0.0


def program_source(name: str) -> str:
    with open(os.path.join(BPF_DIR, f"{name}.c")) as f:
        return f.read()


def header_version() -> int:
    """NTA_SHARED_VERSION as bpf/nta_shared.h defines it (what a C module built now would say)."""
    with open(os.path.join(BPF_DIR, "nta_shared.h")) as f:
        found = re.search(r"^#define NTA_SHARED_VERSION (\d+)$", f.read(), re.M)
    if not found:
        raise NtaError(f"{BPF_DIR}/nta_shared.h defines no NTA_SHARED_VERSION")
    return int(found.group(1))


def cflags(action: str, defines: dict | None = None, version: int | None = None) -> list[str]:
    """The -D flags of a program: its verdict, its defines, and the contract's version the C modules were
    built with (``version``: another, as the doctor checks BPF before anything is built)."""
    if action not in ACTIONS:
        raise NtaError(f"bad XDP action {action!r}: choose {', '.join(ACTIONS)}")
    if version is None:
        version = cmodule.load("_traffic_c")[1].NTA_SHARED_VERSION
    extra = [f"-D{k}={v}" for k, v in (defines or {}).items()]
    return [f"-I{BPF_DIR}", f"-DNTA_ACTION={ACTIONS[action]}", f"-DNTA_EXPECT_SHARED_VERSION={version}", *extra]


@contextlib.contextmanager
def stderr_captured(into: list[str]):
    """Collect what libbcc writes straight to fd 2 (compiler and libbpf chatter)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            into.extend(ln.strip() for ln in tmp.read().splitlines() if ln.strip())


def why_failed(exc: Exception, lines: list[str]) -> str:
    """The compiler's first error line, else libbpf's last line, else BCC's exception text."""
    errors = [ln for ln in lines if "error:" in ln]
    return errors[0] if errors else (lines[-1] if lines else str(exc))


def load_xdp_frags(bpf, name: str) -> int:
    """Load BCC's compiled (map-relocated) instructions of ``name`` as a frags-aware XDP program;
    return its fd. Raises NtaError with the verifier's last line."""
    ffi, lib = cmodule.load("_traffic_c")
    insns = bpf.dump_func(name.encode())
    log = ffi.new("char[]", 4096)
    fd = lib.nta_xdp_load_frags(insns, len(insns), name[:15].encode(), log, 4096)
    if fd < 0:
        last = ffi.string(log).decode(errors="replace").strip().splitlines()
        raise NtaError(f"loading {name} (XDP, frags): {os.strerror(-fd)}" + (f": {last[-1]}" if last else ""))
    return fd


def bcc_module():
    try:
        import bcc  # Debian's python3-bpfcc, seen through --system-site-packages
    except ImportError:
        raise NtaError("BCC's Python module is missing: run 'make setup' (installs python3-bpfcc)") from None
    return bcc


def in_ns(ns: str | None):
    """Inside namespace ``ns`` (None: this one)."""
    return nsutil.inside(ns) if ns else contextlib.nullcontext()


def remove_xdp(ns: str | None, ifname: str, flags: int) -> None:
    """Detach what is attached to ``ifname`` in ``ns`` with ``flags``; nothing when the namespace is gone."""
    if ns is None or os.path.exists(os.path.join(nsutil.NETNS_RUN_DIR, ns)):
        with contextlib.suppress(Exception), in_ns(ns):
            bcc_module().BPF.remove_xdp(ifname.encode(), flags)


def described(name: str, flags: list[str]) -> str:
    """A program of bpf/ exactly as BCC compiles it, with its flags: for --ebpf."""
    return f"/* {name}.c, compiled by BCC with: {' '.join(flags)} */\n" + program_source(name)


def compile_bpf(name: str, flags: list[str], permit=None):
    """bpf/NAME.c compiled by BCC (its maps made, nothing loaded yet); NtaError with BCC's reason. With a
    ``permit`` filter (harness.permit.Filter), its translation on the include path, -DNTA_PERMIT given."""
    bcc = bcc_module()
    src = os.path.join(BPF_DIR, f"{name}.c")
    chatter: list[str] = []
    with permit.written() if permit else contextlib.nullcontext() as gen:
        try:
            with stderr_captured(chatter):
                return bcc.BPF(src_file=src.encode(), cflags=flags + ([f"-I{gen}", "-DNTA_PERMIT=1"] if gen else []))
        except Exception as exc:  # BCC raises bare Exception; the reason went to fd 2
            raise NtaError(f"loading {src}: {why_failed(exc, chatter)} (is BPF available? try 'nta doctor')") from None


def permit_described(permit) -> str:
    """The translated --permit filter as the programs include it: for --ebpf."""
    return f"/* {permit.header_name}, on the include path with -DNTA_PERMIT=1 */\n" + permit.header()


class XdpProgram:
    """The counting XDP program (bpf/nta_xdp_count.c) attached to ``ifname`` in namespace ``ns`` (None:
    this one). Subclasses name another program and its -D flags."""

    NAME = "nta_xdp_count"

    PERMITS = False  # whether the program takes a --permit filter (-DNTA_PERMIT)

    def __init__(self, ns: str | None, ifname: str, action: str = "drop", mode: str = "native",
                 defines: dict | None = None, queues: int = 1, permit=None):
        if mode not in MODES:
            raise NtaError(f"bad XDP mode {mode!r}: choose {', '.join(MODES)}")
        if queues < 1:
            raise NtaError(f"bad number of queues {queues}")
        if permit is not None and not self.PERMITS:
            raise NtaError(f"{self.NAME} takes no --permit filter")
        self.ns, self.ifname, self.action, self.mode, self.name = ns, ifname, action, mode, self.NAME
        self.queues, self.permit = queues, permit
        self.defines = {**(defines or {}), "NTA_QUEUES": queues}
        self._cflags = cflags(action, self.defines)
        self.bpf = None
        self._prog_fd = -1
        self._creator = os.getpid()
        self.loaded = None  # called with the program's id once loaded, before it is attached (an owner record)

    def describe(self) -> str:
        text = described(self.name, self._cflags + (["-DNTA_PERMIT=1"] if self.permit else []))
        return text + ("\n" + permit_described(self.permit) if self.permit else "")

    def __enter__(self) -> "XdpProgram":
        bcc = bcc_module()
        try:
            self.bpf = compile_bpf(self.name, self._cflags, self.permit)
            self._prog_fd = load_xdp_frags(self.bpf, self.name)
            self._prepare()
            if self.loaded:
                self.loaded(self.prog_id)
        except NtaError:
            self._close()
            raise
        fn = bcc.BPF.Function(self.bpf, self.name.encode(), self._prog_fd)
        flags = MODE_FLAGS[self.mode] | XDP_FLAGS_UPDATE_IF_NOEXIST
        chatter: list[str] = []
        try:
            with stderr_captured(chatter), in_ns(self.ns):
                bcc.BPF.attach_xdp(self.ifname.encode(), fn, flags)
        except Exception as exc:
            self._close()
            why = why_failed(exc, chatter)
            if self.mode == "native" and os.strerror(errno.ERANGE) in why:
                why = ("the MTU is too large for native XDP on this device; "
                       "use --mode generic or a smaller --mtu")
            where = f" in {self.ns}" if self.ns else ""
            raise NtaError(f"attaching XDP ({self.mode}) to {self.ifname}{where}: {why}") from None
        return self

    @property
    def prog_id(self) -> int | None:
        """The loaded program's id, as the kernel shows it for its descriptor (fdinfo), None before."""
        if self._prog_fd < 0:
            return None
        with open(f"/proc/self/fdinfo/{self._prog_fd}") as f:
            for line in f:
                if line.startswith("prog_id:"):
                    return int(line.split()[1])
        return None

    def _prepare(self) -> None:
        """What the program's maps need before it is attached (subclasses)."""

    def __exit__(self, *exc) -> None:
        self.detach()

    def detach(self) -> None:
        """Detach and free the program. Idempotent; the namespace may already be gone.

        A no-op outside the process that attached it (see Topology.destroy).
        """
        if self.bpf is None or os.getpid() != self._creator:
            return
        remove_xdp(self.ns, self.ifname, MODE_FLAGS[self.mode])
        self._close()

    def _close(self) -> None:
        if self._prog_fd >= 0:
            os.close(self._prog_fd)
            self._prog_fd = -1
        if self.bpf is not None:
            with contextlib.suppress(Exception):
                self.bpf.cleanup()
            self.bpf = None

    def _per_cpu(self, table: str):
        return self.bpf[table.encode()][ctypes.c_int(0)]

    def stats(self) -> XdpStats:
        per_cpu = self._per_cpu("nta_stats")
        out = XdpStats()
        firsts = [c.first_ns for c in per_cpu if c.packets]
        out.packets = sum(c.packets for c in per_cpu)
        out.bytes = sum(c.bytes for c in per_cpu)
        out.first_ns = min(firsts) if firsts else 0
        out.last_ns = max((c.last_ns for c in per_cpu if c.packets), default=0)
        return out

    COUNTED_PER_QUEUE = False  # with one queue, the program counts per queue only if it says so

    def queue_stats(self) -> list[dict]:
        """Per RX queue, summed over CPUs: the frames and bytes XDP saw on it (and with the metadata
        program, the records submitted to its ring and lost)."""
        if self.queues == 1 and not self.COUNTED_PER_QUEUE:
            s = self.stats()
            return [{"packets": s.packets, "bytes": s.bytes}]
        table = self.bpf[b"nta_queue_stats"]
        keys = (("packets", "bytes", "submitted", "lost", "permitted") if self.COUNTED_PER_QUEUE
                else ("packets", "bytes"))
        out = []
        for q in range(self.queues):
            per_cpu = table[ctypes.c_int(q)]
            out.append({k: sum(getattr(c, k) for c in per_cpu) for k in keys})
        return out

    def ring_stats(self) -> dict:
        """What the queues handed on (to their metadata rings, or sockets) and lost, summed over queues
        (a program that counts per queue)."""
        per_q = self.queue_stats()
        return {k: sum(q[k] for q in per_q) for k in ("submitted", "lost")}

    def flows(self) -> dict | None:
        """The distinct flows XDP saw (compiled with -DNTA_FLOWS; else None), and those its table could not
        hold."""
        if "NTA_FLOWS" not in self.defines:
            return None
        return {"flows": len(self.bpf[b"nta_flows"]),
                "overflow": sum(self.bpf[b"nta_flows_over"][ctypes.c_int(0)])}

    def permitted(self) -> int | None:
        """Frames the --permit filter accepted, summed over queues (None: the program has no filter)."""
        return sum(q["permitted"] for q in self.queue_stats()) if self.permit else None


# the metadata ring's default size: 4 MiB, 13 ms of records at 6.5 Mpps (a stall of the controller on a
# shared machine lasts milliseconds)
RING_PAGES = 1024


class MetaProgram(XdpProgram):
    """nta_xdp_meta: counts, parses L2-L4 and writes a struct nta_meta per frame into the BPF ring
    buffer of the frame's RX queue (``ring_fds[queue]``; ``ring_fd``, queue 0's), which that queue's
    controller drains (harness.controller.MetaRing). Queue 0's ring is the one BCC makes; the others
    are made here, named nta_meta_rq<N>, and closed with the program."""

    NAME = "nta_xdp_meta"

    PERMITS = True

    def __init__(self, ns: str | None, ifname: str, action: str = "drop", mode: str = "native",
                 ring_pages: int = RING_PAGES, queues: int = 1, permit=None, defines: dict | None = None):
        if ring_pages < 1 or ring_pages & (ring_pages - 1):
            raise NtaError(f"bad ring size {ring_pages} pages: a power of two")
        super().__init__(ns, ifname, action, mode, defines={"NTA_RING_PAGES": ring_pages, **(defines or {})},
                         queues=queues, permit=permit)
        self.ring_pages = ring_pages
        self._own_rings: list[int] = []

    def _prepare(self) -> None:
        _, lib = cmodule.load("_traffic_c")
        fds = [self.bpf[b"nta_meta_ring"].map_fd]
        for q in range(1, self.queues):
            fd = lib.nta_ringbuf_map_create(f"nta_meta_rq{q}".encode(), self.ring_pages * os.sysconf("SC_PAGE_SIZE"))
            if fd < 0:
                raise NtaError(f"making the metadata ring of RX queue {q}: {os.strerror(-fd)}")
            self._own_rings.append(fd)
            fds.append(fd)
        rings = self.bpf[b"nta_meta_rings"]
        for q, fd in enumerate(fds):
            rings[ctypes.c_int(q)] = ctypes.c_int(fd)

    def _close(self) -> None:
        super()._close()
        for fd in self._own_rings:
            os.close(fd)
        self._own_rings = []

    @property
    def ring_fds(self) -> list[int]:
        return [self.bpf[b"nta_meta_ring"].map_fd, *self._own_rings]

    @property
    def ring_fd(self) -> int:
        return self.ring_fds[0]

    COUNTED_PER_QUEUE = True



class XskProgram(XdpProgram):
    """nta_xdp_xsk: counts, then redirects every frame to the AF_XDP socket of its RX queue (the map
    ``xskmap_fd``, which each queue's socket enters itself: harness.consumer.Consumer)."""

    NAME = "nta_xdp_xsk"
    COUNTED_PER_QUEUE = True
    PERMITS = True

    @property
    def xskmap_fd(self) -> int:
        return self.bpf[b"nta_xsks"].map_fd

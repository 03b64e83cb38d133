"""Compile, attach and read the XDP program on the dut end, with BCC.

The program lives in bpf/ and is configured with -D flags, never by string
templating (as bcc's own examples do). ``XdpProgram`` is a context manager:
it attaches on entry and always detaches on exit.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import os
import sys
import tempfile

from harness import nsutil
from harness.errors import NtaError

BPF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bpf")

ACTIONS = {"drop": "NTA_ACT_DROP", "pass": "NTA_ACT_PASS"}
MODES = ("native", "generic")
# XDP_FLAGS_* (include/uapi/linux/if_link.h)
XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
_MODE_FLAGS = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}


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


def program_source(name: str = "nta_xdp_count") -> str:
    with open(os.path.join(BPF_DIR, f"{name}.c")) as f:
        return f.read()


def cflags(action: str, defines: dict | None = None) -> list[str]:
    if action not in ACTIONS:
        raise NtaError(f"bad XDP action {action!r}: choose {', '.join(ACTIONS)}")
    extra = [f"-D{k}={v}" for k, v in (defines or {}).items()]
    return [f"-I{BPF_DIR}", f"-DNTA_ACTION={ACTIONS[action]}", *extra]


def describe(action: str, name: str = "nta_xdp_count", defines: dict | None = None) -> str:
    """The program exactly as BCC compiles it, with its flags: for --ebpf."""
    flags = " ".join(cflags(action, defines))
    return f"/* {name}.c, compiled by BCC with: {flags} */\n" + program_source(name)


@contextlib.contextmanager
def _stderr_captured(into: list[str]):
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


def _why(exc: Exception, lines: list[str]) -> str:
    """The compiler's first error line, else libbpf's last line, else BCC's exception text."""
    errors = [ln for ln in lines if "error:" in ln]
    return errors[0] if errors else (lines[-1] if lines else str(exc))


# BPF_PROG_LOAD with BPF_F_XDP_HAS_FRAGS, which BCC's load_func cannot ask for. With it, native
# XDP on veth takes MTUs past 3506 (one page less headroom): veth_xdp_set() lets a frags-aware
# program see multi-buffer frames, and the programs count bytes with bpf_xdp_get_buff_len().
NR_BPF, BPF_PROG_LOAD, BPF_PROG_TYPE_XDP, BPF_F_XDP_HAS_FRAGS = 321, 5, 6, 1 << 5


class _ProgLoadAttr(ctypes.Structure):
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32),
                ("insns", ctypes.c_uint64), ("license", ctypes.c_uint64),
                ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32), ("log_buf", ctypes.c_uint64),
                ("kern_version", ctypes.c_uint32), ("prog_flags", ctypes.c_uint32),
                ("prog_name", ctypes.c_char * 16), ("prog_ifindex", ctypes.c_uint32),
                ("expected_attach_type", ctypes.c_uint32), ("_rest", ctypes.c_uint8 * 80)]


def load_xdp_frags(bpf, name: str) -> int:
    """Load BCC's compiled (map-relocated) instructions of ``name`` as a frags-aware XDP program;
    return its fd. Raises NtaError with the verifier's last line."""
    libc = ctypes.CDLL(None, use_errno=True)
    insns = bpf.dump_func(name.encode())
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(1 << 20)
    for log_level in (0, 1):
        a = _ProgLoadAttr(prog_type=BPF_PROG_TYPE_XDP, insn_cnt=len(insns) // 8,
                          insns=ctypes.addressof(code), license=ctypes.addressof(lic),
                          prog_flags=BPF_F_XDP_HAS_FRAGS, prog_name=name[:15].encode())
        if log_level:
            a.log_level, a.log_size, a.log_buf = 1, len(log), ctypes.addressof(log)
        fd = libc.syscall(NR_BPF, BPF_PROG_LOAD, ctypes.byref(a), ctypes.sizeof(a))
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if not log_level:
            first_err = err
    lines = [ln for ln in log.value.decode(errors="replace").splitlines() if ln.strip()]
    raise NtaError(f"loading {name} (XDP, frags): {os.strerror(first_err)}"
                   + (f": {lines[-1]}" if lines else ""))


def _bcc():
    try:
        import bcc  # Debian's python3-bpfcc, seen through --system-site-packages
    except ImportError:
        raise NtaError("BCC's Python module is missing: run 'make setup' (installs python3-bpfcc)") from None
    return bcc


class XdpProgram:
    """The counting XDP program attached to ``ifname`` in namespace ``ns`` (None: this one)."""

    def __init__(self, ns: str | None, ifname: str, action: str = "drop", mode: str = "native",
                 name: str = "nta_xdp_count", defines: dict | None = None):
        if mode not in MODES:
            raise NtaError(f"bad XDP mode {mode!r}: choose {', '.join(MODES)}")
        self.ns, self.ifname, self.action, self.mode, self.name = ns, ifname, action, mode, name
        self._cflags = cflags(action, defines)
        self.bpf = None
        self._prog_fd = -1
        self._creator = os.getpid()

    def __enter__(self) -> "XdpProgram":
        bcc = _bcc()
        src = os.path.join(BPF_DIR, f"{self.name}.c")
        chatter: list[str] = []
        try:
            with _stderr_captured(chatter):
                self.bpf = bcc.BPF(src_file=src.encode(), cflags=self._cflags)
        except Exception as exc:  # BCC raises bare Exception; the reason went to fd 2
            self._close()
            raise NtaError(f"loading {src}: {_why(exc, chatter)} "
                           "(is BPF available? try 'nta doctor')") from None
        try:
            self._prog_fd = load_xdp_frags(self.bpf, self.name)
        except NtaError:
            self._close()
            raise
        fn = bcc.BPF.Function(self.bpf, self.name.encode(), self._prog_fd)
        flags = _MODE_FLAGS[self.mode] | XDP_FLAGS_UPDATE_IF_NOEXIST
        chatter.clear()
        try:
            with _stderr_captured(chatter), self._in_ns():
                bcc.BPF.attach_xdp(self.ifname.encode(), fn, flags)
        except Exception as exc:
            self._close()
            why = _why(exc, chatter)
            if self.mode == "native" and os.strerror(errno.ERANGE) in why:
                why = ("the MTU is too large for native XDP on this device; "
                       "use --mode generic or a smaller --mtu")
            where = f" in {self.ns}" if self.ns else ""
            raise NtaError(f"attaching XDP ({self.mode}) to {self.ifname}{where}: {why}") from None
        return self

    def _in_ns(self):
        return nsutil.inside(self.ns) if self.ns else contextlib.nullcontext()

    def __exit__(self, *exc) -> None:
        self.detach()

    def detach(self) -> None:
        """Detach and free the program. Idempotent; the namespace may already be gone.

        A no-op outside the process that attached it (see Topology.destroy).
        """
        if self.bpf is None or os.getpid() != self._creator:
            return
        bcc = _bcc()
        if self.ns is None or os.path.exists(os.path.join(nsutil.NETNS_RUN_DIR, self.ns)):
            with contextlib.suppress(Exception), self._in_ns():
                bcc.BPF.remove_xdp(self.ifname.encode(), _MODE_FLAGS[self.mode])
        self._close()

    def _close(self) -> None:
        if self._prog_fd >= 0:
            os.close(self._prog_fd)
            self._prog_fd = -1
        if self.bpf is not None:
            with contextlib.suppress(Exception):
                self.bpf.cleanup()
            self.bpf = None

    def stats(self) -> XdpStats:
        table = self.bpf[b"nta_stats"]
        per_cpu = table[ctypes.c_int(0)]
        out = XdpStats()
        firsts = [c.first_ns for c in per_cpu if c.packets]
        out.packets = sum(c.packets for c in per_cpu)
        out.bytes = sum(c.bytes for c in per_cpu)
        out.first_ns = min(firsts) if firsts else 0
        out.last_ns = max((c.last_ns for c in per_cpu if c.packets), default=0)
        return out


def meta_dtype():
    """numpy dtype of struct nta_meta, from the real header (bpf/nta_shared.h) through cffi."""
    import numpy as np

    from harness.nta import ffi

    kinds = {"uint8_t": "u1", "uint16_t": "u2", "uint32_t": "u4", "uint64_t": "u8",
             "__u8": "u1", "__u16": "u2", "__u32": "u4", "__u64": "u8"}
    names, formats, offsets = [], [], []
    for name, f in ffi.typeof("struct nta_meta").fields:
        t = f.type
        if t.kind == "array":
            formats.append((np.dtype("<" + kinds[t.item.cname]), (t.length,)))
        else:
            formats.append(np.dtype("<" + kinds[t.cname]))
        names.append(name)
        offsets.append(f.offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": ffi.sizeof("struct nta_meta")})


class MetaProgram(XdpProgram):
    """nta_xdp_meta: counts, parses L2-L4 and writes a struct nta_meta per frame into a BPF ring
    buffer, which drain() copies out in C, a batch at a time, into a numpy structured array."""

    def __init__(self, ns: str | None, ifname: str, action: str = "drop", mode: str = "native",
                 ring_pages: int = 256, wakeup_every: int = 64):
        if ring_pages < 1 or ring_pages & (ring_pages - 1):
            raise NtaError(f"bad ring size {ring_pages} pages: a power of two")
        super().__init__(ns, ifname, action, mode, name="nta_xdp_meta",
                         defines={"NTA_RING_PAGES": ring_pages, "NTA_WAKEUP_EVERY": wakeup_every})
        self.ring_bytes = ring_pages * os.sysconf("SC_PAGE_SIZE")
        self._rb = None
        self.dtype = meta_dtype()

    def __enter__(self) -> "MetaProgram":
        super().__enter__()
        from harness.nta import ffi, lib

        fd = self.bpf[b"nta_meta_ring"].map_fd
        self._rb = lib.nta_ringbuf_open(fd, self.ring_bytes)
        if self._rb == ffi.NULL:
            err = ffi.errno
            self.detach()
            raise NtaError(f"mapping the metadata ring: {os.strerror(err)}")
        return self

    def detach(self) -> None:
        if self._rb is not None and os.getpid() == self._creator:
            from harness.nta import lib

            lib.nta_ringbuf_close(self._rb)
            self._rb = None
        super().detach()

    def drain(self, max_records: int = 65536):
        """Records written since the last drain (up to max_records), oldest first."""
        import numpy as np

        from harness.nta import ffi, lib

        out = np.empty(max_records, dtype=self.dtype)
        odd = ffi.new("uint64_t *")
        n = lib.nta_ringbuf_drain(self._rb, ffi.from_buffer(out), self.dtype.itemsize, max_records, odd)
        if odd[0]:
            raise NtaError(f"the metadata ring held {odd[0]} records of another size than struct nta_meta")
        return out[:n]

    def ring_stats(self) -> dict:
        per_cpu = self.bpf[b"nta_ring_stats"][ctypes.c_int(0)]
        return {"submitted": sum(c.submitted for c in per_cpu), "lost": sum(c.lost for c in per_cpu)}

"""The XDP live-frames replayer's program (bpf/nta_xdp_gen.c): compiled by BCC, loaded, its maps holding
the capture's frames and each sender's list of them; run by BPF_PROG_RUN (harness/csrc/replay.c)."""

from __future__ import annotations

import contextlib
import ctypes
import os

from harness import cmodule
from harness.errors import NtaError
from harness.xdp import (
    BPF_DIR,
    XDP_FLAGS_SKB_MODE,
    XDP_FLAGS_UPDATE_IF_NOEXIST,
    bcc_module,
    compile_bpf,
    described,
    in_ns,
    remove_xdp,
    stderr_captured,
    why_failed,
)


class GenProgram:
    """nta_xdp_gen (bpf/nta_xdp_gen.c), the XDP live-frames replayer's program: compiled by BCC, loaded
    (never attached), its maps holding ``cap``'s frames and each sender's list of them (``lists``: one
    array of frame indices per sender, or None for all of them in order; the sender on CPU ``cpus[i]``).
    BPF_PROG_RUN of it sends the frames out of ``ifname`` of namespace ``ns`` (index ``ifindex``; None
    only to describe it), in which the senders run. A context manager.

    It is also attached to ``ifname``, in generic mode, where it passes every frame that arrives: a
    program attached to a device stays in the kernel's XDP dispatcher, and BPF_PROG_RUN of one that is
    not adds it there and takes it out again on every call with more than one run, 24 ms of text
    patching a call on this machine (about 6 us otherwise)."""

    NAME = "nta_xdp_gen"

    def __init__(self, cap, lists, cpus: list[int], ns: str | None, ifname: str, ifindex: int | None,
                 unique: tuple | None = None, paced: bool = False):
        import numpy as np

        self.cap, self.cpus, self.ns, self.ifname = cap, cpus, ns, ifname
        self._attached = False
        self.lists = [np.arange(cap.frames, dtype=np.uint32) if x is None else np.asarray(x, np.uint32)
                      for x in lists]
        frame_max = (int(cap.lengths.max()) + 7) & ~7 if cap.frames else 8
        self.value_size = 8 + frame_max  # struct nta_gen_frame_hdr, then the frame
        _, lib = cmodule.load("_traffic_c")
        self._cflags = [f"-I{BPF_DIR}", f"-DNTA_EXPECT_SHARED_VERSION={lib.NTA_SHARED_VERSION}",
                        f"-DNTA_GEN_FRAMES={max(cap.frames, 1)}", f"-DNTA_GEN_FRAME_MAX={frame_max}",
                        f"-DNTA_GEN_INDEX={max(sum(len(x) for x in self.lists), 1)}",
                        f"-DNTA_GEN_IFINDEX={'<ifindex>' if ifindex is None else ifindex}",
                        *(["-DNTA_UNIQUE=1"] if unique is not None else []),
                        *([f"-DNTA_GEN_PACE={lib.NTA_GEN_PACE_DEPTH}", f"-DNTA_GEN_CPUS={self.possible_cpus()}"]
                          if paced else [])]
        self.paced = paced
        self.unique = unique  # (l3, ipver) per frame with --unique-flows
        self.bpf = None
        self.prog_fd = -1

    def describe(self) -> str:
        return described(self.NAME, self._cflags)

    def __enter__(self) -> "GenProgram":
        import numpy as np

        bcc = bcc_module()
        ffi, lib = cmodule.load("_traffic_c")
        chatter: list[str] = []
        try:
            self.bpf = compile_bpf(self.NAME, self._cflags)
            with stderr_captured(chatter):
                fn = self.bpf.load_func(self.NAME.encode(), bcc.BPF.XDP)
            self.prog_fd = fn.fd
            with stderr_captured(chatter), in_ns(self.ns):
                bcc.BPF.attach_xdp(self.ifname.encode(), fn, XDP_FLAGS_SKB_MODE | XDP_FLAGS_UPDATE_IF_NOEXIST)
            self._attached = True
        except Exception as exc:
            self.close()
            if isinstance(exc, NtaError):
                raise
            raise NtaError(f"loading {self.NAME} (the xdp replayer's program): {why_failed(exc, chatter)}") from None
        cap = self.cap
        flat = np.ascontiguousarray(np.concatenate(self.lists) if self.lists else np.zeros(0, np.uint32))
        rc = 0
        if cap.frames:
            l3, ipver = self.unique if self.unique is not None else (None, None)
            rc = lib.nta_gen_fill(self.bpf[b"nta_gen_frames"].map_fd, ffi.from_buffer("uint8_t[]", cap.blob),
                                  ffi.from_buffer("uint64_t[]", cap.offsets),
                                  ffi.from_buffer("uint32_t[]", cap.lengths),
                                  ffi.from_buffer("uint16_t[]", l3) if l3 is not None else ffi.NULL,
                                  ffi.from_buffer("uint8_t[]", ipver) if ipver is not None else ffi.NULL,
                                  cap.frames, self.value_size)
        if rc >= 0 and len(flat):
            rc = lib.nta_gen_index_fill(self.bpf[b"nta_gen_index"].map_fd, ffi.from_buffer("uint32_t[]", flat),
                                        len(flat))
        if rc < 0:
            self.close()
            raise NtaError(f"filling the live-frames replayer's maps: {os.strerror(-rc)}")
        state = self.bpf[b"nta_gen_state"]  # per CPU: sender i's is CPU cpus[i]'s copy
        per_cpu = state.Leaf()
        base = 0
        for cpu, part in zip(self.cpus, self.lists, strict=False):
            per_cpu[cpu].base, per_cpu[cpu].count, per_cpu[cpu].next = base, len(part), 0
            base += len(part)
        state[ctypes.c_int(0)] = per_cpu
        return self

    @staticmethod
    def possible_cpus() -> int:
        """CPUs the kernel may number (a per-CPU map's copies; the paced runs' rings in nta_gen_due)."""
        from bcc.utils import get_possible_cpus

        return max(get_possible_cpus()) + 1

    @property
    def due_fd(self) -> int:
        """Paced: nta_gen_due, the due time of each run (bpf/nta_xdp_gen.c), mmapped by the senders; else -1."""
        return self.bpf[b"nta_gen_due"].map_fd if self.paced else -1

    @property
    def state_fd(self) -> int:
        return self.bpf[b"nta_gen_state"].map_fd

    def state(self, cpu: int) -> dict:
        s = self.bpf[b"nta_gen_state"][ctypes.c_int(0)][cpu]
        return {k: getattr(s, k) for k in ("runs", "sent", "bytes", "failed", "unchanged")}

    def close(self) -> None:
        """Detach and free it. Idempotent; the namespace may already be gone."""
        if self._attached:
            remove_xdp(self.ns, self.ifname, XDP_FLAGS_SKB_MODE)
        self._attached = False
        if self.bpf is not None:
            with contextlib.suppress(Exception):
                self.bpf.cleanup()
            self.bpf = None
        self.prog_fd = -1

    def __exit__(self, *exc) -> None:
        self.close()

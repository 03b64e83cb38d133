"""The --permit filter alone in the kernel (bpf/nta_xdp_permit.c): its verdict on every frame of a capture,
which the tests hold against libpcap's own."""

from __future__ import annotations

import contextlib
import os

from harness import cmodule
from harness.errors import NtaError
from harness.xdp import BPF_DIR, compile_bpf, load_xdp_frags

XDP_PASS = 2  # enum xdp_action: the verdict of nta_xdp_permit for a frame the filter accepts


class PermitProgram:
    """bpf/nta_xdp_permit.c: the --permit filter alone, loaded as the runs load theirs (frags-aware) and
    never attached; ``verdicts(cap)`` is the kernel's verdict on each of a capture's frames. A context
    manager."""

    NAME = "nta_xdp_permit"

    def __init__(self, permit):
        self.permit = permit
        self.bpf = None
        self.fd = -1

    def __enter__(self) -> "PermitProgram":
        try:
            self.bpf = compile_bpf(self.NAME, [f"-I{BPF_DIR}"], self.permit)
            self.fd = load_xdp_frags(self.bpf, self.NAME)
        except NtaError:
            self.close()
            raise
        return self

    def verdicts(self, cap):
        """True for each frame of ``cap`` (a loaded harness.pcapfile.Capture) the filter accepts."""
        import numpy as np

        ffi, lib = cmodule.load("_traffic_c")
        out = np.zeros(cap.frames, dtype=np.uint32)
        if cap.frames:
            rc = lib.nta_xdp_verdicts(self.fd, ffi.from_buffer("uint8_t[]", cap.blob),
                                      ffi.from_buffer("uint64_t[]", cap.offsets),
                                      ffi.from_buffer("uint32_t[]", cap.lengths), cap.frames,
                                      ffi.from_buffer("uint32_t[]", out))
            if rc < 0:
                raise NtaError(f"running {self.NAME} on {cap.path}: {os.strerror(-rc)}")
        return out == XDP_PASS

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.bpf is not None:
            with contextlib.suppress(Exception):
                self.bpf.cleanup()
            self.bpf = None

    def __exit__(self, *exc) -> None:
        self.close()

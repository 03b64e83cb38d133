"""An AF_XDP socket per RX queue whose UMEM is the queue's arena (harness/csrc/xsk.c): its config, the
socket, its counters."""

from __future__ import annotations

import contextlib
import dataclasses
import os

from harness import cmodule, nsutil, signals
from harness.controller import Controller
from harness.errors import NtaError
from harness.nta import Pool, counters_dict

ffi, lib = cmodule.load("_ctl_c")

# --xdp-mode: how a socket binds. auto asks for zero-copy (XDP_ZEROCOPY: the driver DMAs into the arena)
# and takes copy mode when the driver refuses; zerocopy refuses the run instead.
XDP_MODES = {"auto": lib.NTA_XSK_AUTO, "copy": lib.NTA_XSK_COPY, "zerocopy": lib.NTA_XSK_ZEROCOPY}
# --umem-chunks: the UMEM's layout. auto: unaligned (a buffer starts anywhere), and aligned pages in zero-copy
# mode when the driver refuses unaligned chunks; aligned: pages always (the NTA cuts each one's headroom off).
UMEM_CHUNKS = {"auto": lib.NTA_XSK_CHUNKS_AUTO, "unaligned": lib.NTA_XSK_CHUNKS_UNALIGNED,
               "aligned": lib.NTA_XSK_CHUNKS_ALIGNED}


@dataclasses.dataclass
class XskConfig:
    """An AF_XDP socket for a queue (harness/csrc/xsk.c): the device (``ifname`` in namespace ``ns``),
    its rings' size, the most buffers posted to the fill ring, a buffer's bytes (the largest frame the
    device takes), and the XDP program's XSKMAP."""

    ns: str | None
    ifname: str
    xskmap_fd: int
    buf_size: int
    ring_size: int = lib.NTA_XSK_RING
    fill_max: int = 0  # 0: ring_size
    copybreak: int = 0  # frames of at most this many bytes copied out of their buffer
    meta_room: int = 0  # with --permit: lib.NTA_XSK_META_ROOM, the room for the program's mark in front
    reserve: bool = False  # buffers may come from the reserve once ordinary memory is out
    xdp_mode: str = "auto"  # zero-copy first, else copy; "copy"; "zerocopy": or refuse (XDP_MODES)
    umem_chunks: str = "auto"  # UMEM_CHUNKS; a pool of another allocator than the NTA's never aligns


class Xsk:
    """An AF_XDP socket on queue ``queue`` whose UMEM is ``pool``'s arena, its buffers the pool's, its
    frames held by ``ctl`` (made in the device's namespace; closed: the socket and UMEM gone, what was
    still posted back in the pool)."""

    def __init__(self, ctl: Controller, pool: Pool, cfg: XskConfig, queue: int):
        c = ffi.new("struct nta_xsk_config *")
        name = ffi.new("char[]", cfg.ifname.encode())
        c.ifname, c.queue, c.ring_size, c.fill_max = name, queue, cfg.ring_size, cfg.fill_max
        c.buf_size, c.xskmap_fd, c.copybreak = cfg.buf_size, cfg.xskmap_fd, cfg.copybreak
        c.meta_room, c.reserve, c.xdp_mode = cfg.meta_room, int(cfg.reserve), XDP_MODES[cfg.xdp_mode]
        c.chunks = UMEM_CHUNKS[cfg.umem_chunks if pool.allocator == "nta" else "unaligned"]
        why = ffi.new("char[]", 256)
        with nsutil.inside(cfg.ns) if cfg.ns else contextlib.nullcontext():
            x = lib.nta_xsk_create(ctl._c, pool._h(), pool.arena._h(), c, why, 256)
        if x == ffi.NULL:
            why = ffi.string(why).decode(errors="replace")
            if cfg.xdp_mode == "zerocopy" and "zero-copy" in why:
                why += " (the driver has no zero-copy AF_XDP; --xdp-mode auto falls back to copy mode)"
            raise NtaError(f"AF_XDP on {cfg.ifname}: {why}")
        self._x, self.cfg = x, cfg
        self.buffer_bytes = self.stats()["buffer_bytes"]  # a buffer as posted (the socket's layout)

    def stats(self) -> dict:
        st = ffi.new("struct nta_xsk_stats *")
        rc = lib.nta_xsk_stats(self._x, st)
        if rc < 0:
            raise NtaError(f"XDP_STATISTICS: {os.strerror(-rc)}")
        return counters_dict(st)

    def close(self) -> None:
        with signals.held():  # a signal between the destroy and the forgetting destroyed it twice
            x, self._x = self._x, None
            if x is not None:
                lib.nta_xsk_destroy(x)

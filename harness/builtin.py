"""The built-in replayers (``--replayer builtin`` and ``xdp``): the frames already in memory, sent by
harness/csrc/replay.c from threads of this process (the C loop runs without the GIL), on an AF_PACKET
socket with sendmmsg(2) or a PACKET_TX_RING, or as XDP live frames by BPF_PROG_RUN of nta_xdp_gen
(harness.xdpgen); conversations split over senders by a symmetric hash. The driver has
harness.replay.Replayer's interface and its result."""

from __future__ import annotations

import contextlib
import os
import socket
import threading

import numpy as np

from harness import cmodule, linktype, nsutil
from harness.cpus import usable as usable_cpus
from harness.errors import NtaError
from harness.replay import ReplayOptions, ReplayResult
from harness.signals import started
from harness.xdpgen import GenProgram

METHODS = ("sendmmsg", "tx-ring")  # how the built-in replayer hands frames to the kernel (--send)
SOL_PACKET = 263
PACKET_QDISC_BYPASS = 20
SNDBUF = 4 << 20


def packet_socket(ns: str | None, iface: str) -> socket.socket:
    """An AF_PACKET socket bound to ``iface`` of namespace ``ns`` (it stays in that namespace), with
    PACKET_QDISC_BYPASS; protocol 0, so it receives nothing."""
    ctx = nsutil.inside(ns) if ns else contextlib.nullcontext()
    with ctx:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            s.bind((iface, 0))
            s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
            with contextlib.suppress(OSError):  # SO_SNDBUFFORCE needs CAP_NET_ADMIN
                s.setsockopt(socket.SOL_SOCKET, 32, SNDBUF)  # SO_SNDBUFFORCE
        except OSError as exc:
            s.close()
            raise NtaError(f"packet socket on {iface}: {exc.strerror}") from None
    return s


MAX_BATCH = {"sendmmsg": 1024, "tx-ring": 1024, "xdp": 65536}  # frames per call (replay.c)
# frames per call when not told: a BPF_PROG_RUN costs about 6 us, 4,096 frames about 500 us (1% then)
DEFAULT_BATCH = {"sendmmsg": 64, "tx-ring": 64, "xdp": 4096}


def check_builtin(batch: int | None, method: str) -> None:
    """The built-in replayer's batch (None: the method's default) and send method, checked (also before
    anything is made)."""
    if batch is not None and method in MAX_BATCH and not 1 <= batch <= MAX_BATCH[method]:
        raise NtaError(f"bad --batch {batch}: 1..{MAX_BATCH[method]:,} frames per call")
    if method not in MAX_BATCH:
        raise NtaError(f"bad --send {method!r}: choose {', '.join(METHODS)}")


LIVE_FRAME_MAPS_MAX = 512 << 20  # bytes of frames the live-frames replayer loads into its maps at most


def check_live_frames(cap) -> None:
    """Refuse, before anything is made, what the XDP live-frames replayer cannot send: a kernel without
    live frames, frames longer than a live frame carries, a capture its maps cannot hold."""
    _, lib = cmodule.load("_traffic_c")
    limit = lib.nta_xdp_live_max()
    if limit < 0:
        raise NtaError(f"this kernel runs no XDP live frames (BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES, "
                       f"5.18 and later: {os.strerror(-limit)}): use --replayer builtin or tcpreplay")
    over = int((cap.lengths > limit).sum()) if cap.frames else 0
    if over:
        raise NtaError(f"{cap.path}: {over:,} of its {cap.frames:,} frames are longer than the {limit:,} bytes an "
                       f"XDP live frame carries on this kernel (the longest is {cap.max_frame:,}): replay it "
                       "with --replayer builtin or tcpreplay")
    need = cap.frames * (8 + ((cap.max_frame + 7) & ~7))
    if need > LIVE_FRAME_MAPS_MAX:
        raise NtaError(f"{cap.path}: its {cap.frames:,} frames take {need / 1048576:,.0f} MiB in the live-frames "
                       f"replayer's maps, over its {LIVE_FRAME_MAPS_MAX >> 20} MiB: replay it with "
                       "--replayer builtin or tcpreplay, or cut it")


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, on a numpy uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def flow_split(cap, n: int) -> list:
    """Split ``cap``'s frames over ``n`` senders by conversation: a hash of the two IP addresses and
    the two ports (in either order, so both directions go together), or of the two MACs for what is
    not IP. It reads what pcapfile.load found of each frame's headers (its ethertype after VLAN tags,
    where L3 starts) rather than parsing the frames again. Each sender's frames keep their capture
    order. Returns n arrays of frame indices."""
    blob = np.frombuffer(cap.blob, dtype=np.uint8)
    off, size = cap.offsets.astype(np.int64), cap.lengths.astype(np.int64)
    l3 = off + cap.l3.astype(np.int64)
    end = off + size
    keys = np.zeros((2, cap.frames, 24), dtype=np.uint8)  # per side: address (16) and port (2), padded

    def gather(rows, start, width):
        return blob[start[rows, None] + np.arange(width)]

    v4 = (cap.etype == linktype.ETH_P_IP) & (l3 + 20 <= end)
    v6 = (cap.etype == linktype.ETH_P_IPV6) & (l3 + 40 <= end)
    other = ~(v4 | v6)
    proto = np.zeros(cap.frames, dtype=np.int64)
    l4 = np.zeros(cap.frames, dtype=np.int64)
    for rows, a, b, width, p, hdr in ((v4, 12, 16, 4, 9, None), (v6, 8, 24, 16, 6, 40)):
        if rows.any():
            keys[0, rows, :width] = gather(rows, l3 + a, width)
            keys[1, rows, :width] = gather(rows, l3 + b, width)
            proto[rows] = blob[l3[rows] + p]
            l4[rows] = l3[rows] + (40 if hdr else (blob[l3[rows]] & 0xF).astype(np.int64) * 4)
    if other.any():
        keys[0, other, :6] = gather(other, off, 6)
        keys[1, other, :6] = gather(other, off + 6, 6)
    ports = np.isin(proto, (6, 17, 132)) & (l4 + 4 <= end) & ~other
    if ports.any():
        keys[0, ports, 16:18] = gather(ports, l4, 2)
        keys[1, ports, 16:18] = gather(ports, l4 + 2, 2)
    words = keys.view(np.uint64)  # (2, frames, 3)
    side = _mix64(words[..., 0] ^ _mix64(words[..., 1] ^ _mix64(words[..., 2])))
    lo, hi = np.minimum(side[0], side[1]), np.maximum(side[0], side[1])  # either direction alike
    owner = _mix64(lo ^ _mix64(hi)) % np.uint64(n)
    return [np.flatnonzero(owner == i).astype(np.uint32) for i in range(n)]


class _Sender:
    """One sending thread of the built-in replayer: its frames, its socket, its counters."""

    def __init__(self, rep: "BuiltinReplayer", index, share: float, limit: int):
        ffi, lib, cap, opts = rep._ffi, rep._lib, rep.cap, rep.opts
        r = self.r = ffi.new("struct nta_replay *")
        if opts.topspeed:
            r.mode = lib.NTA_REPLAY_TOPSPEED
        elif opts.pps:
            r.mode, r.rate = lib.NTA_REPLAY_PPS, opts.pps * share
        elif opts.mbps:
            r.mode, r.rate = lib.NTA_REPLAY_MBPS, opts.mbps * share
        else:
            r.mode, r.rate = lib.NTA_REPLAY_TIMING, opts.multiplier or 1.0
        r.blob, r.offsets, r.lengths, r.rel_ns = rep._arrays
        self._index = None
        if index is not None:
            self._index = ffi.from_buffer(index)
            r.index = ffi.cast("const uint32_t *", self._index)
        r.frames = cap.frames if index is None else len(index)
        r.span_ns = int(cap.rel_ns[-1]) if cap.frames else 0
        r.loops, r.limit = opts.loops, limit
        r.duration_ns = int((opts.duration or 0) * 1e9)
        r.batch, r.method = rep.batch, rep._method
        if opts.unique_flows:  # the frames' IP headers: where, and which (the xdp sender's program has its own)
            r.unique = 1
            r.l3, r.ipver = (ffi.cast(t, b) for t, b in zip(("const uint16_t *", "const uint8_t *"), rep._ip,
                                                             strict=True))
        self.sock = None
        self.thread: threading.Thread | None = None
        self.rc = 0

    def start(self, rep: "BuiltinReplayer", cpu: int | None) -> None:
        if rep.gen is not None:  # live frames: the program and its state, in the device's namespace
            self.r.fd, self.r.prog_fd, self.r.state_fd = -1, rep.gen.prog_fd, rep.gen.state_fd
            self.r.netns_fd, self.r.cpu = rep._netns_fd, cpu
            self.r.due_fd, self.r.due_cpus = rep.gen.due_fd, rep.gen.possible_cpus()
        else:
            self.sock = packet_socket(rep.ns, rep.iface)
            self.r.fd = self.sock.fileno()

        def body():
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})  # this thread only
            self.rc = rep._lib.nta_replay_run(self.r)

        started(threading.Thread(target=body, name="nta-replay", daemon=True), lambda t: setattr(self, "thread", t))

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class BuiltinReplayer:
    """The built-in replayer: ``cap``'s frames (pcapfile.load) sent on ``iface`` of ``ns``; with
    ``method="xdp"``, the XDP live-frames replayer (each sender pinned: its state is its CPU's, and the
    frames are redirected out of ``ifindex``, iface's index).

    With ``threads`` > 1, that many senders, thread i on ``cpus[i]``, each with the conversations
    flow_split() gives it (so a conversation's frames keep their order) and its share of a packet or
    bit rate and of --limit. The caller gives the device as many queues and maps CPU i to queue i
    (Topology(queues=n) and set_xps()), so each sender feeds its own veth ring and NAPI."""

    def __init__(self, ns: str | None, iface: str, cap, opts: ReplayOptions, batch: int | None = None,
                 method: str = "sendmmsg", cpus: list[int] | None = None, threads: int = 1,
                 ifindex: int | None = None):
        ffi, lib = cmodule.load("_traffic_c")
        opts.validate()
        check_builtin(batch, method)
        self.xdp = method == "xdp"
        if self.xdp and cpus is None:
            cpus = usable_cpus()[:threads]
        if cpus is not None and len(cpus) < threads:
            raise ValueError(f"{threads} senders need a CPU each, not {cpus}")
        self.ns, self.iface, self.cap, self.opts = ns, iface, cap, opts
        self.batch, self.cpus, self.ifindex = batch or DEFAULT_BATCH[method], cpus, ifindex
        self._ffi, self._lib = ffi, lib
        self._method = {"sendmmsg": lib.NTA_REPLAY_SENDMMSG, "tx-ring": lib.NTA_REPLAY_TX_RING,
                        "xdp": lib.NTA_REPLAY_XDP}[method]
        self.gen = None  # the live-frames program (xdp)
        self._netns_fd = -1
        # the buffers stay referenced by self.cap for as long as the senders run
        keep = [ffi.from_buffer(cap.blob) if cap.frames else ffi.NULL,
                ffi.from_buffer(cap.offsets), ffi.from_buffer(cap.lengths), ffi.from_buffer(cap.rel_ns)]
        types = ("const uint8_t *", "const uint64_t *", "const uint32_t *", "const int64_t *")
        self._arrays = [ffi.cast(t, b) for t, b in zip(types, keep, strict=True)]
        self.l3, self.ipver = ip_headers(cap)
        self._ip = [ffi.from_buffer(self.l3), ffi.from_buffer(self.ipver)]
        self._keep = keep
        parts = flow_split(cap, threads) if threads > 1 else [None]
        sizes = [cap.frames if p is None else len(p) for p in parts]
        limits = _shares(opts.limit or 0, sizes)
        # a sender with no frames, or whose share of --limit is 0, does not start (0 means no limit)
        kept = [(p, k, lim) for p, k, lim in zip(parts, sizes, limits, strict=True)
                if p is None or (k and (lim or not opts.limit))]
        self.senders = [_Sender(self, p, k / cap.frames if cap.frames else 1.0, lim) for p, k, lim in kept]
        self._parts = [p for p, _, _ in kept]  # each sender's frames (None: all), for the xdp sender's maps
        self._creator = os.getpid()

    def start(self) -> "BuiltinReplayer":
        try:
            if self.xdp:
                self.gen = GenProgram(self.cap, self._parts, self.cpus[:len(self.senders)], self.ns, self.iface,
                                      self.ifindex, unique=(self.l3, self.ipver) if self.opts.unique_flows else None,
                                      paced=not self.opts.topspeed)
                self.gen.__enter__()
                self._netns_fd = os.open(os.path.join(nsutil.NETNS_RUN_DIR, self.ns), os.O_RDONLY | os.O_CLOEXEC)
            for i, s in enumerate(self.senders):
                s.start(self, self.cpus[i] if self.cpus else None)
        except BaseException:
            self.kill()  # the senders already started stop; no socket or program stays
            raise
        return self

    @property
    def driver(self) -> str:
        return "xdp" if self.xdp else "builtin"

    def _close_gen(self) -> None:
        if self._netns_fd >= 0:
            os.close(self._netns_fd)
            self._netns_fd = -1
        if self.gen is not None:
            self.gen.close()
            self.gen = None

    def running(self) -> bool:
        return any(s.thread is not None and s.thread.is_alive() for s in self.senders)

    def counters(self) -> dict:
        """The senders' counters, summed (they may be read while the senders run)."""
        return {k: sum(getattr(s.r, k) for s in self.senders)
                for k in ("sent", "bytes", "failed", "retried_enobufs", "retried_eagain", "calls")}

    def finish(self) -> ReplayResult:
        for s in self.senders:
            s.thread.join()
            s.close()
        runs = sum(self.gen.state(cpu)["runs"] for cpu in self.gen.cpus) if self.gen is not None else None
        unchanged = (sum(self.gen.state(cpu)["unchanged"] for cpu in self.gen.cpus) if self.gen is not None
                     else sum(s.r.unchanged for s in self.senders)) if self.opts.unique_flows else None
        self._close_gen()
        bad = [s.rc for s in self.senders if s.rc]
        if bad:
            raise NtaError(f"the {self.driver} replayer could not start: {os.strerror(-bad[0])}")
        c = self.counters()
        secs = (max(s.r.end_ns for s in self.senders) - min(s.r.start_ns for s in self.senders)) / 1e9
        res = ReplayResult(packets=c["sent"] + c["failed"], bytes=c["bytes"], seconds=secs,
                           rated_bps=c["bytes"] / secs if secs else 0.0,
                           rated_mbps=c["bytes"] * 8 / secs / 1e6 if secs else 0.0,
                           rated_pps=c["sent"] / secs if secs else 0.0,
                           successful=c["sent"], failed=c["failed"], truncated=None,
                           retried_enobufs=c["retried_enobufs"], retried_eagain=c["retried_eagain"],
                           driver=self.driver, calls=c["calls"], runs=runs, unchanged=unchanged,
                           kernel_batch=max(s.r.kernel_batch for s in self.senders) if runs is not None else None,
                           senders=[{"cpu": self.cpus[i] if self.cpus else None, "sent": s.r.sent,
                                     "bytes": s.r.bytes, "failed": s.r.failed}
                                    for i, s in enumerate(self.senders)])
        errs = [s.r.last_errno for s in self.senders if s.r.failed]
        if errs:
            res.output = f"last send error: {os.strerror(errs[-1])}"
        return res

    def kill(self) -> None:
        if os.getpid() != self._creator:
            return
        for s in self.senders:
            s.r.stop = 1
        for s in self.senders:
            if s.thread is not None:
                s.thread.join()
            s.close()
        self._close_gen()

    def __enter__(self) -> "BuiltinReplayer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


def ip_headers(cap) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, where its IP header starts and 4 or 6 (0: not IP, or too short for the whole header):
    what --unique-flows edits, and what it leaves as it is."""
    if not cap.frames:
        return np.zeros(1, np.uint16), np.zeros(1, np.uint8)
    l3 = cap.l3.astype(np.int64)
    v4 = (cap.etype == linktype.ETH_P_IP) & (l3 + 20 <= cap.lengths)
    v6 = (cap.etype == linktype.ETH_P_IPV6) & (l3 + 40 <= cap.lengths)
    return l3.astype(np.uint16), np.where(v4, 4, np.where(v6, 6, 0)).astype(np.uint8)


def _shares(total: int, sizes: list[int]) -> list[int]:
    """``total`` split in proportion to ``sizes``, the parts adding up exactly (0 stays 0: no limit)."""
    if not total:
        return [0] * len(sizes)
    whole = sum(sizes) or 1
    parts = [total * k // whole for k in sizes]
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i])[:total - sum(parts)]:
        parts[i] += 1
    return parts

"""Replay a capture from inside the gen namespace: with tcpreplay, or built in.

Two drivers with one interface (start, running, finish, kill; a context
manager) and one result, ``ReplayResult``:

* ``Replayer``: tcpreplay, the tool users know. Its own figures are kept: its
  ``Actual:`` and ``Rated:`` lines and the per-device block (successful,
  failed, truncated, retried) are parsed.
* ``BuiltinReplayer``: the frames already in memory (harness.pcapfile.load),
  sent by allocator/replay.c with sendmmsg(2) on an AF_PACKET socket opened in
  the gen namespace, with PACKET_QDISC_BYPASS, from a thread of this process
  (the C loop runs without the GIL). Its counters are read live.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import socket
import subprocess
import threading

from harness import nsutil
from harness.errors import NtaError


@dataclasses.dataclass
class ReplayOptions:
    loops: int = 1
    topspeed: bool = False
    pps: float | None = None
    mbps: float | None = None
    multiplier: float | None = None
    duration: int | None = None  # seconds, tcpreplay --duration
    limit: int | None = None  # packets, tcpreplay --limit
    preload: bool | None = None  # -K; default: on when looping

    def validate(self) -> "ReplayOptions":
        if self.loops < 1:
            raise NtaError(f"bad --loops {self.loops}: must be 1 or more")
        rates = [n for n, v in (("--topspeed", self.topspeed), ("--pps", self.pps),
                                ("--mbps", self.mbps), ("--multiplier", self.multiplier)) if v]
        if len(rates) > 1:
            raise NtaError(f"choose one replay rate, not {' and '.join(rates)}")
        for name, v in (("--pps", self.pps), ("--mbps", self.mbps), ("--multiplier", self.multiplier),
                        ("--duration", self.duration), ("--limit", self.limit)):
            if v is not None and v <= 0:
                raise NtaError(f"bad {name} {v}: must be positive")
        return self

    def rate_text(self) -> str:
        if self.topspeed:
            return "topspeed"
        if self.pps:
            return f"{self.pps:g} pps"
        if self.mbps:
            return f"{self.mbps:g} Mbps"
        if self.multiplier:
            return f"x{self.multiplier:g} capture timing"
        return "capture timing"


@dataclasses.dataclass
class ReplayResult:
    """tcpreplay's own account of the replay."""

    packets: int = 0  # Actual: N packets
    bytes: int = 0
    seconds: float = 0.0
    rated_bps: float = 0.0  # bytes per second
    rated_mbps: float = 0.0
    rated_pps: float = 0.0
    successful: int | None = None
    failed: int | None = None
    truncated: int | None = None
    retried_enobufs: int | None = None
    retried_eagain: int | None = None
    output: str = ""
    driver: str = "tcpreplay"
    calls: int | None = None  # sendmmsg calls (built-in)

    @property
    def sent(self) -> int:
        """Packets the replayer handed to the kernel successfully."""
        return self.successful if self.successful is not None else self.packets


_ACTUAL = re.compile(r"Actual:\s+(\d+) packets \((\d+) bytes\) sent in ([\d.]+) seconds")
_RATED = re.compile(r"Rated:\s+([\d.]+) Bps,\s+([\d.]+) Mbps,\s+([\d.]+) pps")
_DEVICE = {
    "successful": re.compile(r"Successful packets:\s+(\d+)"),
    "failed": re.compile(r"Failed packets:\s+(\d+)"),
    "truncated": re.compile(r"Truncated packets:\s+(\d+)"),
    "retried_enobufs": re.compile(r"Retried packets \(ENOBUFS\):\s+(\d+)"),
    "retried_eagain": re.compile(r"Retried packets \(EAGAIN\):\s+(\d+)"),
}


def parse_tcpreplay(text: str) -> ReplayResult:
    """Parse tcpreplay's closing statistics. The last Actual/Rated pair wins."""
    actual = _ACTUAL.findall(text)
    rated = _RATED.findall(text)
    if not actual or not rated:
        raise NtaError("tcpreplay printed no 'Actual:'/'Rated:' statistics: " + _last_line(text))
    pk, by, sec = actual[-1]
    bps, mbps, pps = rated[-1]
    res = ReplayResult(packets=int(pk), bytes=int(by), seconds=float(sec),
                       rated_bps=float(bps), rated_mbps=float(mbps), rated_pps=float(pps), output=text)
    for field, rx in _DEVICE.items():
        m = rx.findall(text)
        if m:
            setattr(res, field, int(m[-1]))
    return res


DRIVERS = ("tcpreplay", "builtin")
METHODS = ("sendmmsg", "tx-ring")  # how the built-in replayer hands frames to the kernel


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def tcpreplay_path() -> str:
    path = shutil.which("tcpreplay")
    if not path:
        raise NtaError("tcpreplay not found: run 'make setup' (installs Debian's tcpreplay)")
    return path


def command(iface: str, pcap: str, opts: ReplayOptions) -> list[str]:
    cmd = [tcpreplay_path(), f"--intf1={iface}", "--no-flow-stats"]
    preload = opts.preload if opts.preload is not None else opts.loops > 1
    if preload:
        cmd.append("--preload-pcap")
    if opts.loops > 1:
        cmd.append(f"--loop={opts.loops}")
    if opts.topspeed:
        cmd.append("--topspeed")
    elif opts.pps:
        cmd.append(f"--pps={opts.pps:g}")
    elif opts.mbps:
        cmd.append(f"--mbps={opts.mbps:g}")
    elif opts.multiplier:
        cmd.append(f"--multiplier={opts.multiplier:g}")
    if opts.duration:
        cmd.append(f"--duration={opts.duration}")
    if opts.limit:
        cmd.append(f"--limit={opts.limit}")
    cmd.append(pcap)
    return cmd


class Replayer:
    """tcpreplay running in namespace ``ns``; dies with this process."""

    def __init__(self, ns: str, iface: str, pcap: str, opts: ReplayOptions, pass_fds: tuple = ()):
        self.cmd = command(iface, pcap, opts)
        self.pass_fds = pass_fds
        self.ns = ns
        self.proc: subprocess.Popen | None = None
        self._creator = os.getpid()

    def start(self) -> "Replayer":
        self.proc = subprocess.Popen(
            self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, preexec_fn=nsutil.in_netns_preexec(self.ns), pass_fds=self.pass_fds)
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def finish(self) -> ReplayResult:
        out, _ = self.proc.communicate()
        if self.proc.returncode != 0:
            raise NtaError(f"tcpreplay exited with status {self.proc.returncode}: {_last_line(out)}")
        return parse_tcpreplay(out)

    def kill(self) -> None:
        if os.getpid() == self._creator and self.running():
            self.proc.kill()
            self.proc.communicate()

    def __enter__(self) -> "Replayer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


SOL_PACKET = 263
PACKET_QDISC_BYPASS = 20
SNDBUF = 4 << 20


def packet_socket(ns: str | None, iface: str, qdisc_bypass: bool = True) -> socket.socket:
    """An AF_PACKET socket bound to ``iface`` of namespace ``ns`` (it stays in that namespace);
    protocol 0, so it receives nothing."""
    ctx = nsutil.inside(ns) if ns else contextlib.nullcontext()
    with ctx:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            s.bind((iface, 0))
            if qdisc_bypass:
                s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
            with contextlib.suppress(OSError):  # SO_SNDBUFFORCE needs CAP_NET_ADMIN
                s.setsockopt(socket.SOL_SOCKET, 32, SNDBUF)  # SO_SNDBUFFORCE
        except OSError as exc:
            s.close()
            raise NtaError(f"packet socket on {iface}: {exc.strerror}") from None
    return s


class BuiltinReplayer:
    """The built-in replayer: ``cap``'s frames (pcapfile.load) sent on ``iface`` of ``ns``."""

    def __init__(self, ns: str | None, iface: str, cap, opts: ReplayOptions, batch: int = 64,
                 qdisc_bypass: bool = True, method: str = "sendmmsg"):
        from harness.nta import ffi, lib

        opts.validate()
        if not 1 <= batch <= 1024:
            raise NtaError(f"bad batch {batch}: 1..1024 frames per sendmmsg")
        self.ns, self.iface, self.cap, self.opts = ns, iface, cap, opts
        self._ffi, self._lib = ffi, lib
        self._sock = None
        self._thread: threading.Thread | None = None
        self._rc = 0
        r = self._r = ffi.new("struct nta_replay *")
        if opts.topspeed:
            r.mode = lib.NTA_REPLAY_TOPSPEED
        elif opts.pps:
            r.mode, r.rate = lib.NTA_REPLAY_PPS, opts.pps
        elif opts.mbps:
            r.mode, r.rate = lib.NTA_REPLAY_MBPS, opts.mbps
        else:
            r.mode, r.rate = lib.NTA_REPLAY_TIMING, opts.multiplier or 1.0
        # the buffers stay referenced by self.cap for as long as the sender runs
        self._keep = [ffi.from_buffer(cap.blob) if cap.frames else ffi.NULL,
                      ffi.from_buffer(cap.offsets), ffi.from_buffer(cap.lengths), ffi.from_buffer(cap.rel_ns)]
        r.blob = ffi.cast("const uint8_t *", self._keep[0])
        r.offsets = ffi.cast("const uint64_t *", self._keep[1])
        r.lengths = ffi.cast("const uint32_t *", self._keep[2])
        r.rel_ns = ffi.cast("const int64_t *", self._keep[3])
        r.frames, r.loops, r.limit = cap.frames, opts.loops, opts.limit or 0
        r.duration_ns = int((opts.duration or 0) * 1e9)
        r.batch = batch
        if method not in METHODS:
            raise NtaError(f"bad send method {method!r}: choose {', '.join(METHODS)}")
        r.method = lib.NTA_REPLAY_TX_RING if method == "tx-ring" else lib.NTA_REPLAY_SENDMMSG
        self.method = method
        self._bypass = qdisc_bypass
        self._creator = os.getpid()

    def start(self) -> "BuiltinReplayer":
        self._sock = packet_socket(self.ns, self.iface, self._bypass)
        self._r.fd = self._sock.fileno()
        self._thread = threading.Thread(target=self._run, name="nta-replay", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        self._rc = self._lib.nta_replay_run(self._r)

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def counters(self) -> dict:
        r = self._r
        return {k: getattr(r, k) for k in ("sent", "bytes", "failed", "retried_enobufs", "retried_eagain",
                                          "calls")}

    def finish(self) -> ReplayResult:
        self._thread.join()
        self._close()
        if self._rc:
            raise NtaError(f"the built-in replayer could not start: {os.strerror(-self._rc)}")
        r = self._r
        secs = (r.end_ns - r.start_ns) / 1e9
        res = ReplayResult(packets=r.sent + r.failed, bytes=r.bytes, seconds=secs,
                           rated_bps=r.bytes / secs if secs else 0.0,
                           rated_mbps=r.bytes * 8 / secs / 1e6 if secs else 0.0,
                           rated_pps=r.sent / secs if secs else 0.0,
                           successful=r.sent, failed=r.failed, truncated=None,
                           retried_enobufs=r.retried_enobufs, retried_eagain=r.retried_eagain,
                           driver="builtin", calls=r.calls)
        if r.failed:
            res.output = f"last send error: {os.strerror(r.last_errno)}"
        return res

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def kill(self) -> None:
        if os.getpid() != self._creator:
            return
        if self.running():
            self._r.stop = 1
            self._thread.join()
        self._close()

    def __enter__(self) -> "BuiltinReplayer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()

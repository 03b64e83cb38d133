"""Replay a capture from inside the gen namespace: the options, the result, and tcpreplay.

Drivers with one interface (start, running, finish, kill; a context
manager) and one result, ``ReplayResult``:

* ``Replayer``: tcpreplay, the tool users know. Its own figures are kept: its
  ``Actual:`` and ``Rated:`` lines and the per-device block (successful,
  failed, truncated, retried) are parsed.
* ``BuiltinReplayer`` (harness.builtin): the frames already in memory (harness.pcapfile.load),
  sent by harness/csrc/replay.c with sendmmsg(2) or a PACKET_TX_RING on an
  AF_PACKET socket opened in the gen namespace, with PACKET_QDISC_BYPASS, from
  threads of this process (the C loop runs without the GIL). Its counters are
  read live.
* the XDP live-frames replayer (``--replayer xdp``): the same driver and send
  loop, the frames in the maps of nta_xdp_gen (harness.xdp.GenProgram), a
  BPF_PROG_RUN with live frames per batch from each sender's CPU, in the gen
  namespace: no skb, no socket.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess

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
    unique_flows: bool = False  # each loop's addresses moved apart by its number (tcpreplay --unique-ip)

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
    """A replayer's own account of the replay: tcpreplay's closing statistics, or the built-in
    replayer's counters, in the same fields."""

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
    unchanged: int | None = None  # --unique-flows: frames of later loops sent as they were (not IP)
    calls: int | None = None  # send calls (built-in)
    runs: int | None = None  # xdp: runs of the program (live frames the kernel made)
    kernel_batch: int | None = None  # xdp: the most frames of a kernel batch (paced: 1 until the sender falls behind)
    senders: list | None = None  # built-in: each sender's cpu, sent, bytes, failed

    @property
    def sent(self) -> int:
        """Packets the replayer handed to the kernel successfully."""
        return self.successful if self.successful is not None else self.packets


_ACTUAL = re.compile(r"Actual:\s+(\d+) packets \((\d+) bytes\) sent in ([\d.]+) seconds")
_RATED = re.compile(r"Rated:\s+([\d.]+) Bps,\s+([\d.]+) Mbps,\s+([\d.]+) pps")
_SKIPPED = re.compile(r"Failed write attempts:\s+(\d+)")
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
    # frames tcpreplay gave up on before the device: its --unique-ip skips what it cannot edit (not IP)
    skipped = _SKIPPED.findall(text)
    if skipped:
        res.failed = (res.failed or 0) + int(skipped[-1])
        res.unchanged = 0  # what --unique-ip cannot edit, tcpreplay does not send
    return res


DRIVERS = ("tcpreplay", "builtin", "xdp")


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
    if opts.unique_flows and opts.loops > 1:
        cmd.append("--unique-ip")  # non-IP frames of later loops: not sent, counted as failed (tcpreplay's way)
    cmd.append(pcap)
    return cmd


class Replayer:
    """tcpreplay running in namespace ``ns``; dies with this process."""

    def __init__(self, ns: str, iface: str, pcap: str, opts: ReplayOptions, pass_fds: tuple = (),
                 cpu: int | None = None):
        self.cmd = command(iface, pcap, opts)
        self.pass_fds, self.cpu = pass_fds, cpu
        self.ns = ns
        self.proc: subprocess.Popen | None = None
        self._creator = os.getpid()

    def start(self) -> "Replayer":
        self.proc = subprocess.Popen(
            self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, preexec_fn=nsutil.in_netns_preexec(self.ns, self.cpu),
            pass_fds=self.pass_fds)
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

"""``nta doctor``: can this machine run the harness? (root, BCC, kernel headers, BPF, tcpreplay); with --iface,
what an interface is (harness.nic)."""

from __future__ import annotations

import os
import platform
import shutil
import sys

from harness.commands import parser
from harness.errors import NtaError


def _checks():
    yield "root", lambda: None if os.geteuid() == 0 else "not root: run as root (CAP_NET_ADMIN, CAP_BPF)"

    def bcc():
        try:
            import bcc  # noqa: F401
        except ImportError:
            return ("BCC's Python module is missing: install python3-bpfcc and use a "
                    "--system-site-packages venv")
    yield "bcc module", bcc

    def headers():
        build = f"/lib/modules/{platform.release()}/build"
        if not os.path.exists(os.path.join(build, "Makefile")):
            return f"no kernel headers at {build}: run 'make setup' (links Debian's linux-headers)"
    yield "kernel headers", headers

    def bpf():
        if os.geteuid() != 0:
            return "BPF not checked: needs root"
        from harness import cmodule, xdp
        from harness.errors import NtaError
        try:
            import bcc
            b = bcc.BPF(src_file=os.path.join(xdp.BPF_DIR, "nta_xdp_count.c").encode(),
                        cflags=xdp.cflags("drop", version=xdp.header_version()))
            try:
                if cmodule.built("_traffic_c"):
                    os.close(xdp.load_xdp_frags(b, "nta_xdp_count"))  # as every run loads it: frags-aware
                else:  # 'make setup' checks BPF before 'make build' has made the frags-aware loader
                    b.load_func(b"nta_xdp_count", bcc.BPF.XDP)
            finally:
                b.cleanup()
        except ImportError:
            return "BPF not checked: BCC missing"
        except NtaError as exc:
            return str(exc)
        except Exception as exc:
            return f"BPF unavailable: cannot compile and load an XDP program: {exc}"
    yield "BPF (compile + load XDP)", bpf

    def tcpreplay():
        if not shutil.which("tcpreplay"):
            return "tcpreplay not found: install Debian's tcpreplay"
    yield "tcpreplay", tcpreplay


def check(verbose: bool = True) -> list[str]:
    """Run every check; print them when verbose; return the failures' messages."""
    failures = []
    for name, fn in _checks():
        msg = fn()
        if msg:
            failures.append(msg)
        if verbose:
            print(f"  {'ok  ' if not msg else 'FAIL'}  {name}{': ' + msg if msg else ''}")
    return failures


def handle(args) -> int:
    if args.iface:
        from harness.nic import describe

        for line in describe(args.iface, args.netns).lines():
            print(line)
        return 0
    if args.netns:
        raise NtaError("--netns: only with --iface")
    failures = check(verbose=not args.quiet)
    if failures and args.quiet:
        print(f"nta: error: {failures[0]}", file=sys.stderr)
    return 1 if failures else 0


def add(sub) -> None:
    p = parser(sub, "doctor", "check root, BCC, kernel headers, BPF and tcpreplay",
               "Check that this machine can run the harness: root, BCC's Python module, the kernel-headers "
               "link BCC compiles against, loading an XDP program, tcpreplay.")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the first failure, on one line")
    p.add_argument("--iface", metavar="IFACE",
                   help="instead, describe IFACE as 'nta run --iface' finds it: driver, RX queues, MTU, XDP "
                        "features (zero-copy among them; unknown before Linux 6.3), a program already attached, "
                        "the CPU of each RX queue")
    p.add_argument("--netns", metavar="NS", help="with --iface: the interface's network namespace")
    p.set_defaults(func=handle)

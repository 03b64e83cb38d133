"""nta: the command line. The root parser, signals and error handling; each command is a module of
harness.commands (its parser, handler and examples).

Every error a user can cause (a bad flag, a bad capture, a missing
privilege) is one line on stderr and a non-zero exit status; SIGINT, SIGTERM
and SIGHUP unwind through the context managers, so nothing is left behind.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from harness import __version__, signals
from harness.commands import arena, bench, doctor, examples, pcap, run, topo
from harness.errors import NtaError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
COMMANDS = (run, topo, pcap, bench, arena, doctor)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line: 'nta run: error: ...'."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> Parser:
    parser = Parser(
        prog="nta",
        description="nta-harness: replay captures over a veth pair into XDP and measure them.",
        epilog=examples("""
            sudo nta run --pcap build/imix.pcap --loops 2000 --topspeed
            sudo nta topo status
            nta pcap info capture.pcap
            nta bench alloc
            nta <command> --help"""),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"nta {__version__}")
    sub = parser.add_subparsers(dest="cmd", metavar="{run,topo,inspect,pcap,bench,attach,pool,doctor}",
                                required=True, parser_class=Parser)
    for command in COMMANDS:
        command.add(sub)
    return parser


def _install_signal_handlers() -> None:
    """SIGINT, SIGTERM, SIGHUP unwind this process through its context managers.

    Only this process: pyroute2 forks helpers (to open sockets inside a
    namespace) and stops them with SIGTERM. A forked copy that raised here would
    unwind through a copy of our stack and run our clean-up against the
    parent's namespaces and sockets. A child just dies of the signal.
    """
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        name = None if signum == signal.SIGINT else signal.Signals(signum).name
        if signals.note(name):  # noted for the loops, should a library's bare except swallow what follows
            raise KeyboardInterrupt(name)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _install_signal_handlers()
    try:
        return args.func(args) or 0
    except NtaError as exc:
        print(f"nta: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        why = f" by {exc.args[0]}" if exc.args and exc.args[0] else ""
        print(f"nta: interrupted{why}; everything it made was removed", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 1
    except Exception as exc:  # a bug: one line for users, the traceback on request
        if os.environ.get("NTA_DEBUG"):
            raise
        print(f"nta: internal error: {type(exc).__name__}: {exc} (NTA_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 70

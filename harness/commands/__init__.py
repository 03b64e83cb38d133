"""The ``nta`` commands, a module each: its parser, its handler and its examples together.

Each module has ``add(sub)``, which adds its parser to the root's subparsers
and sets ``func`` to its handler; a handler takes the parsed arguments and
returns the exit status. The helpers below are the ones every parser shares.

A handler imports the modules that do its work when it runs, not when the
parser is built: numpy, pyroute2 and the C modules take 0.2 s to load, and
``nta --help`` or a bad flag should answer at once (0.02 s).
"""

from __future__ import annotations

import argparse
import textwrap

EXIT_UNRECONCILED = 3


def examples(text: str) -> str:
    """An epilog of examples, as bcc's tools end their help."""
    return "examples:\n" + textwrap.indent(textwrap.dedent(text).strip("\n"), "  ")


def parser(sub, name: str, help: str, description: str | None = None, epilog: str | None = None, **kw):
    return sub.add_parser(name, help=help, description=description or help, epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter, **kw)


def positive_int(s: str, least: int = 1) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {s!r}") from None
    if v < least:
        raise argparse.ArgumentTypeError(f"must be {least} or more, not {v}")
    return v


def natural_int(s: str) -> int:
    return positive_int(s, least=0)


def positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {s!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {s}")
    return v


def csv(kind):
    """A comma-separated list of ``kind``."""
    def parse(s: str):
        items = [x.strip() for x in s.split(",") if x.strip()]
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        return [kind(x) for x in items] if kind is not str else items
    return parse


def json_arg(p, what: str = "the figures") -> None:
    p.add_argument("--json", metavar="FILE", help=f"also write {what} as JSON ('-' for stdout)")


def write_doc(args, doc: dict) -> bool:
    """Write ``doc`` to --json if given; True when it went to stdout (then nothing else is printed)."""
    from harness import jsonfile

    if args.json:
        jsonfile.write_json(args.json, doc)
    return args.json == "-"

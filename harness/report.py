"""Output for people (interval lines, summary tables) and for machines (JSON)."""

from __future__ import annotations

import json
import os
import sys
import tempfile

from harness.errors import NtaError


def n(x) -> str:
    """A count with thousands separators; '-' for unknown."""
    return "-" if x is None else f"{int(round(x)):,}"


def table(rows: list[list[str]], header: list[str], out=sys.stdout) -> None:
    """Left-align the first column, right-align the others."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        cells = [str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(r)]
        print("  " + "  ".join(cells).rstrip(), file=out)


def check_writable(path: str | None, what: str = "--json") -> None:
    """Fail before any work if ``path`` cannot be written later."""
    if path is None or path == "-":
        return
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise NtaError(f"{what} {path}: directory {d} does not exist")
    if os.path.isdir(path):
        raise NtaError(f"{what} {path}: is a directory")
    if not os.access(d, os.W_OK):
        raise NtaError(f"{what} {path}: directory {d} is not writable")


def write_json(path: str, doc: dict) -> None:
    """Write ``doc`` to ``path`` atomically ('-' is standard output)."""
    text = json.dumps(doc, indent=2, sort_keys=False) + "\n"
    if path == "-":
        sys.stdout.write(text)
        return
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".nta-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

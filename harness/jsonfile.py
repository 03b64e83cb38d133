"""Figures for machines: every command's ``--json FILE``, checked before the work and written atomically.

A command builds one document; the human summary is printed from the same
document (harness.report), so the two cannot disagree.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

from harness import __version__
from harness.errors import NtaError


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


def document(command: str, **fields) -> dict:
    """The head every document starts with: tool, version, command."""
    return {"tool": "nta", "version": __version__, "command": command, **fields}


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

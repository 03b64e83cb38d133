"""The one error type the CLI turns into a one-line message, and the privilege check."""

import os


class NtaError(Exception):
    """An error the user can act on.

    The CLI prints ``nta: error: <message>`` on one line and exits with
    ``exit_code``; no traceback. Raise it with a message that says what went
    wrong and where (a file and byte offset, an interface, a namespace).
    """

    exit_code = 1


class UsageError(NtaError):
    """A bad option value, refused before anything is made: one line naming the option, exit status 2."""

    exit_code = 2


class NeedRoot(NtaError):
    """The command needs root (CAP_NET_ADMIN and CAP_BPF)."""

    def __init__(self, what: str):
        super().__init__(f"{what} needs root (CAP_NET_ADMIN, CAP_BPF): run it with sudo")


def require_root(what: str) -> None:
    """Raise NeedRoot unless this process is root: for commands that make namespaces or load BPF."""
    if os.geteuid() != 0:
        raise NeedRoot(what)

"""The CLI's signals (SIGINT, SIGTERM, SIGHUP), and what must hold for them to end a run.

harness.cli turns each into KeyboardInterrupt in the main thread, raised at
whatever line the main thread is on. Two places can lose it, and both are
covered here:

* Inside ``Thread.start()``, while it waits for the new thread to say it
  runs, it leaves a thread that may be running but that ``join()`` refuses
  ("cannot join thread before it is started"): the clean-up that joins it
  fails instead of stopping it. ``started()`` holds the signals back for the
  moment a thread takes to start; they are delivered right after.
* Inside a library's bare ``except:`` (pyroute2 decodes netlink messages
  under one, and the measurement loop reads netlink every interval), it is
  swallowed and the run goes on. So the handler also notes the signal
  (``note()``), and the loops that a run waits in call ``check()``, which
  raises it again.
"""

from __future__ import annotations

import signal
import threading

HELD = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
_noted: list[str | None] = []


def note(name: str | None) -> None:
    """A signal came (``name``: None for SIGINT, else its name)."""
    _noted.append(name)


def check() -> None:
    """Raise KeyboardInterrupt if a signal came that nobody acted on yet."""
    if _noted:
        raise KeyboardInterrupt(_noted[0])


def handled() -> None:
    """The signal was acted on (a measurement it ends, not an error): the loops go on."""
    _noted.clear()


def started(thread: threading.Thread) -> threading.Thread:
    """Start ``thread`` with the CLI's signals held back until it runs (it starts with them blocked: the
    main thread is the one that handles them)."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
    return thread

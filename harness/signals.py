"""The CLI's signals (SIGINT, SIGTERM, SIGHUP), and what must hold for them to end a run.

harness.cli turns each into KeyboardInterrupt in the main thread, raised at
whatever line the main thread is on. Two places can lose it, and both are
covered here:

* Inside ``Thread.start()``, while it waits for the new thread to say it
  runs, it leaves a thread that may be running but that ``join()`` refuses
  ("cannot join thread before it is started"): the clean-up that joins it
  fails instead of stopping it. And between the start and the caller's
  record of the thread, it leaves one the clean-up does not know of.
  ``started()`` holds the signals back until both are done; they are
  delivered right after.
* Inside a library's bare ``except:`` (pyroute2 decodes netlink messages
  under one, and the measurement loop reads netlink every interval), it is
  swallowed and the run goes on. So the handler also notes the signal
  (``note()``), and the loops that a run waits in call ``check()``, which
  raises it again.

A third place breaks the library that it lands in: pyroute2 runs each netlink
request in an asyncio event loop, and a KeyboardInterrupt raised inside it
leaves the loop's async generators running. The request fails, and at exit
asyncio prints tracebacks about generators it cannot close. ``deferred()``
makes a signal that lands in such a request wait for the request to end (well
under a millisecond), and raises it right after; a second signal in the same
request is raised at once, so a request that hangs can still be interrupted.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

HELD = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
_noted: list[str | None] = []
_deferred_from: list[int] = []  # for each deferred() the main thread is in, len(_noted) when it began


def note(name: str | None) -> bool:
    """A signal came (``name``: None for SIGINT, else its name). True: raise it now; False: the main
    thread is in a deferred() region, which raises it when the region ends."""
    _noted.append(name)
    return not _deferred_from or len(_noted) - _deferred_from[-1] > 1


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Run the body with the first signal that comes deferred to its end (see the module's text).

    Only the main thread, which handles the signals, defers them; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _deferred_from.append(len(_noted))
    try:
        yield
    finally:
        came = len(_noted) > _deferred_from.pop()
    if came:
        raise KeyboardInterrupt(_noted[-1])


def check() -> None:
    """Raise KeyboardInterrupt if a signal came that nobody acted on yet."""
    if _noted:
        raise KeyboardInterrupt(_noted[0])


def handled() -> None:
    """The signal was acted on (a measurement it ends, not an error): the loops go on."""
    _noted.clear()


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Run the body with the CLI's signals blocked; one that came is delivered (and raised) right after.
    For what must not stop half way: starting a thread, removing what a run made."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def started(thread: threading.Thread, keep: Callable[[threading.Thread], None]) -> threading.Thread:
    """Start ``thread`` with the CLI's signals held back until it runs (it starts with them blocked: the
    main thread is the one that handles them), and ``keep`` it (the caller's record of it, which its
    clean-up stops and joins) before one is delivered: delivered between the start and an assignment of
    what this returned, a signal left a thread running that the clean-up never stopped, over a ring or
    pool it then freed."""
    with held():
        thread.start()
        keep(thread)
    return thread

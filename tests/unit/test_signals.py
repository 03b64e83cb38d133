"""harness.signals: a Ctrl-C that a library swallows still ends the run; a thread never starts half way."""

import signal
import threading

import pytest

from harness import signals


def test_a_swallowed_interrupt_is_raised_again_by_the_loops():
    signals.note("SIGTERM")
    try:
        try:
            raise KeyboardInterrupt("SIGTERM")
        except:  # noqa: E722 -- what pyroute2 does while decoding a netlink message
            pass
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            signals.check()
    finally:
        signals.handled()
    signals.check()  # acted on: the loops go on


def test_a_thread_starts_with_the_signals_held_and_the_caller_gets_them_back():
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    seen = {}
    t = signals.started(threading.Thread(target=lambda: seen.update(mask=signal.pthread_sigmask(signal.SIG_BLOCK, []))))
    t.join()
    assert signals.HELD <= seen["mask"]  # the new thread leaves them to the main thread
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before

"""harness.signals: a Ctrl-C that a library swallows still ends the run; a thread never starts half way."""

import os
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
    t = signals.started(threading.Thread(target=lambda: seen.update(mask=signal.pthread_sigmask(signal.SIG_BLOCK, []))),
                        lambda t: None)
    t.join()
    assert signals.HELD <= seen["mask"]  # the new thread leaves them to the main thread
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before


@pytest.fixture
def cli_handlers():
    """The CLI's handlers in this process, for one test."""
    from harness import cli
    saved = {s: signal.getsignal(s) for s in signals.HELD}
    cli._install_signal_handlers()
    yield
    for s, h in saved.items():
        signal.signal(s, h)
    signals.handled()


def test_a_signal_while_a_thread_starts_comes_after_the_caller_has_recorded_it(cli_handlers):
    """SIGINT comes as the new thread starts: it is raised in the caller only once keep() has the
    thread, which the caller's clean-up then stops (else it ran on over what the clean-up freed). Sent to
    the main thread: in a run every other thread blocks the signals, so the kernel gives it to the main
    thread (a process-wide kill here could land on a thread of the test process that does not block it)."""
    sent, kept, main = threading.Event(), [], threading.main_thread().ident

    def body():
        signal.pthread_kill(main, signal.SIGINT)
        sent.set()

    t = threading.Thread(target=body)
    with pytest.raises(KeyboardInterrupt):
        signals.started(t, lambda th: (sent.wait(5), kept.append(th)))
    t.join()
    assert kept == [t]


def test_a_deferred_signal_waits_for_the_end_of_the_request_and_a_second_one_does_not(cli_handlers):
    reached = []
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        with signals.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            reached.append("after the first")  # the request runs to its end
    assert reached == ["after the first"]
    with pytest.raises(KeyboardInterrupt, match="SIGHUP"):
        with signals.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGHUP)  # a hung request can still be interrupted
            reached.append("after the second")
    assert reached == ["after the first"]
    with signals.deferred():
        pass  # the signals that came before this region are not its own: it raises nothing


def test_held_delivers_the_signal_after_the_body(cli_handlers):
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with signals.held():
            os.kill(os.getpid(), signal.SIGINT)
            reached.append("body ran to its end")
    assert reached == ["body ran to its end"]

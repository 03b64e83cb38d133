"""A pyroute2 IPRoute whose every request runs with the CLI's signals deferred (harness.signals.deferred).

pyroute2 0.9 runs each request in an asyncio event loop; a KeyboardInterrupt
raised inside that loop breaks it (the request fails, asyncio prints tracebacks
at exit, and pyroute2's bare excepts may swallow the interrupt). A request
takes well under a millisecond, so a signal waits for it and is raised right
after it returns.
"""

from __future__ import annotations

from pyroute2 import IPRoute

from harness import signals


class Netlink:
    """IPRoute's requests (link_lookup, get_links, link, get_addr, ...), in namespace ``netns`` or this one."""

    def __init__(self, netns: str | None = None):
        with signals.deferred():
            self._ipr = IPRoute(netns=netns) if netns else IPRoute()

    def __getattr__(self, name: str):
        request = getattr(self._ipr, name)
        if not callable(request):
            return request

        def deferred(*args, **kwargs):
            with signals.deferred():
                return request(*args, **kwargs)
        return deferred

    def __enter__(self) -> "Netlink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

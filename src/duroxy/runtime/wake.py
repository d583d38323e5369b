"""How a dispatcher sleeps between fetches, and what wakes it.

A dispatcher fetches while there is work, then sleeps on its :class:`Wake` until a
provider listener says work was enqueued (at once in this process; from other
processes through the store's own mechanism), until a timer committed here falls due
(an alarm on :mod:`duroxy._alarms`' thread), or, as a safety net for what nothing
announces, until the poll interval passes, doubling while fetches come back empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

from .._alarms import DUE_RETRY_PAUSE_S, DUE_RETRY_S
from ..options import RuntimeOptions

__all__ = ["ANNOUNCED_POLL_FACTOR", "Wake"]

#: How much slower the idle safety-net poll may get on a store that announces work to
#: every process (see ``Provider.announces_work``).
ANNOUNCED_POLL_FACTOR = 4.0


class Wake:
    """A wake-up flag the provider may set from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, slow: float = 1.0) -> None:
        self._loop = loop
        self._event = asyncio.Event()
        #: how much further than ``max_poll_interval`` the idle poll may slow down
        self._slow = slow
        self._thread = threading.get_ident()
        self._poll = 0.0
        # Until then (monotonic) an empty fetch is retried at once: a timer fell due, and
        # the store, comparing with its own clock, may not show it quite yet.
        self._due_until = 0.0

    def set(self, _instance_id: str | None = None) -> None:
        if threading.get_ident() == self._thread:
            self._event.set()
        else:
            with contextlib.suppress(RuntimeError):  # loop closed
                self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float) -> None:
        # In this task (wait_for would start one per wait): a wake-up resumes the
        # dispatcher in one turn of the loop.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._event.wait()
        self._event.clear()

    def timer_due(self) -> None:
        """A timer committed here falls due now: wake, and keep fetching for a moment."""
        self._due_until = time.monotonic() + DUE_RETRY_S
        self.set()

    async def idle(self, opts: RuntimeOptions) -> None:
        """Wait for news after an empty fetch; each empty fetch in a row doubles the
        safety-net poll, up to ``max_poll_interval``."""
        if time.monotonic() < self._due_until:
            await self.wait(DUE_RETRY_PAUSE_S)
            return
        poll = max(self._poll, opts.poll_interval)
        await self.wait(poll)
        self._poll = min(poll * 2, max(opts.max_poll_interval * self._slow,
                                       opts.poll_interval))

    def busy(self, opts: RuntimeOptions) -> None:
        """Work came: back to the short poll, and what fell due has been found."""
        self._poll = opts.poll_interval
        self._due_until = 0.0

    def long_poll(self, opts: RuntimeOptions) -> float:
        """How long a long-polling fetch may wait; each empty one in a row doubles it."""
        poll = max(self._poll, opts.poll_interval)
        self._poll = min(poll * 2, max(opts.max_poll_interval * self._slow,
                                       opts.poll_interval))
        return poll

"""How a client waits for news of one instance: woken by the store's listeners when a
commit concerns it, with a poll as the safety net for commits no listener hears.

The poll runs every ``POLL_S`` on a store that does not announce work across processes
(SQLite: a commit of another process is seen by the poll alone). On one that announces
every commit to every process (``Provider.announces_work``: PostgreSQL's LISTEN/NOTIFY)
the poll only covers a listening connection that is not subscribed yet, or down (its
return wakes every waiter anyway): it starts at ``POLL_S`` and doubles up to
``ANNOUNCED_POLL_MAX_S``, so that a thousand clients waiting on long workflows read the
store 500 times a second, not 4,000.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TypeVar

from .providers.base import Channel, Provider

__all__ = ["ANNOUNCED_POLL_MAX_S", "POLL_S", "polls", "wait_for_news"]

T = TypeVar("T")

#: Safety-net poll while waiting for a commit made by another process.
POLL_S = 0.25
#: The longest safety-net poll on a store that announces work to every process.
ANNOUNCED_POLL_MAX_S = 2.0


def polls(provider: Provider) -> Iterator[float]:
    """The safety-net poll's successive waits for a client of ``provider``."""
    wait = POLL_S
    while True:
        yield wait
        if provider.announces_work:
            wait = min(wait * 2, ANNOUNCED_POLL_MAX_S)


async def wait_for_news(provider: Provider, instance_id: str, channels: Sequence[Channel],
                        check: Callable[[], Awaitable[tuple[bool, T]]], timeout: float,
                        describe: Callable[[], str]) -> T:
    """Run ``check`` now and after every commit announced for ``instance_id`` on
    ``channels`` (or each safety-net poll, see ``polls``) until it answers ``(True,
    value)``; returns the value. ``TimeoutError`` with ``describe()`` once ``timeout``
    seconds have passed. The waits are awaited in this task (``wait_for`` would run each
    in a task of its own): news resumes the caller in one turn of the loop, not three."""
    deadline = time.monotonic() + timeout
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()

    def on_news(iid: str | None) -> None:
        if iid is None or iid == instance_id:
            with contextlib.suppress(RuntimeError):  # the waiting loop is gone
                loop.call_soon_threadsafe(wake.set)

    unlisten = [provider.listen(channel, on_news) for channel in channels]
    poll = polls(provider)
    try:
        while True:
            wake.clear()
            done, value = await check()
            if done:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(describe())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, next(poll))):
                    await wake.wait()
    finally:
        for stop in unlisten:
            stop()

"""How a client waits for news of one instance: woken by the store's listeners when a
commit concerns it, with a slow poll as the safety net for commits no listener hears
(another process on a store that does not announce work across processes)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from .providers.base import Channel, Provider

__all__ = ["POLL_S", "wait_for_news"]

T = TypeVar("T")

#: Safety-net poll while waiting for a commit made by another process.
POLL_S = 0.25


async def wait_for_news(provider: Provider, instance_id: str, channels: Sequence[Channel],
                        check: Callable[[], Awaitable[tuple[bool, T]]], timeout: float,
                        describe: Callable[[], str]) -> T:
    """Run ``check`` now and after every commit announced for ``instance_id`` on
    ``channels`` (or every ``POLL_S``) until it answers ``(True, value)``; returns the
    value. ``TimeoutError`` with ``describe()`` once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()

    def on_news(iid: str | None) -> None:
        if iid is None or iid == instance_id:
            with contextlib.suppress(RuntimeError):  # the waiting loop is gone
                loop.call_soon_threadsafe(wake.set)

    unlisten = [provider.listen(channel, on_news) for channel in channels]
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
                async with asyncio.timeout(min(remaining, POLL_S)):
                    await wake.wait()
    finally:
        for stop in unlisten:
            stop()

"""What both dispatchers share: slots for work, the tasks they start, and the loop that
fetches as much work as there are free slots.

Invariant: an item fetched holds one slot from the moment the fetch returns until its
task ends; ``Slots.free`` is therefore the number of items a fetch may ask for.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

from ..errors import LockLost, ProviderError
from ..options import RuntimeOptions
from .wake import Wake

__all__ = ["FetchLoop", "Slots", "TaskSet", "log_failure", "renew_while"]

logger = logging.getLogger("duroxy.runtime")

Item = TypeVar("Item")


def log_failure(message: str, *args: object) -> None:
    """Log the exception being handled: a store's passing trouble (a retryable
    ``ProviderError``: the server away, a full disk, a lock timeout) in one line at
    WARNING, its message saying all there is; anything else, a bug above all, at ERROR
    with its traceback. Call it from an ``except`` block."""
    error = sys.exc_info()[1]
    if isinstance(error, ProviderError) and error.retryable:
        logger.warning(message + " (%s: %s)", *args, type(error).__name__, error)
    else:
        logger.exception(message, *args)


class Slots:
    """Places for work of one kind (turns, activities): ``size`` at most at once."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._sem = asyncio.Semaphore(size)

    @property
    def free(self) -> int:
        return self._free

    async def acquire(self) -> None:
        await self._sem.acquire()
        self._free -= 1

    def release(self) -> None:
        self._free += 1
        self._sem.release()

    async def wait_free(self) -> None:
        """Return once a slot is free (without taking it)."""
        await self.acquire()
        self.release()


class TaskSet:
    """The tasks a runtime started for its work, so that shutdown can wait for them."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task


class FetchLoop(Generic[Item]):
    """Fetch as much work as there are free slots and run each item in its own task,
    until stopped; sleep on ``wake`` when the store has nothing (``long_poll``: the
    fetch itself waits for work, and stopping cancels it).

    A failed fetch is tried again a second later. While the store keeps failing (an
    outage), only the first failure is logged with its traceback, the others in a line
    each; the first fetch that works again says how long the trouble lasted."""

    def __init__(self, what: str, fetch: Callable[[int, float], Awaitable[list[Item]]],
                 run: Callable[[Item], Coroutine[Any, Any, None]], wake: Wake, slots: Slots,
                 long_poll: bool, options: RuntimeOptions, tasks: TaskSet) -> None:
        self._what = what
        self._fetch = fetch
        self._run = run
        self._wake = wake
        self._slots = slots
        self._long_poll = long_poll
        self._opts = options
        self._tasks = tasks
        self._stopping = False
        self._poll: asyncio.Future[list[Item]] | None = None
        #: failed fetches in a row, and when the first of them failed (monotonic)
        self._failures = 0
        self._failing_since = 0.0

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._poll is not None:
            self._poll.cancel()

    async def run(self) -> None:
        opts, wake, slots = self._opts, self._wake, self._slots
        while not self._stopping:
            free = slots.free
            if free == 0:
                await slots.wait_free()
                continue
            try:
                if self._long_poll:
                    self._poll = asyncio.ensure_future(self._fetch(free, wake.long_poll(opts)))
                    try:
                        items = await self._poll
                    except asyncio.CancelledError:
                        if self._stopping:
                            return
                        raise
                    finally:
                        self._poll = None
                else:
                    items = await self._fetch(free, 0.0)
            except Exception as e:
                self._failed(e)
                await wake.wait(1.0)
                continue
            if self._failures:
                logger.warning("fetching %s work works again, after %d failed attempts in "
                               "%.1f s", self._what, self._failures,
                               time.monotonic() - self._failing_since)
                self._failures = 0
            if not items:
                if not self._long_poll:
                    await wake.idle(opts)
                continue
            wake.busy(opts)
            for item in items:
                await slots.acquire()
                self._tasks.spawn(self._run(item))
            if len(items) < free and not self._long_poll:
                # The store had less than we could take: wait for news rather than ask
                # again at once (a wake-up that came meanwhile is kept by the flag).
                await wake.wait(opts.poll_interval)

    def _failed(self, e: Exception) -> None:
        self._failures += 1
        if self._failures == 1:
            self._failing_since = time.monotonic()
            logger.exception("fetching %s work failed; retrying", self._what)
        else:  # the same trouble going on: its traceback was logged with the first
            logger.warning("fetching %s work failed again (%d in a row, for %.1f s): %s: %s;"
                           " retrying", self._what, self._failures,
                           time.monotonic() - self._failing_since, type(e).__name__, e)


def renew_while(renew: Callable[[], Awaitable[None]], interval: float,
                failed: Callable[[BaseException], None]) -> Callable[[], None]:
    """Call ``renew`` every ``interval`` seconds, the first time one interval from now,
    until the returned stop is called or ``renew`` raises ``LockLost`` (the commit
    that follows will tell). Other failures go to ``failed`` and renewal goes on."""
    renewing: list[asyncio.Task[None]] = []

    async def loop() -> None:
        while True:
            try:
                await renew()
            except LockLost:
                return
            except Exception as e:
                failed(e)
            await asyncio.sleep(interval)

    handle = asyncio.get_running_loop().call_later(
        interval, lambda: renewing.append(asyncio.ensure_future(loop())))

    def stop() -> None:
        handle.cancel()
        for task in renewing:
            task.cancel()

    return stop

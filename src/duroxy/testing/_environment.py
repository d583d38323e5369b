"""``OrchestrationEnvironment``: orchestrations and activities run end to end in a test,
on a store of their own and on a virtual clock that skips ahead.

The environment's store (in memory, or an in-memory SQLite database) is given a
:class:`~duroxy._clock.VirtualClock`, which its runtime and client read too: timers,
``asyncio.sleep``, retry backoffs, ``ctx.utcnow()``, history timestamps and record
times all follow it, and nothing global is patched. The clock stands still until moved:

* **autojump**: a task of the environment watches the store (:class:`~duroxy.providers.
  pending.PendingWork`). Whenever it is idle, with no lock held (no turn running, no
  activity running) and nothing fetchable now, and something falls due later, the
  clock jumps to the earliest due time. It looks again after every commit the store
  announces, and every few milliseconds meanwhile. Before it jumps, it lets the event
  loop run what is ready and looks once more, so that a test between two awaits (a
  start, then an event raised at once) is not overtaken;
* ``env.sleep(delay)`` moves the clock by ``delay``, stopping at each due time on the
  way for what falls due to run, and returns once that has run.

A jump only happens when no lock is held, so it never expires one: lock timeouts,
polling, renewals and ``timeout`` arguments are real durations. Activities run in real
time while the virtual clock stands still: an activity's own sleep takes real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from .._clock import SYSTEM_CLOCK, Clock, VirtualClock
from ..client import Client
from ..options import RuntimeOptions, TagFilter, to_seconds
from ..providers.base import Channel, Provider
from ..providers.memory import InMemoryProvider
from ..providers.pending import PendingWork, PendingWorkReport
from ..providers.sqlite import SqliteProvider
from ..runtime import ActivityRegistry, OrchestrationRegistry, Runtime

__all__ = ["OrchestrationEnvironment"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: How often the idle check runs while the store announces nothing (real seconds): a
#: turn that commits nothing new (it only waits) is announced by nobody. The first look
#: after news comes soon, and each quiet one doubles the wait, up to the second figure.
_LOOK_FIRST_S = 0.001
_LOOK_AT_MOST_S = 0.02
#: Times at or past this are never reached (a row parked for good): no jump goes there.
_NEVER = (datetime.max.replace(tzinfo=UTC) - _EPOCH).total_seconds() - 86400
_STORES = ("memory", "sqlite")
_CHANNELS: tuple[Channel, ...] = ("orchestrator", "activity", "terminal", "updated")


class OrchestrationEnvironment:
    """A runtime, a client and a store of their own, for a test, on a virtual clock
    that skips ahead whenever nothing else can run (see the module docstring)::

        async with OrchestrationEnvironment(activities, orchestrations) as env:
            await env.client.start_orchestration("r-1", "remind", {"days": 30})
            status = await env.client.wait_for_orchestration("r-1", timeout=5)

    ``time_skipping=False`` gives the same environment on the real clock. ``store`` is
    ``"memory"`` (the in-memory reference store) or ``"sqlite"`` (an in-memory SQLite
    database); ``options`` the runtime's; ``start_time`` (an aware ``datetime``; a
    naive one is local time, as ``datetime.timestamp`` reads it) where the virtual
    clock starts (default: the real time, to the millisecond). ``activities`` or
    ``orchestrations`` may be ``None`` when a test needs none.

    An async context manager; ``env = await OrchestrationEnvironment.start(...)`` with
    ``await env.shutdown()`` is the other spelling. Only the environment's runtime may
    work its store: time skipping must see all the work. Environments are independent:
    several may run in one process, each with its own clock."""

    def __init__(self, activities: ActivityRegistry | None,
                 orchestrations: OrchestrationRegistry | None, *, time_skipping: bool = True,
                 store: str = "memory", options: RuntimeOptions | None = None,
                 start_time: datetime | None = None) -> None:
        if store not in _STORES:
            raise ValueError(f"store must be 'memory' or 'sqlite', not {store!r}")
        if start_time is not None and not isinstance(start_time, datetime):
            raise TypeError(f"start_time must be a datetime, not {type(start_time).__name__}")
        if start_time is not None and not time_skipping:
            raise ValueError("start_time needs time_skipping: the real clock starts now")
        self._activities = activities if activities is not None else \
            ActivityRegistry.builder().build()
        self._orchestrations = orchestrations if orchestrations is not None else \
            OrchestrationRegistry.builder().build()
        self._options = options
        self._time_skipping = bool(time_skipping)
        self._clock: Clock
        self._virtual: VirtualClock | None = None
        if self._time_skipping:
            if start_time is None:
                start = (time.time_ns() // 1_000_000) / 1000  # history keeps milliseconds
            else:
                start = start_time.timestamp()
            self._virtual = VirtualClock(start)
            self._clock = self._virtual
        else:
            self._clock = SYSTEM_CLOCK
        self._provider: Provider = (
            InMemoryProvider(self._clock) if store == "memory"
            else SqliteProvider.in_memory(clock=self._clock))
        self._runtime: Runtime | None = None
        self._client = Client(self._provider)
        self._driver: asyncio.Task[None] | None = None
        self._paused = 0  # auto_time_skipping_disabled() blocks open
        self._jumping = asyncio.Lock()  # held by whoever moves the clock
        self._news: asyncio.Event | None = None
        self._quiet = _LOOK_FIRST_S  # the next look's longest wait (see _look)
        self._unlisten: list[Any] = []
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    async def start(cls, activities: ActivityRegistry | None,
                    orchestrations: OrchestrationRegistry | None, *,
                    time_skipping: bool = True, store: str = "memory",
                    options: RuntimeOptions | None = None,
                    start_time: datetime | None = None) -> OrchestrationEnvironment:
        """A started environment (shut it down with :meth:`shutdown`)."""
        env = cls(activities, orchestrations, time_skipping=time_skipping, store=store,
                  options=options, start_time=start_time)
        await env._begin()
        return env

    async def _begin(self) -> None:
        if self._runtime is not None:
            raise RuntimeError("this OrchestrationEnvironment is started already")
        if self._closed:
            raise RuntimeError("this OrchestrationEnvironment was shut down; make a new one")
        try:
            self._runtime = await Runtime.start(self._provider, self._activities,
                                                self._orchestrations, self._options)
        except BaseException:
            await self._provider.close()
            self._closed = True
            raise
        if self._virtual is not None:
            loop = asyncio.get_running_loop()
            news = self._news = asyncio.Event()

            def heard(_instance_id: str | None = None) -> None:
                with contextlib.suppress(RuntimeError):  # the loop is closed
                    loop.call_soon_threadsafe(news.set)

            for channel in _CHANNELS:
                self._unlisten.append(self._provider.listen(channel, heard))
            self._driver = asyncio.create_task(self._drive(), name="duroxy-time-skipping")

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Stop skipping time, shut the runtime down (work in flight gets ``timeout``
        real seconds) and close the store. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for unlisten in self._unlisten:
            unlisten()
        if self._driver is not None:
            self._driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._driver
        try:
            if self._runtime is not None:
                await self._runtime.shutdown(timeout)
        finally:
            await self._provider.close()

    async def __aenter__(self) -> OrchestrationEnvironment:
        await self._begin()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.shutdown()

    # ------------------------------------------------------------------ what a test uses
    @property
    def client(self) -> Client:
        """A client on the environment's store."""
        return self._client

    @property
    def runtime(self) -> Runtime:
        """The environment's running runtime."""
        if self._runtime is None:
            raise RuntimeError("the environment is not started: use `async with "
                               "OrchestrationEnvironment(...)` or "
                               "`await OrchestrationEnvironment.start(...)`")
        return self._runtime

    @property
    def provider(self) -> Provider:
        """The environment's store."""
        return self._provider

    @property
    def time_skipping(self) -> bool:
        """Whether this environment runs on a virtual clock that skips ahead."""
        return self._time_skipping

    def now(self) -> datetime:
        """The environment's time (virtual when skipping time), an aware ``datetime``."""
        return _EPOCH + timedelta(microseconds=self._clock.time_us())

    async def sleep(self, delay: timedelta | float) -> None:
        """Let ``delay`` (a ``timedelta`` or seconds) pass: on the virtual clock, it
        moves forward by ``delay``, stopping at each due time on the way so that what
        falls due runs then (timers fire in their order, at their times), and returns
        once what fell due has run. Turns and activities in flight finish first (the
        clock stands still while one runs). Also inside
        :meth:`auto_time_skipping_disabled`. On the real clock: ``asyncio.sleep``."""
        seconds = to_seconds(delay, "delay", finite=True)
        clock = self._virtual
        if clock is None:
            await asyncio.sleep(seconds)
            return
        self.runtime  # noqa: B018 - (raises when not started)
        target_us = clock.time_us() + round(seconds * 1_000_000)
        async with self._jumping:
            while True:
                report = await self._until_idle()
                if clock.time_us() >= target_us:
                    break
                due = report.due_at
                step_us = target_us if due is None or due >= _NEVER \
                    else min(target_us, round(due * 1_000_000))
                clock.advance_to(step_us / 1_000_000)

    @contextlib.contextmanager
    def auto_time_skipping_disabled(self) -> Iterator[None]:
        """No automatic jumps inside the block; :meth:`sleep` still moves the clock
        there. Blocks nest."""
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    # ------------------------------------------------------------------ the clock's driver
    async def _pending(self) -> PendingWorkReport:
        provider = self._provider
        assert isinstance(provider, PendingWork)
        # Activity work the runtime's filter refuses never runs here: it does not keep
        # the clock from moving (a timer it races wins, as it would anywhere).
        opts = self._options or RuntimeOptions()
        return await provider.pending_work(
            opts.worker_tag_filter if opts.runs_activities else TagFilter.NONE)

    def _idle(self, report: PendingWorkReport) -> bool:
        return report.held == 0 and (report.due_at is None
                                     or report.due_at > self._clock.time())

    async def _look(self) -> None:
        """Wait for the store's next news, or a few milliseconds (longer while it stays
        quiet)."""
        news = self._news
        assert news is not None
        try:
            async with asyncio.timeout(self._quiet):
                await news.wait()
        except TimeoutError:
            self._quiet = min(self._quiet * 2, _LOOK_AT_MOST_S)
        else:
            self._quiet = _LOOK_FIRST_S
        news.clear()

    async def _until_idle(self) -> PendingWorkReport:
        """The store's report once it is idle: nothing held, nothing fetchable now."""
        while True:
            report = await self._pending()
            if self._idle(report):
                return report
            if self._closed:
                raise RuntimeError("the environment was shut down")
            await self._look()

    async def _drive(self) -> None:
        """Jump to the next due time whenever the environment is idle (autojump)."""
        clock = self._virtual
        assert clock is not None
        while True:
            await self._look()
            if self._paused or self._jumping.locked():
                continue
            async with self._jumping:
                report = await self._pending()
                due = report.due_at
                if not self._idle(report) or due is None or due >= _NEVER:
                    continue
                # What the event loop has ready runs first (a test about to raise an
                # event, a turn about to start); then the store is asked once more.
                for _ in range(3):
                    await asyncio.sleep(0)
                again = await self._pending()
                if again != report or self._paused:
                    continue
                clock.advance_to(due)

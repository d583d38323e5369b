"""The activity dispatcher: runs activities, keeps their locks, tells them when they
are no longer wanted, and hands their results on.

Architecture:

* **Fetch.** A :class:`~.dispatch.FetchLoop` takes as many visible work rows as there
  are free activity slots (the slots a turn's claims use too, see the orchestration
  dispatcher) and runs each in a task of its own.
* **Run.** An ``async def`` activity runs on the loop, a plain ``def`` one in a thread
  pool, in its own copy of the caller's context. An activity that raises fails; one
  that returns completes. While it runs, its lock is renewed (one interval in, since most
  are done by then), and a renewal refused with ``LockLost`` (its row was deleted: the
  orchestration no longer wants the result) sets its cancellation.
* **Hand on.** The result goes first to ``feed`` (the orchestration dispatcher feeds it
  straight into the instance's next turn when the instance is live here); otherwise it
  is acknowledged the ordinary way, which enqueues the completion for the instance.
  A turn fed that way may claim the next activity and *hand it off* to the task that
  ran this one, which runs it next on the same slot: a sequence of activities runs in
  one task.
* **Leases.** An item waits between the fetch or claim that leased it and its start
  only while a slot is busy (turns claim what they schedule, several at once may claim
  the same free slot) or the process is paused. One that waited longer than a renewal
  interval renews its lease before it starts, and is dropped if the lease is gone:
  another worker may run it already, and a result made under a lost lease is refused.
* **Shutdown.** A cancelled task gives back what it holds (its item, and the items
  handed to it and not started) at once, for another worker to take.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .. import codec
from .._hooks import ActivityAttempt
from ..errors import ErrorDetails, LockLost, NonRetryableError, message_of
from ..history import (
    ActivityCompleted,
    ActivityFailedEvent,
    ActivityWork,
    HistoryEvent,
    OrchestratorMessage,
)
from ..options import RuntimeOptions
from ..providers.base import ActivityItem, Provider
from .activity import ActivityContext
from .dispatch import Slots, TaskSet, log_failure
from .heartbeat import Heartbeat
from .hooks import HookSet
from .registry import ActivityEntry, ActivityRegistry
from .sessions import Sessions

__all__ = ["ActivityDispatcher", "Feed", "call_activity"]

logger = logging.getLogger("duroxy.runtime")

#: ``(item, result event, hand-off list)`` -> whether the result was committed with its
#: instance's next turn (the activity's row with it)
Feed = Callable[[ActivityItem, HistoryEvent, list[ActivityItem]], Awaitable[bool]]

#: (instance id, execution id, event id): an activity's identity in its instance
ActivityKey = tuple[str, int, int]


async def _not_fed(_item: ActivityItem, _event: HistoryEvent, _handoff: list[ActivityItem]
                   ) -> bool:
    return False


class ActivityDispatcher:
    def __init__(self, provider: Provider, activities: ActivityRegistry,
                 options: RuntimeOptions, heartbeat: Heartbeat, worker_id: str,
                 tasks: TaskSet, hooks: HookSet, sessions: Sessions) -> None:
        self.provider = provider
        self.hooks = hooks
        self.activities = activities
        self.options = options
        self.worker_id = worker_id
        self.sessions = sessions
        self._heartbeat = heartbeat
        self._tasks = tasks
        #: shared with turns that claim the activities they schedule (none when this
        #: runtime runs no activities)
        self.slots = Slots(options.activity_concurrency if options.runs_activities else 0)
        # tagged work met without its code, by key: warned about once
        self._waiting: set[str] = set()
        #: set by the runtime to the orchestration dispatcher's
        self.feed: Feed = _not_fed
        self._running: dict[ActivityKey, ActivityContext] = {}
        # When (time.monotonic()) the store was asked for each item not yet started, by
        # lock token: see _lease_lapsed.
        self._asked_at: dict[str, float] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, options.activity_concurrency),
            thread_name_prefix="duroxy-activity")

    @property
    def active(self) -> int:
        """Activities running now."""
        return len(self._running)

    async def fetch(self, limit: int, _wait: float) -> list[ActivityItem]:
        """A fetch of the work this runtime's tag filter accepts, the work of its
        sessions and of sessions it may claim (see :mod:`.sessions`), that leaves alone
        what other live workers run and this one cannot."""
        lock_timeout = self.options.activity_lock_timeout
        exclude = self._heartbeat.exclude
        if exclude is not None and not exclude.activities:
            exclude = None
        asked = time.monotonic()
        sessions = self.sessions
        try:
            async with sessions.guard:
                items = await self.provider.fetch_activity_items(
                    lock_timeout, limit, exclude=exclude, route=sessions.route())
                sessions.fetched(items)
        except Exception as e:
            self.hooks.store_failed(e)
            raise
        self.leased(items, asked)
        return items

    def leased(self, items: list[ActivityItem] | None, asked: float) -> None:
        """Note that the store was asked at ``asked`` (``time.monotonic()``) for ``items``,
        fetched or claimed by a turn: their leases began after that."""
        if not items:
            return
        self.hooks.fetched("activity", len(items))
        for item in items:
            self._asked_at[item.lock_token] = asked

    async def start(self, items: list[ActivityItem]) -> None:
        """Run activities claimed by a turn, each in a task of its own, on a slot."""
        for item in items:
            await self.slots.acquire()
            self._tasks.spawn(self.run(item))

    def cancel(self, keys: list[ActivityKey]) -> None:
        """Tell running activities their result is no longer wanted."""
        for key in keys:
            ctx = self._running.get(key)
            if ctx is not None:
                ctx._cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._asked_at.clear()

    async def run(self, item: ActivityItem) -> None:
        """Run an activity, then those its completion's turn hands off, on one slot
        (which this releases)."""
        handoff: list[ActivityItem] = [item]
        try:
            while handoff:
                await self._run_one(handoff.pop(0), handoff)
        except asyncio.CancelledError:
            # Shutdown: what was handed off and not started goes back at once.
            for left in handoff:
                self._asked_at.pop(left.lock_token, None)
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.provider.abandon_activity(left.lock_token, 0.0))
            raise
        finally:
            self.slots.release()

    async def _run_one(self, item: ActivityItem, handoff: list[ActivityItem]) -> None:
        work = item.work
        key = (work.instance_id, work.execution_id, work.event_id)
        ctx = ActivityContext(
            instance_id=work.instance_id, execution_id=work.execution_id,
            orchestration_name=work.orchestration_name,
            orchestration_version=work.orchestration_version, activity_name=work.name,
            attempt=work.attempt, worker_id=self.worker_id, provider=self.provider,
            loop=asyncio.get_running_loop(), session_id=work.session_id, tag=work.tag)
        renewer: list[asyncio.Task[None]] = []
        renewal: asyncio.TimerHandle | None = None
        attempt = ActivityAttempt(work.instance_id, work.execution_id,
                                  work.orchestration_name, work.orchestration_version,
                                  work.name, work.attempt, self.worker_id, work.trace_context,
                                  work.tag)
        hooked = committed = False
        failure: BaseException | None = None
        try:
            if await self._lease_lapsed(item):
                return
            entry = self.activities.get(work.name)
            if entry is None and await self._heartbeat.hand_back_activity(item):
                # a live worker that has it runs it: no attempt of ours, and its session
                # goes, so that that worker can claim it
                await self._leave_session(work)
                return
            if entry is None and work.tag is not None:
                await self._wait_for_worker(item)
                return
            self.hooks.activity_start(attempt)
            hooked = True
            if entry is None:
                committed = await self._not_registered(item, attempt)
                return
            if item.attempt > self.options.max_attempts:
                poison = ActivityFailedEvent(
                    source_event_id=work.event_id, error_type="Poison",
                    message=f"activity {work.name!r} did not complete after "
                    f"{item.attempt - 1} attempts (its worker crashed or lost its lock "
                    "each time)", error_kind="poison")
                _outcome(attempt, poison, None)
                self.hooks.activity_committing(attempt)
                await self._complete(item, poison)
                committed = True
                return
            self._running[key] = ctx
            renewal = asyncio.get_running_loop().call_later(
                self._renew_interval(),
                lambda: renewer.append(asyncio.ensure_future(self._renew(item, ctx))))
            began = time.perf_counter()
            event, raised = await self._invoke(entry, work, ctx)
            attempt.duration = time.perf_counter() - began
            renewal.cancel()
            for task in renewer:
                task.cancel()
            _outcome(attempt, event, raised)
            self.hooks.activity_committing(attempt)
            if not await self.feed(item, event, handoff):
                await self._complete(item, event)
            committed = True
            self.sessions.touch(work.session_id)
        except asyncio.CancelledError:
            # Shutdown: release the item so another worker takes it at once.
            with contextlib.suppress(Exception):
                await asyncio.shield(self.provider.abandon_activity(item.lock_token, 0.0))
            raise
        except LockLost as e:
            failure = e  # cancelled (row deleted) or lock expired: the result is not wanted
        except Exception as e:
            failure = e
            log_failure("activity %r of %r could not be completed", work.name,
                        work.instance_id)
        finally:
            self._running.pop(key, None)
            if renewal is not None:
                renewal.cancel()
            for task in renewer:
                task.cancel()
            if hooked:
                self.hooks.activity_end(attempt, committed, failure)

    async def _leave_session(self, work: ActivityWork) -> None:
        if work.session_id is not None:
            try:
                await self.sessions.give_up(work.session_id)
            except Exception as e:  # its lease ends on its own
                self.hooks.store_failed(e)

    async def _wait_for_worker(self, item: ActivityItem) -> None:
        """Tagged work this runtime accepts but has not registered, and no live worker
        that accepts its tag has either: it waits in the store, offered again every
        ``not_registered_backoff`` without using up an attempt, for such a worker to
        start. Work nobody accepts is never failed for it (its orchestration bounds the
        wait with a timer or a retry timeout)."""
        work = item.work
        key = f"{work.instance_id}\x00{work.execution_id}\x00{work.event_id}"
        if key not in self._waiting:
            if len(self._waiting) > 4096:
                self._waiting.clear()
            self._waiting.add(key)
            logger.warning(
                "instance %r (orchestration %r) scheduled activity %r tagged %r, which no "
                "running worker whose tag filter accepts %r has registered: it waits until "
                "one starts (register it on a worker with RuntimeOptions.worker_tag_filter "
                "accepting the tag, or bound the wait with a timer in the orchestration)",
                work.instance_id, work.orchestration_name, work.name, work.tag, work.tag,
                extra={"instance_id": work.instance_id})
        await self._leave_session(work)
        await self.provider.abandon_activity(
            item.lock_token, max(self.options.not_registered_backoff, 0.05),
            ignore_attempt=True)

    async def _not_registered(self, item: ActivityItem, attempt: ActivityAttempt) -> bool:
        """Work for an activity no live worker has (the caller handed it back to one
        that has it, if any): offered again after ``not_registered_backoff``, failed
        ``not_registered`` once its attempts are used up. The first time, a WARNING says
        so at once, with the registered names closest to it. Returns once that is
        committed."""
        work = item.work
        why = self._heartbeat.missing("activity", work.name)
        opts = self.options
        failed = ActivityFailedEvent(
            source_event_id=work.event_id, error_type="NotRegistered",
            message=f"{why}. It was offered {item.attempt} times, "
            f"{opts.not_registered_backoff:g} s apart (RuntimeOptions.max_attempts, "
            "not_registered_backoff), and never ran: register it under this name and "
            "restart the workers, or correct the name in the orchestration",
            error_kind="not_registered")
        _outcome(attempt, failed, None)
        self.hooks.activity_committing(attempt)
        if item.attempt >= opts.max_attempts:
            await self._complete(item, failed)
            return True
        if item.attempt == 1:
            logger.warning(
                "instance %r (orchestration %r) scheduled an activity that no running worker "
                "can run: %s. It is offered again every %g s and "
                "fails with kind not_registered after %d attempts: register it under this "
                "name and restart the workers, or correct the name in the orchestration",
                work.instance_id, work.orchestration_name, why,
                opts.not_registered_backoff, opts.max_attempts,
                extra={"instance_id": work.instance_id})
        await self.provider.abandon_activity(item.lock_token, opts.not_registered_backoff)
        return True

    async def _invoke(self, entry: ActivityEntry, work: ActivityWork, ctx: ActivityContext
                      ) -> tuple[HistoryEvent, BaseException | None]:
        """The attempt's result event, and the exception it raised (if it did)."""
        try:
            value = codec.decode(work.input, entry.input_type)
            result = await call_activity(entry, ctx, value, self._pool)
            return ActivityCompleted(source_event_id=work.event_id,
                                     result=codec.encode(result)), None
        except _ExitInThread as e:
            return ActivityFailedEvent(source_event_id=work.event_id, error_type="SystemExit",
                                       message=message_of(e.exit)), e.exit
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit):
            # On this thread SystemExit may be a signal handler's sys.exit(): it stops
            # the worker, as it would without duroxy; the activity runs again elsewhere.
            raise
        except BaseException as e:
            # Any other exception fails the activity, not the worker: a user's own
            # BaseException subclass too (asyncio would re-raise it out of the loop).
            # A NonRetryableError stops the retries: said in history, so that replay
            # (and any worker) reaches the same decision.
            return ActivityFailedEvent(source_event_id=work.event_id,
                                       error_type=type(e).__qualname__,
                                       message=message_of(e),
                                       retryable=not isinstance(e, NonRetryableError)), e

    async def _complete(self, item: ActivityItem, event: HistoryEvent) -> None:
        work = item.work
        await self.provider.ack_activity(item.lock_token, OrchestratorMessage(
            work.instance_id, event, work.execution_id))

    async def _lease_lapsed(self, item: ActivityItem) -> bool:
        """Whether an activity about to start lost its lease while it waited: it waited
        longer than a renewal interval since it was leased, and renewing the lease now
        finds it lost. Then another worker may be running it already: starting it here
        would only add a side effect whose result nobody can accept."""
        asked = self._asked_at.pop(item.lock_token, None)
        if asked is None or time.monotonic() - asked <= self._renew_interval():
            return False
        try:
            await self.provider.renew_activity_lock(item.lock_token,
                                                    self.options.activity_lock_timeout)
        except LockLost:
            logger.warning("activity %r of %r not started: its lease lapsed while it waited "
                           "to start", item.work.name, item.work.instance_id)
            return True
        except Exception as e:  # the store could not tell: run it, its ack will
            self.hooks.store_failed(e)
            logger.debug("renewing a waiting activity's lease failed", exc_info=True)
        return False

    def _renew_interval(self) -> float:
        opts = self.options
        return min(opts.cancel_check_interval, opts.activity_lock_timeout / 3)

    async def _renew(self, item: ActivityItem, ctx: ActivityContext) -> None:
        """Keep the lock while the activity runs; learn of cancellation from LockLost."""
        opts = self.options
        interval = self._renew_interval()
        while True:
            try:
                await self.provider.renew_activity_lock(item.lock_token,
                                                        opts.activity_lock_timeout)
            except LockLost:
                ctx._cancel()
                return
            except Exception as e:
                self.hooks.store_failed(e)
                logger.debug("renewing an activity lock failed", exc_info=True)
            else:
                self.sessions.touch(item.work.session_id)
            await asyncio.sleep(interval)


class _ExitInThread(Exception):
    """A plain ``def`` activity called ``sys.exit()``: signals never reach a worker
    thread, so that exit is the activity's own doing and fails only the activity."""

    def __init__(self, exit: SystemExit) -> None:
        super().__init__(exit)
        self.exit = exit


def _in_thread(context: contextvars.Context, fn: Any, ctx: ActivityContext, value: Any
               ) -> Any:
    try:
        return context.run(fn, ctx, value)
    except SystemExit as e:
        raise _ExitInThread(e) from None


def _outcome(attempt: ActivityAttempt, event: HistoryEvent, raised: BaseException | None
             ) -> None:
    """An attempt's outcome, from the result event it commits."""
    if isinstance(event, ActivityFailedEvent):
        attempt.outcome = {"poison": "poison", "not_registered": "config_error"}.get(
            event.error_kind, "app_error")
        attempt.error = ErrorDetails(event.error_kind, event.error_type, event.message)
        attempt.exception = raised
    else:
        attempt.outcome = "success"


async def call_activity(entry: ActivityEntry, ctx: ActivityContext, value: Any,
                        pool: concurrent.futures.Executor | None) -> Any:
    """Run an activity function with its context and decoded input: an ``async def`` on
    this loop, a plain ``def`` in ``pool`` (the loop's default executor when ``None``) in
    a copy of the caller's context variables. Raises what the activity raised, except
    that ``sys.exit()`` in a thread arrives as :class:`_ExitInThread`."""
    if entry.is_async:
        return await entry.fn(ctx, value)
    loop = asyncio.get_running_loop()
    call = functools.partial(_in_thread, contextvars.copy_context(), entry.fn, ctx, value)
    return await loop.run_in_executor(pool, call)

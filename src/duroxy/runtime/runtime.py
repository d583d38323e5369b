"""The runtime: an orchestration dispatcher and an activity dispatcher over one store.

Dispatchers sleep until the provider tells them work was enqueued (in this process at
once; from other processes through the provider's own mechanism or, as a safety net,
a short poll). With a long-polling store (``Provider.long_poll``) the orchestration
dispatcher sleeps inside the store's fetch instead, which also wakes it for timers.
Live orchestrations are kept between turns in an LRU cache keyed by instance, valid only
while the store's history length matches; anything unexpected falls back to a replay
from history, which gives the same decisions. The runtime's heartbeat (``heartbeat.py``)
tells it which work other live workers run that it cannot: its fetches leave that work
alone, and what it meets anyway goes back without using up an attempt.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .. import codec
from .._engine import OrchestrationExecution, TurnResult
from .._limits import MAX_CARRY_FORWARD_EVENTS
from ..errors import (
    ErrorDetails,
    LockLost,
    NotRegistered,
    PayloadError,
    ProviderError,
    StoreReadOnly,
    message_of,
)
from ..history import (
    ActivityCompleted,
    ActivityFailedEvent,
    EventRaised,
    HistoryEvent,
    OrchestrationStarted,
    OrchestratorMessage,
    TimerFired,
)
from ..options import RuntimeOptions
from ..providers._alarms import DueAlarms
from ..providers.base import (
    DUE_RETRY_PAUSE_S,
    DUE_RETRY_S,
    TERMINAL_STATES,
    ActivityItem,
    OrchestrationCommit,
    OrchestrationItem,
    Provider,
    QueuedMessage,
)
from .activity import ActivityContext
from .heartbeat import Heartbeat, claim_worker_id, release_worker_id
from .registry import ActivityRegistry, OrchestrationRegistry
from .turns import build_commit, failure_commit, refusals

__all__ = ["Runtime"]

logger = logging.getLogger("duroxy.runtime")
# What concerns one orchestration's own behaviour is logged where its traces go.
_orchestration_log = logging.getLogger("duroxy.orchestration")

#: The id Runtime.start reads to see that the store works (whether it exists or not).
_PROBE_ID = "duroxy-runtime-start-probe"

# How long an instance whose lock-free commit was refused takes the locked path.
_CONTENDED_S = 1.0

# How much slower the idle safety-net poll may get on a store that announces work to
# every process (see ``Provider.announces_work``).
_ANNOUNCED_POLL_FACTOR = 4.0


@dataclass(slots=True)
class _Cached:
    execution: OrchestrationExecution
    execution_id: int


class _Wake:
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


class Runtime:
    """Runs orchestrations and activities from a store until shut down.

    ``rt = await Runtime.start(provider, activities, orchestrations, options)``; also an
    async context manager that shuts down on exit.
    """

    def __init__(self, provider: Provider, activities: ActivityRegistry,
                 orchestrations: OrchestrationRegistry, options: RuntimeOptions) -> None:
        if not isinstance(activities, ActivityRegistry):
            raise TypeError("activities must be an ActivityRegistry (use ActivityRegistry."
                            "builder()...build())")
        if not isinstance(orchestrations, OrchestrationRegistry):
            raise TypeError("orchestrations must be an OrchestrationRegistry (use "
                            "OrchestrationRegistry.builder()...build())")
        self.provider = provider
        self.activities = activities
        self.orchestrations = orchestrations
        self.options = options
        self.worker_id = claim_worker_id(options.worker_id)
        self._cache: collections.OrderedDict[str, _Cached] = collections.OrderedDict()
        self._running_activities: dict[tuple[str, int, int], ActivityContext] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=options.activity_concurrency, thread_name_prefix="duroxy-activity")
        self._loops: list[asyncio.Task[Any]] = []
        # Instances whose live execution a turn in this runtime is using right now.
        self._in_turn: set[str] = set()
        # Instances whose lock-free commit was refused lately: locked path until then.
        self._contended: dict[str, float] = {}
        self._optimistic = type(provider).commit_turn is not Provider.commit_turn
        # Shared by the activity dispatcher and turns that claim the work they schedule.
        self._act_slots = asyncio.Semaphore(options.activity_concurrency)
        self._unlisten: list[Any] = []
        # A store that long-polls wakes the orchestration dispatcher itself, timers
        # included; shutdown cancels the poll in progress.
        self._long_poll = provider.long_poll
        self._poll_task: asyncio.Task[Any] | None = None
        loop = asyncio.get_running_loop()
        # Work of other processes reaches a store that announces it everywhere at once;
        # its poll only catches what no commit announces.
        slow = _ANNOUNCED_POLL_FACTOR if provider.announces_work else 1.0
        self._orch_wake = _Wake(loop, slow)
        self._act_wake = _Wake(loop, slow)
        self._timer_wakes = DueAlarms(self._orch_wake.timer_due)
        self._heartbeat = Heartbeat(provider, self.worker_id, options, activities,
                                    orchestrations, lambda: len(self._running_activities))

    # ================================================================ lifecycle
    @classmethod
    async def start(cls, provider: Provider, activities: ActivityRegistry,
                    orchestrations: OrchestrationRegistry,
                    options: RuntimeOptions | None = None) -> Runtime:
        # A store this runtime cannot use (read-only, closed, not a duroxy store, of a
        # newer schema) fails the start rather than every fetch after it; one that is
        # unreachable for now (a retryable error) is left to the dispatchers, which retry.
        if provider.read_only:
            raise StoreReadOnly(f"a runtime needs a store it can write (it fetches, locks "
                                f"and commits work), and {provider!r} was opened "
                                "read-only: open it without read_only")
        try:
            await provider.get_instance(_PROBE_ID)
        except ProviderError as e:
            if not e.retryable:
                raise
            logger.warning("the store is not reachable yet (%s); retrying in the background", e)
        rt = cls(provider, activities, orchestrations, options or RuntimeOptions())
        try:
            # The first heartbeat, and what the others run, before any fetch.
            await rt._heartbeat.start()
        except BaseException:
            release_worker_id(rt.worker_id)
            raise
        if not rt._long_poll:
            rt._unlisten.append(provider.listen("orchestrator", rt._orch_wake.set))
        rt._unlisten.append(provider.listen("activity", rt._act_wake.set))
        rt._loops = [
            asyncio.create_task(rt._dispatch(
                "orchestration", rt._fetch_turns, rt._run_turn, rt._orch_wake,
                asyncio.Semaphore(rt.options.orchestration_concurrency), rt._long_poll),
                name="duroxy-orchestrations"),
            asyncio.create_task(rt._dispatch(
                "activity", rt._fetch_activities, rt._run_activity, rt._act_wake,
                rt._act_slots, False),
                name="duroxy-activities"),
        ]
        return rt

    def _fetch_turns(self, limit: int, wait: float) -> Awaitable[list[OrchestrationItem]]:
        """A fetch of orchestration work that leaves alone what other live workers run
        and this one cannot (without anything to leave, the store's plain fetch)."""
        lock_timeout = self.options.orchestration_lock_timeout
        exclude = self._heartbeat.exclude
        if exclude is None or not exclude.any_orchestration:
            return self.provider.poll_orchestration_items(lock_timeout, limit, wait)
        return self.provider.poll_orchestration_items(lock_timeout, limit, wait,
                                                      exclude=exclude)

    def _fetch_activities(self, limit: int, _wait: float) -> Awaitable[list[ActivityItem]]:
        lock_timeout = self.options.activity_lock_timeout
        exclude = self._heartbeat.exclude
        if exclude is None or not exclude.activities:
            return self.provider.fetch_activity_items(lock_timeout, limit)
        return self.provider.fetch_activity_items(lock_timeout, limit, exclude=exclude)

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def shutdown(self, timeout: float | None = 10.0) -> None:
        """Stop fetching, let in-flight work finish for up to ``timeout`` seconds, then
        release what is still held so another worker can take it at once."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        # Marked stopped first: this runtime takes no more work, and the other workers
        # stop leaving work to it at their next heartbeat.
        try:
            await asyncio.wait_for(self._heartbeat.stop(), 5.0)
        except Exception:
            logger.debug("marking the worker stopped took too long", exc_info=True)
        for unlisten in self._unlisten:
            unlisten()
        self._orch_wake.set()
        self._act_wake.set()
        if self._poll_task is not None:
            self._poll_task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        pending = set(self._tasks)
        if pending:
            _done, pending = await asyncio.wait(pending, timeout=timeout)
        for task in pending:
            task.cancel()  # activity runners abandon their item when cancelled
        if pending:
            await asyncio.wait(pending, timeout=5.0)
        self._timer_wakes.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._cache.clear()
        try:  # the last turns' commits may still be syncing
            await self.provider.flush()
        except Exception:
            logger.debug("flushing the store at shutdown failed", exc_info=True)
        release_worker_id(self.worker_id)
        self._stopped.set()

    # ================================================================ orchestrations
    async def _dispatch(self, what: str,
                        fetch: Callable[[int, float], Awaitable[list[Any]]],
                        run: Callable[[Any, asyncio.Semaphore], Awaitable[None]],
                        wake: _Wake, slots: asyncio.Semaphore, long_poll: bool) -> None:
        """Fetch as much work as there are free slots and run each item in its own task,
        until shutdown; sleep on ``wake`` when the store has nothing (``long_poll``: the
        fetch itself waits for work)."""
        opts = self.options
        while not self._stopping:
            free = slots._value
            if free == 0:
                await slots.acquire()
                slots.release()
                continue
            try:
                if long_poll:
                    self._poll_task = asyncio.ensure_future(fetch(free, wake.long_poll(opts)))
                    try:
                        items = await self._poll_task
                    except asyncio.CancelledError:
                        if self._stopping:
                            return
                        raise
                    finally:
                        self._poll_task = None
                else:
                    items = await fetch(free, 0.0)
            except Exception:
                logger.exception("fetching %s work failed; retrying", what)
                await wake.wait(1.0)
                continue
            if not items:
                if not long_poll:
                    await wake.idle(opts)
                continue
            wake.busy(opts)
            for item in items:
                await slots.acquire()
                self._spawn(run(item, slots))
            if len(items) < free and not long_poll:
                # The store had less than we could take: wait for news rather than ask
                # again at once (a wake-up that came meanwhile is kept by the flag).
                await wake.wait(opts.poll_interval)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run_turn(self, item: OrchestrationItem, slots: asyncio.Semaphore) -> None:
        try:
            await self._turn(item)
        except LockLost:
            self._cache.pop(item.instance_id, None)
            logger.warning("lost the lock on %r during a turn; another worker takes it over",
                           item.instance_id)
        except Exception:
            self._cache.pop(item.instance_id, None)
            logger.exception("turn for %r failed; releasing it", item.instance_id)
            with contextlib.suppress(Exception):
                await self.provider.abandon_orchestration_item(item.lock_token, 1.0)
        finally:
            slots.release()

    async def _turn(self, item: OrchestrationItem, acked_activity: str | None = None,
                    handoff: list[ActivityItem] | None = None) -> bool:
        """Run one turn for a locked item and commit it. With ``acked_activity`` (the lock
        token of an activity whose completion is among the item's messages) the commit
        also deletes that activity's row. ``handoff``: see :meth:`_after_commit`. Returns
        whether the turn was committed with the code run (False: consumed without
        running, failed, or put back)."""
        iid = item.instance_id
        inst = item.instance
        provider = self.provider
        messages = [m.message for m in item.messages if m.message is not None]
        now_us = await self._not_before_timers(messages)
        if inst is None or inst.state in TERMINAL_STATES:
            # Nothing to run: messages for unknown or finished instances are consumed.
            noop = _noop_commit(item)
            noop.messages.extend(refusals(iid, inst, messages, None))
            await provider.ack_orchestration_item(item.lock_token, noop)
            return False
        bad = next((m for m in item.messages if m.message is None), None)
        started = next((m.event for m in messages if isinstance(m.event, OrchestrationStarted)
                        and m.event.execution_id > (inst.execution_id if inst.history_len else 0)),
                       None)
        execution_id = started.execution_id if started is not None else inst.execution_id
        if bad is not None:
            await self._fail(item, None, execution_id, ErrorDetails(
                "poison", "PayloadError", f"a queued message does not decode: {bad.decode_error}"),
                now_us)
            return False
        if item.attempt > self.options.max_attempts:
            await self._fail(item, started, execution_id, ErrorDetails(
                "poison", "Poison", f"orchestration turn for {iid!r} failed to complete after "
                f"{item.attempt - 1} attempts"), now_us)
            return False
        # Resolve the code: the version recorded for this execution, else the latest.
        version = started.version if started is not None else inst.version
        try:
            entry = self.orchestrations.resolve(inst.name, version)
        except NotRegistered as e:
            if await self._heartbeat.hand_back_turn(item, version):
                return False
            if item.attempt >= self.options.max_attempts:
                await self._fail(item, started, execution_id,
                                 ErrorDetails("not_registered", "NotRegistered", str(e)), now_us)
            else:
                await provider.abandon_orchestration_item(item.lock_token,
                                                          self.options.not_registered_backoff)
            return False
        events: list[HistoryEvent] = []
        head: list[HistoryEvent] = []  # the start, then the events carried over to it
        for m in messages:
            ev = m.event
            if m.execution_id is not None and m.execution_id != execution_id:
                continue  # for an execution that has ended
            if isinstance(ev, OrchestrationStarted):
                if ev is not started:
                    continue
                head.insert(0, dataclasses.replace(ev, version=entry.version))
            elif (started is not None and m.execution_id == execution_id
                  and isinstance(ev, EventRaised)):
                # Carried over by a continue-as-new (see build_commit): these arrived
                # before anything raised to the instance since, though queued after it.
                head.append(ev)
            else:
                events.append(ev)
        events[:0] = head
        execution = self._execution_for(iid, execution_id, inst.history_len
                                        if started is None else 0)
        if execution is None:
            try:
                history = (await provider.read_history(iid, execution_id)
                           if started is None and inst.history_len else [])
            except PayloadError as e:
                await self._fail(item, None, execution_id, ErrorDetails(
                    "poison", "PayloadError", f"stored history does not decode: {e}"), now_us,
                    next_event_id=inst.history_len + 1)
                return False
            execution = OrchestrationExecution(
                entry.fn, instance_id=iid, history=history,
                activity_output_type=self.activities.output_type,
                function_name=self._function_name)
        self._in_turn.add(iid)
        try:
            result = execution.turn(events, now_us)
            if execution.started is None:
                await provider.ack_orchestration_item(item.lock_token, _noop_commit(item))
                return False
            commit = build_commit(iid, execution.started, result)
            commit.messages.extend(refusals(iid, inst, messages, started))
            if acked_activity is not None:
                commit.acked_activities.append(acked_activity)
            self._claim(commit, handoff is not None)
            try:
                claimed = await provider.ack_orchestration_item(item.lock_token, commit)
            except BaseException:
                self._cache.pop(iid, None)
                raise
        finally:
            self._in_turn.discard(iid)
        await self._after_commit(iid, execution, execution_id, commit, claimed, handoff)
        _report_dropped(iid, result)
        return True

    async def _not_before_timers(self, messages: list[OrchestratorMessage]) -> int:
        """The turn's time (epoch µs), once every timer among ``messages`` is due by
        this host's clock. A store that compares due times with a clock of its own may
        release a timer a moment early; the turn then waits (briefly: within its lock)
        so that no timer's turn runs before its fire time."""
        now_us = time.time_ns() // 1000
        due_us = max((m.event.fire_at * 1000 for m in messages
                      if isinstance(m.event, TimerFired)), default=0)
        if due_us > now_us:
            await asyncio.sleep(min((due_us - now_us) / 1e6,
                                    self.options.orchestration_lock_timeout / 2))
            now_us = max(time.time_ns() // 1000, due_us)
        return now_us

    def _claim(self, commit: OrchestrationCommit, handoff: bool = False) -> None:
        """Ask the store to hand back the activities this turn schedules, locked, so this
        worker runs them at once without a fetch: as many as it has free slots, and one
        more for a turn whose activity task runs the next one (``handoff``); never one it
        has not registered (nor any after it: the claim takes the first ones)."""
        free = self._act_slots._value + (1 if handoff else 0)
        known = 0
        for work in commit.activities[:free]:
            if work.name not in self.activities:
                break
            known += 1
        if known and free and not self._stopping:
            commit.claim_activities = min(known, free)
            commit.claim_lock_timeout = self.options.activity_lock_timeout

    async def _after_commit(self, iid: str, execution: OrchestrationExecution,
                            execution_id: int, commit: OrchestrationCommit,
                            claimed: list[ActivityItem] | None,
                            handoff: list[ActivityItem] | None = None) -> None:
        """Start the activities the commit claimed, each in a task of its own; with
        ``handoff`` (a turn run by an activity's task) the first goes there instead, to
        run next in that task, on its slot: a sequence of activities then runs in one
        task rather than in a new task per step."""
        acts = list(claimed or ())
        if handoff is not None and acts:
            handoff.append(acts.pop(0))
        for act in acts:
            await self._act_slots.acquire()
            self._spawn(self._run_activity(act, self._act_slots))
        self._wake_for_timers(commit)
        for key in commit.cancel_activities:
            ctx = self._running_activities.get(key)
            if ctx is not None:
                ctx._cancel()
        if execution.finished:
            self._cache.pop(iid, None)
        else:
            self._remember(iid, execution, execution_id)

    def _wake_for_timers(self, commit: OrchestrationCommit) -> None:
        """Wake the dispatcher when a timer this process just committed comes due, so a
        timer fires on time rather than on the next safety-net poll (a long-polling
        store does that itself)."""
        if self._long_poll:
            return
        now = time.time()
        for msg in commit.messages:
            if msg.visible_at is not None and msg.visible_at > now:
                self._timer_wakes.at(msg.visible_at)

    def _function_name(self, fn: Any) -> str:
        return (self.activities.name_of(fn) or self.orchestrations.name_of(fn)
                or str(getattr(fn, "__name__", repr(fn))))

    def _execution_for(self, iid: str, execution_id: int, history_len: int
                       ) -> OrchestrationExecution | None:
        cached = self._cache.get(iid)
        if cached is None:
            return None
        ex = cached.execution
        if cached.execution_id != execution_id or len(ex.history) != history_len or ex.finished:
            del self._cache[iid]
            return None
        self._cache.move_to_end(iid)
        return ex

    def _remember(self, iid: str, execution: OrchestrationExecution, execution_id: int) -> None:
        if self.options.cache_size == 0:
            return
        self._cache[iid] = _Cached(execution, execution_id)
        self._cache.move_to_end(iid)
        while len(self._cache) > self.options.cache_size:
            self._cache.popitem(last=False)

    async def _fail(self, item: OrchestrationItem, started: OrchestrationStarted | None,
                    execution_id: int, error: ErrorDetails, now_us: int,
                    next_event_id: int | None = None) -> None:
        inst = item.instance
        assert inst is not None
        self._cache.pop(item.instance_id, None)
        if next_event_id is None:
            next_event_id = 1 if started is not None else inst.history_len + 1
        commit = failure_commit(item.instance_id, started, inst.name,
                                started.version if started else inst.version, execution_id,
                                next_event_id, error, now_us // 1000)
        commit.custom_status = inst.custom_status
        logger.error("instance %r failed: %s", item.instance_id, error.message)
        await self.provider.ack_orchestration_item(item.lock_token, commit)

    # ================================================================ activities
    async def _run_activity(self, item: ActivityItem, slots: asyncio.Semaphore) -> None:
        """Run an activity, then those its completion's turn hands off (see
        :meth:`_after_commit`), on one slot."""
        handoff: list[ActivityItem] = [item]
        try:
            while handoff:
                await self._run_one_activity(handoff.pop(0), handoff)
        except asyncio.CancelledError:
            # Shutdown: what was handed off and not started goes back at once.
            for left in handoff:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.provider.abandon_activity(left.lock_token, 0.0))
            raise
        finally:
            slots.release()

    async def _run_one_activity(self, item: ActivityItem, handoff: list[ActivityItem]
                                ) -> None:
        work = item.work
        key = (work.instance_id, work.execution_id, work.event_id)
        ctx = ActivityContext(
            instance_id=work.instance_id, execution_id=work.execution_id,
            orchestration_name=work.orchestration_name,
            orchestration_version=work.orchestration_version, activity_name=work.name,
            attempt=work.attempt, worker_id=self.worker_id, provider=self.provider,
            loop=asyncio.get_running_loop())
        renewer: list[asyncio.Task[None]] = []
        renewal: asyncio.TimerHandle | None = None
        try:
            entry = self.activities.get(work.name)
            if entry is None:
                if await self._heartbeat.hand_back_activity(item):
                    return
                if item.attempt >= self.options.max_attempts:
                    await self._complete_activity(item, ActivityFailedEvent(
                        source_event_id=work.event_id, error_type="NotRegistered",
                        message=f"activity {work.name!r} is not registered on any worker that "
                        f"took it ({item.attempt} attempts)", error_kind="not_registered"))
                else:
                    await self.provider.abandon_activity(item.lock_token,
                                                         self.options.not_registered_backoff)
                return
            if item.attempt > self.options.max_attempts:
                await self._complete_activity(item, ActivityFailedEvent(
                    source_event_id=work.event_id, error_type="Poison",
                    message=f"activity {work.name!r} did not complete after "
                    f"{item.attempt - 1} attempts (its worker crashed or lost its lock "
                    "each time)", error_kind="poison"))
                return
            self._running_activities[key] = ctx
            renewal = asyncio.get_running_loop().call_later(
                self._renew_interval(),
                lambda: renewer.append(asyncio.ensure_future(self._renew_activity(item, ctx))))
            event = await self._invoke(entry, work, ctx)
            renewal.cancel()
            for task in renewer:
                task.cancel()
            if not await self._feed_completion(item, event, handoff):
                await self._complete_activity(item, event)
        except asyncio.CancelledError:
            # Shutdown: release the item so another worker takes it at once.
            with contextlib.suppress(Exception):
                await asyncio.shield(self.provider.abandon_activity(item.lock_token, 0.0))
            raise
        except LockLost:
            pass  # cancelled (row deleted) or lock expired: the result is not wanted
        except Exception:
            logger.exception("activity %r of %r could not be completed", work.name,
                             work.instance_id)
        finally:
            self._running_activities.pop(key, None)
            if renewal is not None:
                renewal.cancel()
            for task in renewer:
                task.cancel()

    async def _invoke(self, entry: Any, work: Any, ctx: ActivityContext) -> HistoryEvent:
        try:
            value = codec.decode(work.input, entry.input_type)
            if entry.is_async:
                result = await entry.fn(ctx, value)
            else:
                loop = asyncio.get_running_loop()
                call = functools.partial(_in_thread, contextvars.copy_context(), entry.fn,
                                         ctx, value)
                result = await loop.run_in_executor(self._pool, call)
            return ActivityCompleted(source_event_id=work.event_id, result=codec.encode(result))
        except _ExitInThread as e:
            return ActivityFailedEvent(source_event_id=work.event_id, error_type="SystemExit",
                                       message=message_of(e.exit))
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit):
            # On this thread SystemExit may be a signal handler's sys.exit(): it stops
            # the worker, as it would without duroxy; the activity runs again elsewhere.
            raise
        except BaseException as e:
            # Any other exception fails the activity, not the worker: a user's own
            # BaseException subclass too (asyncio would re-raise it out of the loop).
            return ActivityFailedEvent(source_event_id=work.event_id,
                                       error_type=type(e).__qualname__, message=message_of(e))

    async def _feed_completion(self, item: ActivityItem, event: HistoryEvent,
                               handoff: list[ActivityItem]) -> bool:
        """Feed an activity's result straight into its instance's next turn when the
        instance is live in this runtime and not locked elsewhere: one commit instead of
        an activity ack, a fetch and a turn ack. False: use the ordinary path."""
        work = item.work
        cached = self._cache.get(work.instance_id)
        if (cached is None or cached.execution_id != work.execution_id or self._stopping
                or work.instance_id in self._in_turn):
            return False
        # Without a lock only when this is the one activity the instance waits for (a
        # fan-in gathers many completions per turn on the locked path instead) and the
        # instance has not lately been busy with other work.
        if (self._optimistic and cached.execution.open_activities == 1
                and self._contended.get(work.instance_id, 0.0) < time.monotonic()):
            return await self._commit_completion(item, cached, event, handoff)
        orch = await self.provider.lock_instance(work.instance_id,
                                                 self.options.orchestration_lock_timeout)
        if orch is None:
            return False
        completion = QueuedMessage(-1, OrchestratorMessage(work.instance_id, event,
                                                           work.execution_id))
        orch = dataclasses.replace(orch, messages=[*orch.messages, completion])
        try:
            return await self._turn(orch, acked_activity=item.lock_token, handoff=handoff)
        except LockLost:
            self._cache.pop(work.instance_id, None)
        except Exception:  # a bug or store error: put the instance back, ack the usual way
            self._cache.pop(work.instance_id, None)
            logger.exception("turn for %r failed; releasing it", work.instance_id)
        with contextlib.suppress(Exception):
            await self.provider.abandon_orchestration_item(orch.lock_token)
        return False

    async def _commit_completion(self, item: ActivityItem, cached: _Cached,
                                 event: HistoryEvent, handoff: list[ActivityItem]) -> bool:
        """The completion's turn on the live execution, committed with no lock taken
        first; if anything happened to the instance meanwhile the store refuses, the live
        execution (now ahead of the store) is dropped, and the ordinary path takes over."""
        iid = item.work.instance_id
        execution = cached.execution
        expected = len(execution.history)
        self._in_turn.add(iid)
        try:
            result = execution.turn([event], time.time_ns() // 1000)
            assert execution.started is not None
            commit = build_commit(iid, execution.started, result)
            commit.acked_activities.append(item.lock_token)
            self._claim(commit, handoff=True)
            claimed = await self.provider.commit_turn(iid, expected, commit)
        except LockLost:
            self._cache.pop(iid, None)
            self._contended[iid] = time.monotonic() + _CONTENDED_S
            if len(self._contended) > 4096:
                now = time.monotonic()
                self._contended = {k: v for k, v in self._contended.items() if v > now}
            return False
        except Exception:  # a bug or store error: ack the usual way
            self._cache.pop(iid, None)
            logger.exception("turn for %r failed; acknowledging the activity instead", iid)
            return False
        finally:
            self._in_turn.discard(iid)
        await self._after_commit(iid, execution, cached.execution_id, commit, claimed,
                                 handoff)
        _report_dropped(iid, result)
        return True

    async def _complete_activity(self, item: Any, event: HistoryEvent) -> None:
        work = item.work
        await self.provider.ack_activity(item.lock_token, OrchestratorMessage(
            work.instance_id, event, work.execution_id))

    def _renew_interval(self) -> float:
        opts = self.options
        return min(opts.cancel_check_interval, opts.activity_lock_timeout / 3)

    async def _renew_activity(self, item: Any, ctx: ActivityContext) -> None:
        """Keep the lock while the activity runs; learn of cancellation from LockLost.
        Started one interval into the activity (most activities are done by then)."""
        opts = self.options
        interval = self._renew_interval()
        while True:
            try:
                await self.provider.renew_activity_lock(item.lock_token,
                                                        opts.activity_lock_timeout)
            except LockLost:
                ctx._cancel()
                return
            except Exception:
                logger.debug("renewing an activity lock failed", exc_info=True)
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


def _report_dropped(instance_id: str, result: TurnResult) -> None:
    """One warning per message a continue-as-new could not carry (past the cap)."""
    for event in result.dropped:
        _orchestration_log.warning(
            "instance %r continued as new with more than %d unread messages: dropped "
            "event %r (raised but never waited for; only the oldest %d are carried)",
            instance_id, MAX_CARRY_FORWARD_EVENTS, getattr(event, "name", event.kind),
            MAX_CARRY_FORWARD_EVENTS)


def _noop_commit(item: OrchestrationItem) -> OrchestrationCommit:
    """Consume the delivered messages and change nothing else."""
    inst = item.instance
    if inst is None:
        return OrchestrationCommit(execution_id=0, state="PENDING", name="", version=None)
    return OrchestrationCommit(
        execution_id=inst.execution_id, state=inst.state, name=inst.name, version=inst.version,
        output=inst.output, error=inst.error, custom_status=inst.custom_status)

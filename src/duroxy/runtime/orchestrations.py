"""The orchestration dispatcher: turns, the cache of live executions, and the ways a
turn is committed.

Architecture:

* **Fetch.** A :class:`~.dispatch.FetchLoop` takes as many instances with visible
  messages as there are free turn slots, leaving alone what other live workers run and
  this one cannot (the heartbeat's :class:`~..providers.base.ExcludedWork`). With a
  long-polling store (:class:`~..providers.base.FastPath`) the fetch itself waits for
  work; otherwise a :class:`~.wake.Wake` does, set by the store's listeners and by an
  alarm for each timer committed here.
* **Turn.** An item's messages become the turn's new events; the engine's execution for
  the instance comes from the cache when its history length still matches the store's,
  else it is rebuilt by replaying the stored history (both give the same decisions).
  The engine decides; :mod:`.turns` turns its decisions into one commit.
* **Commit.** Every turn is one store commit: the ordinary ack of a fetched item; or,
  for an activity's result arriving in this runtime while its instance is live here,
  the result fed straight into the next turn (a :class:`FastPath` store's
  ``lock_instance``, or ``commit_turn`` with no lock at all when this is the one
  activity the instance waits for). A turn may *claim* the activities it schedules: the
  commit hands them back locked and they run here at once (see :mod:`.activities`).
* **Timers fired in place.** With a store that leaves a worker's own timers to it
  (``FastPath.worker_fires_timers``), the timers a turn committed here are fired here:
  at the due time, by this host's clock, the live execution's turn consumes the timer's
  message in one ``commit_turn``, with no fetch before it; when that is refused (or the
  execution is no longer live), by ``lock_instance`` and an ordinary turn.
* **After the commit**, and only then, the claimed activities start, activities the
  turn abandoned are told to stop, and the execution is kept for the next turn.

One dispatcher holds the slots, the cache and the locks that every path of a turn
(fetched, fed a result, failed, not registered here) reads and changes, which is why it
runs past 500 lines; turning decisions into a commit lives in :mod:`.turns`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .._alarms import DueAlarms
from .._engine import OrchestrationExecution, TurnResult
from .._hooks import Turn, installed_runtime_hooks
from .._limits import MAX_CARRY_FORWARD_EVENTS
from ..errors import ErrorDetails, LockLost, NotRegistered, PayloadError
from ..history import (
    HistoryEvent,
    KeyValueReadCompleted,
    KeyValueReadScheduled,
    OrchestrationStarted,
    OrchestratorMessage,
    QueueEventDelivered,
    TimerFired,
)
from ..options import RuntimeOptions
from ..providers.base import (
    TERMINAL_STATES,
    ActivityItem,
    FastPath,
    OrchestrationCommit,
    OrchestrationItem,
    Provider,
    QueuedMessage,
)
from .activities import ActivityDispatcher
from .dispatch import Slots, TaskSet, log_failure, renew_while
from .heartbeat import Heartbeat
from .hooks import HookSet
from .registry import ActivityRegistry, OrchestrationRegistry
from .timers import OwnTimers
from .turns import (
    build_commit,
    failure_commit,
    noop_commit,
    refusals,
    turn_events,
    turn_outcome,
)
from .wake import Wake

__all__ = ["OrchestrationDispatcher"]

logger = logging.getLogger("duroxy.runtime")
# What concerns one orchestration's own behaviour is logged where its traces go.
_orchestration_log = logging.getLogger("duroxy.orchestration")

# How long an instance whose lock-free commit was refused takes the locked path.
_CONTENDED_S = 1.0


@dataclass(slots=True)
class _Cached:
    execution: OrchestrationExecution
    execution_id: int


class OrchestrationDispatcher:
    def __init__(self, provider: Provider, orchestrations: OrchestrationRegistry,
                 activities: ActivityRegistry, options: RuntimeOptions,
                 heartbeat: Heartbeat, workers: ActivityDispatcher, wake: Wake,
                 hooks: HookSet, worker_id: str, tasks: TaskSet) -> None:
        self.provider = provider
        self.hooks = hooks
        self.worker_id = worker_id
        #: the store's shortcuts, when it offers them
        self.fast = provider if isinstance(provider, FastPath) else None
        #: the store's fetch waits for work (and for timers) itself
        self.long_poll = self.fast is not None and self.fast.long_poll
        self.orchestrations = orchestrations
        self.activities = activities
        self.options = options
        self.slots = Slots(options.orchestration_concurrency)
        self._heartbeat = heartbeat
        self._workers = workers
        self._cache: collections.OrderedDict[str, _Cached] = collections.OrderedDict()
        # Instances whose live execution a turn in this runtime is using right now.
        self._in_turn: set[str] = set()
        # Instances whose lock-free commit was refused lately: locked path until then.
        self._contended: dict[str, float] = {}
        self._timer_wakes = DueAlarms(wake.timer_due)
        #: the store's clock: a turn's time (the orchestration's clock) is read from it
        self._clock = provider.clock
        #: this runtime fires the timers its turns commit (a clock that jumps wakes the
        #: fetch instead, see _wake_for_timers)
        self.fires_timers = (self.fast is not None and self.fast.worker_fires_timers
                             and not self._clock.jumps)
        self._timers = OwnTimers(self._timer_wakes, tasks, self._in_turn, self._fire_timers)
        self.stopping = False

    def close(self) -> None:
        self.stopping = True
        self._timer_wakes.close()
        self._cache.clear()
        self._timers.close()

    async def fetch(self, limit: int, wait: float) -> list[OrchestrationItem]:
        try:
            items = await self._fetch(limit, wait)
        except Exception as e:
            self.hooks.store_failed(e)
            raise
        self.hooks.fetched("orchestration", len(items))
        return items

    def _fetch(self, limit: int, wait: float) -> Awaitable[list[OrchestrationItem]]:
        """A fetch of orchestration work that leaves alone what other live workers run
        and this one cannot (without anything to leave, the store's plain fetch)."""
        lock_timeout = self.options.orchestration_lock_timeout
        exclude = self._heartbeat.exclude
        if exclude is not None and not exclude.any_orchestration:
            exclude = None
        if self.fast is not None:
            if exclude is None:
                return self.fast.poll_orchestration_items(lock_timeout, limit, wait)
            return self.fast.poll_orchestration_items(lock_timeout, limit, wait,
                                                      exclude=exclude)
        if exclude is None:
            return self.provider.fetch_orchestration_items(lock_timeout, limit)
        return self.provider.fetch_orchestration_items(lock_timeout, limit, exclude)

    # ================================================================ a fetched turn
    async def run(self, item: OrchestrationItem) -> None:
        """Run the turn of a fetched item on its slot (which this releases)."""
        try:
            await self._run_locked(item)
        finally:
            self.slots.release()

    async def _run_locked(self, item: OrchestrationItem) -> None:
        """Run the turn of an item this runtime locked (fetched, or for a timer)."""
        try:
            await self._turn(item)
        except LockLost as e:
            self._cache.pop(item.instance_id, None)
            logger.warning("lost the lock on %r during a turn (%s); another worker takes it "
                           "over", item.instance_id, e)
        except Exception as e:
            self.hooks.store_failed(e)
            self._cache.pop(item.instance_id, None)
            log_failure("turn for %r failed; releasing it", item.instance_id)
            try:
                await self.provider.abandon_orchestration_item(item.lock_token, 1.0)
            except Exception as again:
                self.hooks.store_failed(again)

    def _keep_lock(self, lock_token: str) -> Callable[[], None]:
        """Renew a turn's instance lock while the turn waits (for its history, a timer
        a moment early, its commit), from half the lock timeout on; returns the stop.
        A turn whose code blocks the event loop cannot be helped from the loop: its
        lock lapses after ``orchestration_lock_timeout``, the store refuses its commit
        and the turn is replayed (the slow-turn warning names it). Renewing from another
        thread would need the store's connections there, which belong to this loop."""
        timeout = self.options.orchestration_lock_timeout
        return renew_while(
            lambda: self.provider.renew_orchestration_lock(lock_token, timeout),
            timeout / 2, self.hooks.store_failed)

    async def _turn(self, item: OrchestrationItem, acked_activity: str | None = None,
                    handoff: list[ActivityItem] | None = None) -> bool:
        """Run one turn for a locked item and commit it. With ``acked_activity`` (the lock
        token of an activity whose completion is among the item's messages) the commit
        also deletes that activity's row. ``handoff``: see :meth:`_after_commit`. Returns
        whether the turn was committed with the code run (False: consumed without
        running, failed, or put back)."""
        stop_renewing = self._keep_lock(item.lock_token)
        try:
            return await self._locked_turn(item, acked_activity, handoff)
        finally:
            stop_renewing()

    async def _locked_turn(self, item: OrchestrationItem, acked_activity: str | None,
                           handoff: list[ActivityItem] | None) -> bool:
        iid = item.instance_id
        inst = item.instance
        provider = self.provider
        messages = [m.message for m in item.messages if m.message is not None]
        self._timers.delivered(iid, messages)  # the fetch's, not an alarm's, to fire
        now_us = await self._not_before_timers(messages)
        if inst is None or inst.state in TERMINAL_STATES:
            # Nothing to run: messages for unknown or finished instances are consumed.
            noop = noop_commit(item)
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
        except NotRegistered:
            if await self._heartbeat.hand_back_turn(item, version):
                return False
            await self._not_registered(item, started, execution_id, version, now_us)
            return False
        events = turn_events(messages, started, execution_id, entry.version)
        if any(isinstance(e, KeyValueReadScheduled) for e in events):
            events = await self._answer_kv_reads(events)
        execution = self._execution_for(iid, execution_id, inst.history_len
                                        if started is None else 0)
        replayed = 0
        if execution is None:
            try:
                history = (await provider.read_history(iid, execution_id)
                           if started is None and inst.history_len else [])
                # The KV the execution started with: the record has some only when an
                # execution that used KV continued as new (a first execution has none).
                kv = await provider.read_kv_base(iid) if inst.kv_base else None
            except PayloadError as e:
                await self._fail(item, None, execution_id, ErrorDetails(
                    "poison", "PayloadError", f"stored history of instance {iid!r} "
                    f"(execution {execution_id}) does not decode: {e}"), now_us,
                    next_event_id=inst.history_len + 1)
                return False
            execution = OrchestrationExecution(
                entry.fn, instance_id=iid, history=history,
                activity_output_type=self.activities.output_type,
                function_name=self._function_name, kv=kv)
            replayed = len(history)
        origin = started or execution.started or (
            execution.history[0] if execution.history else None)
        turn = self._turn_info(iid, execution_id, inst.name, entry.version, origin)
        turn.replayed = replayed > 0
        turn.replayed_events = replayed
        turn.first = started is not None
        committed, failure = False, None
        self._in_turn.add(iid)
        self.hooks.turn_start(turn)
        execution.on_schedule = functools.partial(self.hooks.schedule, turn)
        try:
            began = time.perf_counter()
            result = execution.turn(events, now_us)
            turn.duration = time.perf_counter() - began
            execution.on_schedule = None
            if execution.started is None:
                await provider.ack_orchestration_item(item.lock_token, noop_commit(item))
                committed = True
                return False
            commit = build_commit(iid, execution.started, result)
            commit.worker_fires_timers = self.fires_timers
            commit.messages.extend(refusals(iid, inst, messages, started))
            if acked_activity is not None:
                commit.acked_activities.append(acked_activity)
            self._claim(commit, handoff is not None)
            turn_outcome(turn, commit, result)
            self.hooks.turn_committing(turn)
            asked = time.monotonic()
            try:
                claimed = await provider.ack_orchestration_item(item.lock_token, commit)
                committed = True
                self._workers.leased(claimed, asked)
            except BaseException:
                self._cache.pop(iid, None)
                raise
        except BaseException as e:
            failure = e
            raise
        finally:
            execution.on_schedule = None
            self._turn_over(iid)
            self.hooks.turn_end(turn, committed, failure)
        await self._after_commit(iid, execution, execution_id, commit, claimed, handoff)
        _report_dropped(iid, result)
        return True

    def _turn_info(self, iid: str, execution_id: int, name: str, version: str | None,
                   origin: HistoryEvent | None) -> Turn:
        """A turn as the hooks see it; ``origin`` is the execution's start, whose trace
        context the turn continues."""
        turn = Turn(iid, execution_id, name, version, self.worker_id)
        if isinstance(origin, OrchestrationStarted):
            turn.trace_context = origin.trace_context
            turn.execution_started_ms = origin.ts
        return turn

    async def _answer_kv_reads(self, events: list[HistoryEvent]) -> list[HistoryEvent]:
        """The cross-instance KV reads a committed turn asked for (its messages to this
        instance), each answered by reading the other instance's committed KV now: the
        answer is recorded in this turn's history, so it is read once."""
        out: list[HistoryEvent] = []
        for event in events:
            if isinstance(event, KeyValueReadScheduled):
                found = await self.provider.read_kv(event.instance_id, event.key)
                entry = (found or {}).get(event.key)
                event = KeyValueReadCompleted(
                    source_event_id=event.event_id, found=entry is not None,
                    value=None if entry is None else entry.value)
            out.append(event)
        return out

    async def _not_before_timers(self, messages: list[OrchestratorMessage]) -> int:
        """The turn's time (epoch µs), once every timer among ``messages`` is due by
        this host's clock. A store that compares due times with a clock of its own may
        release a timer a moment early; the turn then waits (briefly: within its lock)
        so that no timer's turn runs before its fire time."""
        now_us = self._clock.time_us()
        due_us = max((m.event.fire_at * 1000 for m in messages
                      if isinstance(m.event, TimerFired)), default=0)
        if due_us > now_us:
            if not self._clock.jumps:  # (a clock that jumps stands still meanwhile)
                await asyncio.sleep(min((due_us - now_us) / 1e6,
                                        self.options.orchestration_lock_timeout / 2))
            now_us = max(self._clock.time_us(), due_us)
        return now_us

    def _claim(self, commit: OrchestrationCommit, handoff: bool = False) -> None:
        """Ask the store to hand back the activities this turn schedules, locked, so this
        worker runs them at once without a fetch: as many as it has free slots, and one
        more for a turn whose activity task runs the next one (``handoff``); never one it
        has not registered, whose tag its filter refuses or that runs on a session
        (whose owner a fetch decides), nor any after it: the claim takes the first ones."""
        if self.fast is None or self.stopping or not self.options.runs_activities:
            return
        free = self._workers.slots.free + (1 if handoff else 0)
        accepts = self.options.worker_tag_filter.matches
        known = 0
        for work in commit.activities[:free]:
            if (work.name not in self.activities or work.session_id is not None
                    or not accepts(work.tag)):
                break
            known += 1
        if known:
            commit.claim_activities = known
            commit.claim_lock_timeout = self.options.activity_lock_timeout

    async def _after_commit(self, iid: str, execution: OrchestrationExecution,
                            execution_id: int, commit: OrchestrationCommit,
                            claimed: list[ActivityItem] | None,
                            handoff: list[ActivityItem] | None = None) -> None:
        """Start the activities the commit claimed, each in a task of its own; with
        ``handoff`` (a turn run by an activity's task) the first goes there instead, to
        run next in that task, on its slot: a sequence of activities then runs in one
        task rather than in a new task per step."""
        if commit.worker_fires_timers:
            self._timers.arm(iid, commit)
        acts = list(claimed or ())
        if handoff is not None and acts:
            handoff.append(acts.pop(0))
        await self._workers.start(acts)
        self._wake_for_timers(commit)
        self._workers.cancel(commit.cancel_activities)
        if execution.finished:
            self._cache.pop(iid, None)
        else:
            self._remember(iid, execution, execution_id)

    async def _fire_timers(self, iid: str, due: list[OrchestratorMessage]) -> None:
        """Fire due timers a turn committed here (see :mod:`.timers`) on a turn slot, as
        a fetch would (many instances' timers falling due at once take turns, as many at
        a time as there are slots)."""
        await self.slots.acquire()
        try:
            await self._fire_timers_on_slot(iid, due)
        finally:
            self.slots.release()

    async def _fire_timers_on_slot(self, iid: str, due: list[OrchestratorMessage]) -> None:
        """In place when the execution is live here and nothing else happened to the
        instance, else the ordinary way for one instance (``lock_instance``, which
        delivers what is visible). Finding the instance locked, this runtime leaves the
        timers to the lock's holder, whose commit finds them waiting and announces
        them."""
        fast = self.fast
        assert fast is not None
        if self.stopping:
            return  # (the fetches of the next worker find them)
        cached = self._cache.get(iid)
        try:
            if (cached is not None and not cached.execution.finished
                    and all(m.execution_id == cached.execution_id for m in due)
                    and self._contended.get(iid, 0.0) < time.monotonic()
                    and await self._commit_in_place(fast, iid, cached,
                                                    [m.event for m in due], None,
                                                    consume=due)):
                return
            if self.stopping:
                return
            orch = await fast.lock_instance(iid, self.options.orchestration_lock_timeout)
        except Exception as e:
            self.hooks.store_failed(e)
            log_failure("firing a timer of %r failed; a fetch takes it", iid)
            return
        if orch is None:
            return
        self.hooks.fetched("orchestration", 1)
        got = [m.message.event for m in orch.messages if m.message is not None]
        if orch.messages:
            await self._run_locked(orch)
        else:
            try:
                await self.provider.abandon_orchestration_item(orch.lock_token)
            except Exception as e:
                self.hooks.store_failed(e)
        self._timers.retry(iid, [m for m in due if m.event not in got])

    def _turn_over(self, iid: str) -> None:
        """A turn here on ``iid`` has ended: ring the alarms that rang during it."""
        self._in_turn.discard(iid)
        self._timers.turn_over(iid)

    def _wake_for_timers(self, commit: OrchestrationCommit) -> None:
        """Wake the dispatcher when a timer this process just committed comes due, so a
        timer fires on time rather than on the next safety-net poll (a long-polling
        store does that itself)."""
        if self.long_poll or self._clock.jumps:  # (a jump of the clock wakes it instead)
            return
        now = self._clock.time()
        for msg in commit.messages:
            if msg.visible_at is not None and msg.visible_at > now:
                self._timer_wakes.at(msg.visible_at)

    def _function_name(self, fn: Any) -> str:
        return (self.activities.name_of(fn) or self.orchestrations.name_of(fn)
                or str(getattr(fn, "__name__", repr(fn))))

    # ================================================================ the cache
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

    async def _not_registered(self, item: OrchestrationItem,
                              started: OrchestrationStarted | None, execution_id: int,
                              version: str | None, now_us: int) -> None:
        """A turn whose orchestration (or version) no live worker has: a WARNING the
        first time, then offered again after ``not_registered_backoff``, and the instance
        failed ``not_registered`` once its attempts are used up."""
        inst = item.instance
        assert inst is not None
        opts = self.options
        why = self._heartbeat.missing("orchestration", inst.name, version)
        parent = f" (a child of {inst.parent_instance_id!r})" if inst.parent_instance_id else ""
        if item.attempt >= opts.max_attempts:
            await self._fail(item, started, execution_id, ErrorDetails(
                "not_registered", "NotRegistered",
                f"{why}. Instance {item.instance_id!r}{parent} was offered "
                f"{item.attempt} times, {opts.not_registered_backoff:g} s apart "
                "(RuntimeOptions.max_attempts, not_registered_backoff), and never ran: "
                "register it and restart the workers, or correct the name"), now_us)
            return
        if item.attempt == 1:
            logger.warning(
                "instance %r%s cannot run on any running worker: %s. It is offered again "
                "every %g s and fails with kind not_registered after %d attempts: register "
                "it and restart the workers, or correct the name", item.instance_id, parent, why,
                opts.not_registered_backoff, opts.max_attempts,
                extra={"instance_id": item.instance_id})
        await self.provider.abandon_orchestration_item(item.lock_token,
                                                       opts.not_registered_backoff)

    async def _fail(self, item: OrchestrationItem, started: OrchestrationStarted | None,
                    execution_id: int, error: ErrorDetails, now_us: int,
                    next_event_id: int | None = None) -> None:
        inst = item.instance
        assert inst is not None
        self._cache.pop(item.instance_id, None)
        if next_event_id is None:
            next_event_id = 1 if started is not None else inst.history_len + 1
        version = started.version if started else inst.version
        commit = failure_commit(item.instance_id, started, inst.name, version, execution_id,
                                next_event_id, error, now_us // 1000)
        commit.custom_status = inst.custom_status
        logger.error("instance %r failed: %s", item.instance_id, error.message)
        origin = started
        if origin is None and inst.history_len and installed_runtime_hooks():
            # (the stored start, for its trace context, when an integration may want it;
            # a history that does not decode has none to give)
            with contextlib.suppress(Exception):
                head = await self.provider.read_history(item.instance_id, execution_id)
                origin = head[0] if head and isinstance(head[0], OrchestrationStarted) else None
        turn = self._turn_info(item.instance_id, execution_id, inst.name, version, origin)
        turn.first = started is not None
        turn.state, turn.error = "FAILED", error
        committed, failure = False, None
        self.hooks.turn_start(turn)
        try:
            self.hooks.turn_committing(turn)
            await self.provider.ack_orchestration_item(item.lock_token, commit)
            committed = True
        except BaseException as e:
            failure = e
            raise
        finally:
            self.hooks.turn_end(turn, committed, failure)

    # ================================================================ an activity's result
    async def feed_completion(self, item: ActivityItem, event: HistoryEvent,
                              handoff: list[ActivityItem]) -> bool:
        """Feed an activity's result straight into its instance's next turn when the
        instance is live in this runtime and not locked elsewhere: one commit instead of
        an activity ack, a fetch and a turn ack. False: use the ordinary path."""
        work = item.work
        fast = self.fast
        cached = self._cache.get(work.instance_id)
        if (fast is None or cached is None or cached.execution_id != work.execution_id
                or self.stopping or work.instance_id in self._in_turn):
            return False
        # Without a lock only when this is the one activity the instance waits for (a
        # fan-in gathers many completions per turn on the locked path instead) and the
        # instance has not lately been busy with other work.
        if (cached.execution.open_activities == 1
                and self._contended.get(work.instance_id, 0.0) < time.monotonic()):
            return await self._commit_in_place(fast, work.instance_id, cached, [event],
                                               handoff, acked=item.lock_token)
        try:
            orch = await fast.lock_instance(work.instance_id,
                                            self.options.orchestration_lock_timeout)
        except Exception as e:
            self.hooks.store_failed(e)
            raise
        if orch is None:
            return False
        self.hooks.fetched("orchestration", 1)
        completion = QueuedMessage(-1, OrchestratorMessage(work.instance_id, event,
                                                           work.execution_id))
        orch = dataclasses.replace(orch, messages=[*orch.messages, completion])
        try:
            return await self._turn(orch, acked_activity=item.lock_token, handoff=handoff)
        except LockLost:
            self._cache.pop(work.instance_id, None)
        except Exception as e:  # a bug or store error: put the instance back, ack the usual way
            self.hooks.store_failed(e)
            self._cache.pop(work.instance_id, None)
            log_failure("turn for %r failed; releasing it", work.instance_id)
        try:
            await self.provider.abandon_orchestration_item(orch.lock_token)
        except Exception as e:
            self.hooks.store_failed(e)
        return False

    async def _commit_in_place(self, fast: FastPath, iid: str, cached: _Cached,
                               events: list[HistoryEvent],
                               handoff: list[ActivityItem] | None, *,
                               acked: str | None = None,
                               consume: list[OrchestratorMessage] | None = None) -> bool:
        """The turn of ``events`` on the live execution, committed with no lock taken
        first: an activity's completion (``acked``: its lock token) or due timers
        (``consume``: their queued messages). If anything happened to the instance
        meanwhile the store refuses, the live execution (now ahead of the store) is
        dropped, and the ordinary path takes over (False)."""
        execution = cached.execution
        expected = len(execution.history)
        started = execution.started
        assert started is not None
        turn = self._turn_info(iid, cached.execution_id, started.name, started.version,
                               started)
        committed, failure = False, None
        self._in_turn.add(iid)
        self.hooks.turn_start(turn)
        execution.on_schedule = functools.partial(self.hooks.schedule, turn)
        try:
            now_us = max([self._clock.time_us()] + [  # (a timer never before its time)
                e.fire_at * 1000 for e in events if isinstance(e, TimerFired)])
            began = time.perf_counter()
            result = execution.turn(events, now_us)
            turn.duration = time.perf_counter() - began
            execution.on_schedule = None
            commit = build_commit(iid, started, result)
            commit.worker_fires_timers = self.fires_timers
            if acked is not None:
                commit.acked_activities.append(acked)
            self._claim(commit, handoff=acked is not None)
            turn_outcome(turn, commit, result)
            self.hooks.turn_committing(turn)
            asked = time.monotonic()
            try:
                claimed = (await fast.commit_turn(iid, expected, commit, consume)
                           if consume else await fast.commit_turn(iid, expected, commit))
            except BaseException as e:
                failure = e
                raise
            committed = True
            self._workers.leased(claimed, asked)
        except LockLost:
            self._cache.pop(iid, None)
            self._contended[iid] = time.monotonic() + _CONTENDED_S
            if len(self._contended) > 4096:
                now = time.monotonic()
                self._contended = {k: v for k, v in self._contended.items() if v > now}
            return False
        except Exception:  # a bug or store error: the usual way
            self._cache.pop(iid, None)
            log_failure("turn for %r failed; taking the ordinary path instead", iid)
            return False
        finally:
            execution.on_schedule = None
            self._turn_over(iid)
            self.hooks.turn_end(turn, committed, failure)
        await self._after_commit(iid, execution, cached.execution_id, commit, claimed,
                                 handoff)
        _report_dropped(iid, result)
        return True


def _report_dropped(instance_id: str, result: TurnResult) -> None:
    """One warning per message a continue-as-new could not carry (past the cap)."""
    for event in result.dropped:
        what = ("queue message of queue %r (enqueued but never dequeued"
                if isinstance(event, QueueEventDelivered)
                else "event %r (raised but never waited for")
        _orchestration_log.warning(
            "instance %r continued as new with more than %d unread messages: dropped "
            + what + "; only the oldest %d are carried, MAX_CARRY_FORWARD_EVENTS)",
            instance_id, MAX_CARRY_FORWARD_EVENTS, getattr(event, "name", event.kind),
            MAX_CARRY_FORWARD_EVENTS, extra={"instance_id": instance_id})


"""The replay engine: one execution of one orchestration, driven turn by turn.

Sans I/O: :meth:`OrchestrationExecution.turn` takes the new events of a turn and the
turn's time and returns what to append to history; it knows no clock, database,
thread or runtime loop. The same object serves both paths the runtime needs:

* **cold**: a new object built with the persisted history replays it (``is_replaying``)
  on its first turn, then handles the new events;
* **warm**: an object kept from the previous turn handles only the new events.

Both give the same decisions because both deliver the same events, one at a time, in
history order, running the orchestration's ready callbacks to quiescence after each.

Matching: events the orchestration *decides* (``HistoryEvent.is_decision``) are
matched, in order, against the code's calls; every other event is *delivered* to the
future waiting for it. A code call beyond the recorded decisions is only legal once
every persisted event has been delivered; otherwise the code is doing something the
original run did not (nondeterminism).

Everything that affects a transition lives in this file (as in h11's state machine),
which is why it runs past 500 lines: replay, delivery (``_APPLY``), matching of
decisions, settling and the ending of an execution.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import dataclasses
import inspect
import itertools
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .. import codec
from .._limits import MAX_CARRY_FORWARD_EVENTS
from ..errors import (
    ActivityFailed,
    NondeterminismError,
    NonDurableAwait,
    PayloadError,
    SubOrchestrationFailed,
    message_of,
)
from ..history import (
    ActivityCompleted,
    ActivityFailedEvent,
    CancellationRequested,
    EventRaised,
    EventSubscribed,
    HistoryEvent,
    KeyValueReadCompleted,
    KeyValueReadScheduled,
    OrchestrationCancelled,
    OrchestrationCompleted,
    OrchestrationContinuedAsNew,
    OrchestrationFailed,
    OrchestrationStarted,
    PatchRecorded,
    QueueEventDelivered,
    QueueSubscribed,
    SubOrchestrationCompleted,
    SubOrchestrationFailedEvent,
    SubOrchestrationScheduled,
    TimerCreated,
    TimerFired,
    WorkCancelled,
)
from ..options import LONGEST_DURATION_S
from .context import OrchestrationContext
from .futures import ContinueAsNew, DurableFuture, Nondeterministic
from .loop import DeterministicLoop, DurableTimerHandle
from .matching import describe, difference
from .routing import RetagMethods

__all__ = ["OrchestrationExecution", "TurnResult"]

#: What a nondeterminism message tells the user after the difference it found: replay
#: cannot tell a code change from code that reads something that changes between runs.
NONDETERMINISM_CAUSES = (
    "Either the code reads something that differs between runs, which is not allowed in "
    "an orchestration: wall-clock time (datetime.now(), time.time(): use "
    "`await ctx.utcnow()`), random numbers (random, secrets) or uuid.uuid4() (use "
    "`await ctx.new_guid()`, or draw the value in an activity), environment variables or "
    "other changing configuration (pass them in the input, or read them in an activity), "
    "or the iteration order of a set (use sorted(...)); or the orchestration's code "
    "changed while this instance ran: keep the old code registered and register the "
    "change as a new version")

OrchestrationFn = Callable[[Any, Any], Any]

#: The two mailboxes of an instance, apart from each other: events (``raise_event`` /
#: ``schedule_wait``) and queues (``enqueue_event`` / ``dequeue_event``). Waiters and
#: buffered messages are keyed by (mailbox, name).
_EVENTS = "event"
_QUEUES = "queue"
_Mail = EventRaised | QueueEventDelivered


@dataclasses.dataclass(slots=True)
class TurnResult:
    """What a turn decided. ``new_events`` are numbered and stamped, ready to append.

    ``cancelled_activities`` are event ids of scheduled activities the orchestration
    abandoned; ``cancelled_children`` are instance ids of child orchestrations to cancel.
    ``undelivered`` are message events that arrived after the execution ended and, when
    it continued as new, the external events and queue messages it received but never
    took, in arrival order (the runtime carries them over to the next execution), at
    most ``MAX_CARRY_FORWARD_EVENTS`` of them: the oldest. ``dropped`` are the newer
    ones past that cap, which the next execution never sees.
    ``kv_final`` is the key-value state the execution ended with when it continued as
    new (the next one starts with it), else ``None``. ``unread`` counts the events and
    queue messages received and not yet taken by the code (0 once it ended).
    """

    new_events: list[HistoryEvent]
    cancelled_activities: list[int]
    cancelled_children: list[str]
    undelivered: list[HistoryEvent]
    custom_status: str | None
    dropped: list[HistoryEvent] = dataclasses.field(default_factory=list)
    kv_final: dict[str, tuple[str, int]] | None = None
    unread: int = 0

    @property
    def terminal(self) -> HistoryEvent | None:
        if self.new_events and isinstance(self.new_events[-1], _TERMINAL):
            return self.new_events[-1]
        return None


_TERMINAL = (OrchestrationCompleted, OrchestrationFailed, OrchestrationCancelled,
             OrchestrationContinuedAsNew)
_COMPLETIONS = (ActivityCompleted, ActivityFailedEvent, TimerFired, SubOrchestrationCompleted,
                SubOrchestrationFailedEvent, KeyValueReadCompleted)


class OrchestrationExecution(RetagMethods):
    """One execution of one orchestration instance (see the module docstring).

    Thousands live in a runtime's cache, so its attributes stay under CPython's limit
    for key-sharing instance dicts (30): past it, each dict grows about fivefold. (The
    two below are class defaults, set on an instance only when used.)"""

    #: when set, ``trace_*`` stays silent also for code past the recorded history (a
    #: replay that only checks the code against history)
    quiet: bool = False
    #: the recorded event where code and history part, once nondeterminism is found
    diverged_at: int | None = None

    def __init__(
        self,
        fn: OrchestrationFn,
        *,
        instance_id: str,
        history: Sequence[HistoryEvent] = (),
        activity_output_type: Callable[[str], Any] | None = None,
        function_name: Callable[[Callable[..., Any]], str] | None = None,
        new_guid: Callable[[], str] | None = None,
        kv: Mapping[str, tuple[str, int]] | None = None,
    ) -> None:
        self.fn = fn
        self.instance_id = instance_id
        self.history: list[HistoryEvent] = list(history)
        self.activity_output_type = activity_output_type or (lambda _name: None)
        self.function_name = function_name or (lambda f: getattr(f, "__name__", repr(f)))
        self.new_guid = new_guid or (lambda: str(uuid.uuid4()))
        self._replayed = 0  # history[:_replayed] delivered
        self._decisions = [e for e in self.history if e.is_decision]
        self._decision_cursor = 0
        self._next_id = (self.history[-1].event_id + 1) if self.history else 1
        self._open: dict[int, DurableFuture[Any]] = {}
        self._waiters: dict[tuple[str, str], collections.deque[DurableFuture[Any]]] = {}
        self._buffered: dict[tuple[str, str], collections.deque[_Mail]] = {}
        self._known: dict[int, HistoryEvent] = {}  # scheduled work, by event id
        self._closed_ids: set[int] = set()  # work resolved or abandoned
        self._new: list[HistoryEvent] = []
        self._cancelled_activities: list[int] = []
        self._cancelled_children: list[str] = []
        self._fatal: NondeterminismError | None = None
        self._cancel_reason: str | None = None
        self._terminal: HistoryEvent | None = None
        self._main: asyncio.Task[Any] | None = None
        self.current_time_ms = 0
        self.is_replaying = False
        self.started: OrchestrationStarted | None = None
        self.custom_status: str | None = None
        #: told of each new schedule call (set by the runtime for each turn); what it
        #: returns is recorded with the decision as its trace context
        self.on_schedule: Callable[[str, str], dict[str, str] | None] | None = None
        #: the KV state as the execution started (given), then as its sets and clears
        #: leave it (see ``OrchestrationContext.set_kv_value``)
        self.kv: dict[str, tuple[str, int]] = dict(kv) if kv else {}
        self.loop = DeterministicLoop(self)
        self.ctx = OrchestrationContext(self)

    # ================================================================ turn
    def turn(self, new_events: Sequence[HistoryEvent], now_us: int) -> TurnResult:
        """Replay what is left of the persisted history, then handle ``new_events``
        (message events without ids: they are numbered and stamped here)."""
        self._new = []
        self._cancelled_activities = []
        self._cancelled_children = []
        now_ms = now_us // 1000
        if self._terminal is None:
            self._replay()
        undelivered: list[HistoryEvent] = []
        for event in new_events:
            if self._terminal is not None or not self._wanted(event):
                if isinstance(event, _Mail):
                    undelivered.append(event)
                continue
            stamped = dataclasses.replace(event, event_id=self._next_id,
                                          ts=self._stamp(event, now_ms))
            self._next_id += 1
            self.history.append(stamped)
            self._replayed = len(self.history)
            self._new.append(stamped)
            self._deliver(stamped)
            self._settle()
        if self._terminal is None and self._main is not None and self._fatal is None:
            self._check_blocked()
            self._settle()
        kv_final = None
        if isinstance(self._terminal, OrchestrationContinuedAsNew) and self._new \
                and self._new[-1] is self._terminal:
            # Events raised before a wait and queue messages not yet dequeued are kept
            # for the code, and continuing as new does not drop them: the next execution
            # receives them, in arrival order (history order, both mailboxes together),
            # ahead of later ones.
            kept = sorted((e for q in self._buffered.values() for e in q),
                          key=lambda e: e.event_id)
            undelivered[:0] = [dataclasses.replace(e, event_id=0) for e in kept]
            # Carried in arrival order up to the cap; an execution that never reads some
            # event name must not carry a growing pile of them forever.
            dropped = undelivered[MAX_CARRY_FORWARD_EVENTS:]
            del undelivered[MAX_CARRY_FORWARD_EVENTS:]
            kv_final = dict(self.kv)
        else:
            dropped = []
        unread = 0 if self._terminal is not None else sum(
            len(q) for q in self._buffered.values())
        return TurnResult(list(self._new), self._cancelled_activities, self._cancelled_children,
                          undelivered, self.custom_status, dropped, kv_final, unread)

    def _stamp(self, event: HistoryEvent, now_ms: int) -> int:
        """The orchestration time at which a new event happens.

        The orchestration's clock is the time of the event being delivered: ``utcnow()``,
        ``loop.time()`` and new timers' fire times all read it, so they never disagree.
        It never runs backwards (history's times stay in order), and a timer fires no
        earlier than its fire time, whatever the store's clock said when it released
        the message: so ``utcnow()`` after a timer of ``d`` is at least ``d`` later than
        before it. A message may carry the time it happened (a start: when the client
        asked); that time is kept when it is not in the future, so a first turn's timers
        count from the start, not from the turn."""
        last_ts = self.history[-1].ts if self.history else 0
        ts = event.ts if event.ts and event.ts <= now_ms else now_ms
        if isinstance(event, TimerFired):
            ts = max(ts, event.fire_at)
        return max(ts, last_ts)

    @property
    def finished(self) -> bool:
        return self._terminal is not None

    @property
    def nondeterminism(self) -> NondeterminismError | None:
        """The first difference found between the code and its history, if any (the
        execution then ends FAILED with kind ``nondeterminism``)."""
        return self._fatal

    @property
    def open_activities(self) -> int:
        """Activities scheduled and neither completed nor abandoned, counted up to two:
        what the runtime asks is whether exactly one is open, and counting them all on
        every completion would make a fan-out over n activities cost n squared."""
        return sum(1 for _ in itertools.islice(
            (f for f in self._open.values() if f.kind == "activity"), 2))

    def _replay(self) -> None:
        history = self.history
        self.is_replaying = True
        try:
            while self._replayed < len(history) and self._terminal is None:
                event = history[self._replayed]
                self._replayed += 1
                if not event.is_decision:
                    self._deliver(event)
                    self._settle()
        finally:
            self.is_replaying = False
        if (self._terminal is None and self._fatal is None
                and self._decision_cursor < len(self._decisions)):
            missing = self._decisions[self._decision_cursor]
            self._fail_nondeterminism(
                f"history has {describe(missing)} at event {missing.event_id}, but the code "
                "did not schedule it (it ended, or waits on something else)",
                missing.event_id)
            self._settle()

    def _wanted(self, event: HistoryEvent) -> bool:
        """Whether a new message event changes anything (duplicates and completions of
        work this execution never scheduled, or already resolved, are dropped)."""
        if isinstance(event, _COMPLETIONS):
            sid = event.source_event_id
            return sid in self._known and sid not in self._closed_ids
        if isinstance(event, OrchestrationStarted):
            return self.started is None
        return True

    # ================================================================ delivery
    def _deliver(self, event: HistoryEvent) -> None:
        """Hand a delivered (not decided) event to what waits for it: every kind that
        affects a waiting future has its ``_apply_*`` method in ``_APPLY``; the others
        (markers such as ``CustomStatusSet`` are decisions, never delivered) do nothing."""
        self.current_time_ms = event.ts
        self.loop.delivering = event.event_id
        apply = _APPLY.get(type(event))
        if apply is not None:
            apply(self, event)

    def _apply_mail(self, event: _Mail) -> None:
        """An event or queue message: to the first live waiter of its name in its
        mailbox, else kept (in arrival order) for the next wait or dequeue."""
        key = (_QUEUES if isinstance(event, QueueEventDelivered) else _EVENTS, event.name)
        waiters = self._waiters.get(key)
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                self._open.pop(fut.event_id, None)
                self._hand(fut, event)
                return
        self._buffered.setdefault(key, collections.deque()).append(event)

    def _hand(self, fut: DurableFuture[Any], mail: _Mail) -> None:
        fut.completed_by = mail.event_id
        fut.message = mail  # until the code has it (a select may give it back)
        self._resolve_text(fut, mail.data)

    def _apply_cancellation(self, event: CancellationRequested) -> None:
        if self._cancel_reason is not None:
            return
        self._cancel_reason = event.reason
        if self._main is not None and not self._main.done():
            self._main.cancel(event.reason or None)

    def _apply_started(self, event: OrchestrationStarted) -> None:
        self.started = event
        self.custom_status = event.custom_status
        try:
            value = codec.decode(event.input, codec.input_type_of(self.fn))
        except PayloadError as e:
            err = e

            async def fail() -> Any:
                raise err

            self._main = self.loop.main_task(fail())
            return
        self._main = self.loop.main_task(self._run_main(value), contextvars.Context())

    async def _run_main(self, value: Any) -> Any:
        result = self.fn(self.ctx, value)
        if not inspect.isawaitable(result):
            raise TypeError(f"an orchestration must be an async def: "
                            f"{getattr(self.fn, '__qualname__', self.fn)!r} returned "
                            f"{type(result).__name__}, not a coroutine")
        return await result

    def _apply_completion(self, event: HistoryEvent) -> None:
        sid: int = event.source_event_id  # type: ignore[attr-defined]
        self._closed_ids.add(sid)
        fut = self._open.pop(sid, None)
        if fut is None or fut.done():
            return
        fut.completed_by = event.event_id
        match event:
            case ActivityCompleted(result=result) | SubOrchestrationCompleted(result=result):
                self._resolve_text(fut, result)
            case TimerFired():
                fut.set_result(None)
            case KeyValueReadCompleted(found=found, value=value):
                if found:
                    self._resolve_text(fut, value)
                else:
                    fut.set_result(fut.default)
            case ActivityFailedEvent():
                name = fut.event.name  # type: ignore[attr-defined]
                attempt = getattr(fut.event, "attempt", 1)
                fut.set_exception(ActivityFailed(name, event.error_type, event.message, attempt,
                                                 kind=event.error_kind,
                                                 retryable=event.retryable))
            case SubOrchestrationFailedEvent():
                src = fut.event
                assert isinstance(src, SubOrchestrationScheduled)
                fut.set_exception(SubOrchestrationFailed(src.name, src.instance_id,
                                                         event.error_type, event.message))

    def _resolve_text(self, fut: DurableFuture[Any], text: str | None) -> None:
        try:
            value = codec.decode(text, fut.output_type)
        except PayloadError as e:
            fut.set_exception(e)
        else:
            fut.set_result(value)

    # ================================================================ settling
    def _settle(self) -> None:
        """Run ready callbacks to quiescence, then record a terminal outcome if the
        orchestration finished (or nondeterminism was found)."""
        self.loop.run_ready()
        if self._terminal is not None:
            return
        if self._fatal is not None:
            self._finish(OrchestrationFailed(error_kind="nondeterminism",
                                             error_type="NondeterminismError",
                                             message=str(self._fatal)))
            return
        main = self._main
        if main is None or not main.done():
            return
        if main.cancelled():
            self._finish(OrchestrationCancelled(reason=self._cancel_reason or ""))
            return
        exc = main.exception()
        if exc is None:
            if self._cancel_reason is not None:
                self._finish(OrchestrationCancelled(reason=self._cancel_reason))
                return
            try:
                output = codec.encode(main.result())
            except Exception as e:  # PayloadError, or a model's own serialiser failing
                self._finish(OrchestrationFailed(
                    error_type=type(e).__qualname__,
                    message=f"cannot encode the output: {message_of(e)}"))
                return
            self._finish(OrchestrationCompleted(output=output))
        elif isinstance(exc, ContinueAsNew):
            self._finish(OrchestrationContinuedAsNew(input=exc.input_text, version=exc.version))
        elif isinstance(exc, Nondeterministic):  # pragma: no cover - _fatal is set first
            self._finish(OrchestrationFailed(error_kind="nondeterminism",
                                             error_type="NondeterminismError", message=str(exc)))
        elif self._cancel_reason is not None and isinstance(exc, asyncio.CancelledError):
            self._finish(OrchestrationCancelled(reason=self._cancel_reason))
        else:
            message = message_of(exc)
            if ((isinstance(exc, RuntimeError) and "attached to a different loop" in message)
                    or (isinstance(exc, ValueError) and "belongs to a different loop" in message)):
                # (the second: asyncio.gather or wait given a future of another loop)
                message = ("orchestration code awaited a future of another event loop, which "
                           "is not durable; do such work in an activity")
            # An activity that failed for want of a worker (poison, not registered) fails
            # the instance with that kind, so its status says why.
            kind = getattr(exc, "kind", "application") if isinstance(exc, ActivityFailed) \
                else "application"
            self._finish(OrchestrationFailed(error_kind=kind, error_type=type(exc).__qualname__,
                                             message=message))

    def _finish(self, terminal: HistoryEvent) -> None:
        recorded: HistoryEvent | None = None
        if not isinstance(terminal, OrchestrationFailed) or terminal.error_kind != "nondeterminism":
            # Ending while persisted history still holds decisions or completions means the
            # code no longer does what the original run did; a recorded outcome of the
            # same kind is the code ending as it did before (replaying a finished history).
            pending = next((d for d in self._decisions[self._decision_cursor:]
                            if not isinstance(d, _TERMINAL)), None)
            if pending is None:
                pending = next((e for e in self.history[self._replayed:]
                                if _delivered(e)), None)
            recorded = next((d for d in self._decisions[self._decision_cursor:]
                             if isinstance(d, _TERMINAL)), None)
            if pending is None and recorded is not None and recorded.kind != terminal.kind:
                pending = recorded
            if pending is not None:
                ended = ("code ended before reaching it" if pending is not recorded
                         else f"code ended with {terminal.kind}")
                self._fail_nondeterminism(
                    f"history has {describe(pending)} at event {pending.event_id}, but the "
                    + ended, pending.event_id)
                assert self._fatal is not None
                terminal = OrchestrationFailed(error_kind="nondeterminism",
                                               error_type="NondeterminismError",
                                               message=str(self._fatal))
                recorded = None
        # Pending work is dropped like a select's losers: activities and children stop.
        for fut in list(self._open.values()):
            if fut.kind in ("activity", "sub_orchestration"):
                self._record_cancel(fut)
        self._open.clear()
        if recorded is not None:
            self._decision_cursor = len(self._decisions)
            self._replayed = len(self.history)
            self._terminal = recorded
        else:
            self._terminal = self._append(terminal)
        self._close_loop()

    def _close_loop(self) -> None:
        # Close never-started coroutines so dropping them raises no "never awaited" warning.
        for task in list(self.loop.tasks):
            if task.done():
                continue
            coro = task.get_coro()
            if coro is not None and getattr(coro, "cr_frame", None) is not None:
                if getattr(coro, "cr_running", False):
                    continue
                task._log_destroy_pending = False  # type: ignore[attr-defined]
                try:
                    coro.close()
                except BaseException:
                    pass

    def _check_blocked(self) -> None:
        """The main task waits, yet nothing durable is pending: it can never resume."""
        main = self._main
        if main is None or main.done() or self._open:
            return
        what = _innermost_await(main)
        err = NonDurableAwait(
            f"orchestration {self.ctx.orchestration_name!r} is blocked on {what}, which no "
            "history event can complete (it is not durable); await ctx.schedule_* calls, "
            "asyncio.sleep or tasks built from them instead")

        async def fail() -> Any:
            raise err

        main.cancel()
        self._main = self.loop.main_task(fail())

    # ================================================================ decisions
    def _append(self, event: HistoryEvent) -> HistoryEvent:
        stamped = dataclasses.replace(event, event_id=self._next_id, ts=self.current_time_ms)
        self._next_id += 1
        self.history.append(stamped)
        self._replayed = len(self.history)
        self._new.append(stamped)
        return stamped

    def record(self, event: HistoryEvent, same: Callable[[HistoryEvent], bool],
               fresh: Callable[[HistoryEvent], HistoryEvent] | None = None) -> HistoryEvent:
        """Match a decision of the code against history, or record it as new.

        ``same(recorded)`` tells whether a recorded event of the same kind is this
        decision. ``fresh`` completes a new decision's event (drawing a random value only
        when nothing is recorded). Returns the recorded (or newly numbered) event.
        """
        if self._fatal is not None:
            raise Nondeterministic(str(self._fatal))
        if self._decision_cursor < len(self._decisions):
            recorded = self._decisions[self._decision_cursor]
            if recorded.kind != event.kind or not same(recorded):
                what = describe(event)
                if what == describe(recorded):  # same kind and name: what differs is said
                    what += f" with {difference(recorded, event)}"
                self._fail_nondeterminism(
                    f"expected {describe(recorded)} at event {recorded.event_id}, code "
                    f"scheduled {what}", recorded.event_id)
                raise Nondeterministic(str(self._fatal))
            self._decision_cursor += 1
            return recorded
        nxt = next((e for e in self.history[self._replayed:] if _delivered(e)), None)
        if nxt is not None:
            self._fail_nondeterminism(
                f"code scheduled {describe(event)}, which history does not have before "
                f"event {nxt.event_id} ({nxt.kind})", nxt.event_id)
            raise Nondeterministic(str(self._fatal))
        # Past everything recorded: from here on the code runs live.
        self.is_replaying = False
        stamped = self._append(fresh(event) if fresh is not None else event)
        self._decisions.append(stamped)
        self._decision_cursor += 1
        return stamped

    def patch(self, change_id: str, *, deprecated: bool) -> bool:
        """See ``ExecutionPort.patch``. Markers are looked up in all of this execution's
        persisted history, whatever the replay's position: a marker stands where the
        code first reached the patch, which need not be where it asks now."""
        marked = any(isinstance(e, PatchRecorded) and e.change_id == change_id
                     for e in self.history)
        if self.is_replaying or marked:
            return marked
        self._append(PatchRecorded(change_id=change_id, deprecated=deprecated))
        return True

    def scheduled(self, kind: str, name: str) -> dict[str, str] | None:
        hook = self.on_schedule
        return None if hook is None else hook(kind, name)

    def _fail_nondeterminism(self, detail: str, event_id: int) -> None:
        """Record the first difference found between code and history: ``event_id`` is
        the recorded event where they part."""
        if self._fatal is None:
            self.diverged_at = event_id
            name = self.ctx.orchestration_name
            self._fatal = NondeterminismError(
                f"nondeterministic orchestration {name!r} (instance {self.instance_id!r}): "
                f"{detail}. {NONDETERMINISM_CAUSES}")

    @property
    def next_event_id(self) -> int:
        return self._next_id

    def open_future(self, kind: str, event: HistoryEvent, output_type: Any = None
                    ) -> DurableFuture[Any]:
        fut: DurableFuture[Any] = DurableFuture(self.loop, self, kind, event, output_type)
        eid = event.event_id
        if kind not in ("wait", "dequeue"):  # (work a completion may name)
            self._known[eid] = event
        if eid not in self._closed_ids:
            self._open[eid] = fut
        return fut

    def subscribe(self, event: EventSubscribed | QueueSubscribed, output_type: Any
                  ) -> DurableFuture[Any]:
        queue = isinstance(event, QueueSubscribed)
        fut = self.open_future("dequeue" if queue else "wait", event, output_type)
        key = (_QUEUES if queue else _EVENTS, event.name)
        buffered = self._buffered.get(key)
        if buffered:
            # arrived before the wait: first in history, so it wins a select among the done
            self._open.pop(event.event_id, None)
            self._hand(fut, buffered.popleft())
        else:
            self._waiters.setdefault(key, collections.deque()).append(fut)
        return fut

    def give_back(self, fut: DurableFuture[Any]) -> None:
        """A wait or dequeue that took its event or message lost a select: it goes back
        to its mailbox, in arrival order, for the next wait or dequeue of its name (a
        cancelled wait takes nothing: events and queues behave alike). Deterministic:
        replay runs the same select and gives the same back."""
        mail = fut.message
        fut.message = None
        if isinstance(mail, QueueEventDelivered) and fut.kind == "dequeue":
            key = (_QUEUES, mail.name)
        elif isinstance(mail, EventRaised) and fut.kind == "wait":
            key = (_EVENTS, mail.name)
        else:
            return
        waiters = self._waiters.get(key)
        while waiters:  # (a live waiter means nothing was buffered: it is owed this one)
            taker = waiters.popleft()
            if not taker.done():
                self._open.pop(taker.event_id, None)
                self._hand(taker, mail)
                return
        buffered = self._buffered.setdefault(key, collections.deque())
        at = 0
        while at < len(buffered) and buffered[at].event_id < mail.event_id:
            at += 1
        buffered.insert(at, mail)

    def read_kv(self, event: KeyValueReadScheduled, output_type: Any, default: Any
                ) -> DurableFuture[Any]:
        fut = self.open_future("kv_read", event, output_type)
        fut.default = default
        return fut

    def timer(self, delay: float) -> DurableFuture[None]:
        """A durable timer of ``delay`` seconds from the orchestration's time."""
        if not 0 <= delay <= LONGEST_DURATION_S:  # also NaN; history times are datetimes
            raise ValueError(f"timer delay must be 0 to {LONGEST_DURATION_S:g} s (about "
                             f"1,000 years), got {delay!r}")
        # Rounded up to the millisecond history keeps, never down: a timer fires no
        # earlier than asked. (Whole microseconds first: a delay computed as a
        # difference of loop times carries float noise far below a microsecond.)
        delay_us = round(delay * 1_000_000)
        fire_at = self.current_time_ms + -(-delay_us // 1000)
        event = self.record(TimerCreated(fire_at=fire_at), lambda r: True)
        return self.open_future("timer", event)

    def loop_timer(self, delay: float, callback: Callable[..., object], args: tuple[Any, ...],
                   context: contextvars.Context | None) -> DurableTimerHandle:
        """A timer asked for through the loop (``asyncio.sleep``, ``wait_for``...)."""
        fut = self.timer(delay)
        assert isinstance(fut.event, TimerCreated)
        when = fut.event.fire_at / 1000.0

        def fire(f: asyncio.Future[Any]) -> None:
            if not f.cancelled():
                self.loop.call_soon(callback, *args, context=context)

        fut.add_done_callback(fire)

        def drop() -> None:
            fut.cancel()

        return DurableTimerHandle(when, callback, args, self.loop, context, drop)

    def abandon(self, fut: DurableFuture[Any]) -> None:
        """A durable future was cancelled: drop its subscription, or record that its
        work (an activity, a child) is no longer wanted."""
        eid = fut.event_id
        if self._open.pop(eid, None) is None:
            return
        self._closed_ids.add(eid)
        if fut.kind in ("wait", "dequeue"):
            key = (_QUEUES if fut.kind == "dequeue" else _EVENTS,
                   fut.event.name)  # type: ignore[attr-defined]
            waiters = self._waiters.get(key)
            if waiters and fut in waiters:
                waiters.remove(fut)
        elif fut.kind in ("activity", "sub_orchestration") and self._terminal is None:
            try:
                self.record(WorkCancelled(source_event_id=eid),
                            lambda r: r.source_event_id == eid)  # type: ignore[attr-defined]
            except Nondeterministic:
                return  # _fatal is set; the turn fails the instance
            self._record_cancel(fut)

    def _record_cancel(self, fut: DurableFuture[Any]) -> None:
        if self.is_replaying:
            return  # sent when first recorded
        if fut.kind == "activity":
            self._cancelled_activities.append(fut.event_id)
        elif fut.kind == "sub_orchestration":
            self._cancelled_children.append(fut.event.instance_id)  # type: ignore[attr-defined]


#: how each kind of delivered event is applied (see ``OrchestrationExecution._deliver``)
_APPLY: dict[type[HistoryEvent], Callable[[OrchestrationExecution, Any], None]] = {
    OrchestrationStarted: OrchestrationExecution._apply_started,
    ActivityCompleted: OrchestrationExecution._apply_completion,
    ActivityFailedEvent: OrchestrationExecution._apply_completion,
    TimerFired: OrchestrationExecution._apply_completion,
    SubOrchestrationCompleted: OrchestrationExecution._apply_completion,
    SubOrchestrationFailedEvent: OrchestrationExecution._apply_completion,
    KeyValueReadCompleted: OrchestrationExecution._apply_completion,
    EventRaised: OrchestrationExecution._apply_mail,
    QueueEventDelivered: OrchestrationExecution._apply_mail,
    CancellationRequested: OrchestrationExecution._apply_cancellation,
}


def _delivered(event: HistoryEvent) -> bool:
    """Whether replay must deliver ``event`` before the code may go past it: events the
    code did not decide, but patch markers, which are looked up by id, never waited for
    (code that no longer asks about a marker passes it by)."""
    return not event.is_decision and not isinstance(event, PatchRecorded)


def _innermost_await(task: asyncio.Task[Any]) -> str:
    """Name what a blocked task waits on, following the chain of awaits."""
    obj: Any = task.get_coro()
    code = getattr(obj, "cr_code", None)
    what = f"{code.co_qualname}()" if code is not None else type(obj).__name__
    for _ in range(64):
        nxt = getattr(obj, "cr_await", None) or getattr(obj, "gi_yieldfrom", None)
        if nxt is None:
            break
        obj = nxt
        code = getattr(obj, "cr_code", None) or getattr(obj, "gi_code", None)
        if code is not None:
            what = f"{code.co_qualname}()"
        else:
            what = f"{what} awaiting a bare asyncio Future ({type(obj).__name__})"
            break
    return what

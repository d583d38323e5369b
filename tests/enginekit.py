"""Drives the replay engine with no runtime: a tiny in-test world that runs activities
synchronously, fires timers, and checks on every turn that a cold replay from the
persisted history decides exactly what the warm (cached) execution decided."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from duroxy import codec
from duroxy._engine import OrchestrationExecution, TurnResult
from duroxy.history import (
    ActivityCompleted,
    ActivityFailedEvent,
    ActivityScheduled,
    EventRaised,
    HistoryEvent,
    OrchestrationStarted,
    QueueEventDelivered,
    SubOrchestrationCompleted,
    SubOrchestrationScheduled,
    TimerCreated,
    TimerFired,
    encode_event,
)

START_US = 1_700_000_000_000_000


def strip(events: Sequence[HistoryEvent]) -> list[str]:
    """Events as comparable text (ids and timestamps included)."""
    return [encode_event(e) for e in events]


def kinds(events: Sequence[HistoryEvent]) -> list[str]:
    return [e.kind for e in events]


@dataclass
class Driver:
    fn: Callable[..., Any]
    instance_id: str = "inst-1"
    name: str = "orch"
    version: str | None = "1.0.0"
    activities: dict[str, Callable[[Any], Any]] = field(default_factory=dict)
    children: dict[str, Callable[[Any], Any]] = field(default_factory=dict)
    check_cold: bool = True
    history: list[HistoryEvent] = field(default_factory=list)
    now_us: int = START_US
    execution: OrchestrationExecution | None = None
    results: list[TurnResult] = field(default_factory=list)
    #: the key-value state the execution starts with (key -> (JSON text, updated_at ms))
    kv: dict[str, tuple[str, int]] = field(default_factory=dict)
    _guids: Any = field(default_factory=lambda: itertools.count(1))

    def _guid(self) -> str:
        return f"00000000-0000-4000-8000-{next(self._guids):012d}"

    def new_execution(self, history: Sequence[HistoryEvent] = ()) -> OrchestrationExecution:
        counter = itertools.count(sum(1 for e in history if e.kind == "GuidRecorded") + 1)
        return OrchestrationExecution(
            self.fn, instance_id=self.instance_id, history=history,
            new_guid=lambda: f"00000000-0000-4000-8000-{next(counter):012d}", kv=self.kv)

    def turn(self, events: Sequence[HistoryEvent], advance_ms: int = 0) -> TurnResult:
        self.now_us += advance_ms * 1000
        before = list(self.history)
        if self.execution is None:
            self.execution = self.new_execution(before)
        result = self.execution.turn(events, self.now_us)
        if self.check_cold:
            cold = self.new_execution(before).turn(events, self.now_us)
            assert strip(cold.new_events) == strip(result.new_events), (
                "cold replay decided differently from the cached execution")
            assert cold.cancelled_activities == result.cancelled_activities
            assert cold.cancelled_children == result.cancelled_children
        self.history.extend(result.new_events)
        self.results.append(result)
        if result.terminal is not None:
            self.execution = None
        return result

    def start(self, input: Any = None, **started: Any) -> TurnResult:
        return self.turn([OrchestrationStarted(name=self.name, version=self.version,
                                               input=codec.encode(input), **started)])

    # -------------------------------------------------------------- the world
    def pending(self) -> list[HistoryEvent]:
        """Scheduled work that has no completion in history yet (and was not abandoned)."""
        done = {getattr(e, "source_event_id", None) for e in self.history}
        work = (ActivityScheduled, TimerCreated, SubOrchestrationScheduled)
        return [e for e in self.history if isinstance(e, work) and e.event_id not in done]

    def complete(self, event: HistoryEvent) -> HistoryEvent:
        if isinstance(event, ActivityScheduled):
            fn = self.activities[event.name]
            try:
                value = fn(codec.decode(event.input))
            except Exception as e:
                return ActivityFailedEvent(source_event_id=event.event_id,
                                           error_type=type(e).__qualname__, message=str(e))
            return ActivityCompleted(source_event_id=event.event_id, result=codec.encode(value))
        if isinstance(event, TimerCreated):
            return TimerFired(source_event_id=event.event_id, fire_at=event.fire_at)
        if isinstance(event, SubOrchestrationScheduled):
            value = self.children[event.name](codec.decode(event.input))
            return SubOrchestrationCompleted(source_event_id=event.event_id,
                                             result=codec.encode(value))
        raise AssertionError(f"cannot complete {event}")

    def run(self, input: Any = None, *, batch: bool = False, max_turns: int = 1000,
            order: Callable[[list[HistoryEvent]], list[HistoryEvent]] | None = None) -> TurnResult:
        """Start and drive to the end, completing pending work one event per turn (or
        all at once with ``batch``). Timers fire in fire-time order, before activities
        scheduled later, unless ``order`` says otherwise."""
        result = self.start(input)
        for _ in range(max_turns):
            if result.terminal is not None:
                return result
            pend = self.pending()
            if not pend:
                return result
            if order is not None:
                pend = order(pend)
            completions = [self.complete(e) for e in pend]
            if batch:
                result = self.turn(completions, advance_ms=1)
            else:
                for c in completions:
                    result = self.turn([c], advance_ms=1)
                    if result.terminal is not None:
                        break
        raise AssertionError("orchestration did not finish")

    def raise_event(self, name: str, data: Any = None) -> TurnResult:
        return self.turn([EventRaised(name=name, data=codec.encode(data))], advance_ms=1)

    def enqueue(self, queue: str, data: Any = None) -> TurnResult:
        return self.turn([QueueEventDelivered(name=queue, data=codec.encode(data))],
                         advance_ms=1)

    @property
    def output(self) -> Any:
        last = self.history[-1]
        assert last.kind == "OrchestrationCompleted", f"not completed: {last}"
        return codec.decode(last.output)  # type: ignore[attr-defined]


def renumber(events: Sequence[HistoryEvent]) -> list[HistoryEvent]:
    return [replace(e, event_id=i) for i, e in enumerate(events, 1)]

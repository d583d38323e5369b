"""An execution's history as the instance page draws it: work as spans from its schedule
to its completion (activities, timers, child orchestrations, cross-instance KV reads),
waits, events, queue messages, KV writes and the lifecycle as points; and the full
event list."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .._render import PAYLOAD_FIELDS, dumps
from ..history import (
    ActivityCompleted,
    ActivityFailedEvent,
    ActivityScheduled,
    EventRaised,
    EventSubscribed,
    HistoryEvent,
    KeyValueCleared,
    KeyValueReadCompleted,
    KeyValueReadScheduled,
    KeyValuesCleared,
    KeyValueSet,
    QueueEventDelivered,
    QueueSubscribed,
    SubOrchestrationCompleted,
    SubOrchestrationFailedEvent,
    SubOrchestrationScheduled,
    TimerCreated,
    TimerFired,
)

__all__ = ["Bar", "Timeline", "pretty", "timeline"]


# ====================================================================== timelines
@dataclass
class Bar:
    """A span (work from its schedule to its completion) or a point (an event)."""

    label: str
    kind: str  # activity, timer, sub_orchestration, kv_read, wait, event, kv, lifecycle
    start_ms: int
    end_ms: int | None  # None: a point, or work still open (see ``open``)
    open: bool = False
    failed: bool = False
    detail: str = ""
    link: str | None = None  # an instance id to link to
    left: float = 0.0  # percent of the timeline
    width: float = 0.0


@dataclass
class Timeline:
    execution_id: int
    start_ms: int
    end_ms: int
    rows: list[Bar]
    events: list[dict[str, Any]]

    @property
    def seconds(self) -> float:
        return (self.end_ms - self.start_ms) / 1000.0


def _payload(text: str | None, width: int = 200) -> str:
    if text is None:
        return "null"
    return text if len(text) <= width else text[:width - 3] + "..."


def _event_fields(event: HistoryEvent) -> str:
    parts = []
    for name in ("name", "key", "instance_id", "source_event_id", "attempt", "session_id",
                 "tag", "fire_at", "error_kind", "error_type", "message", "reason", "input",
                 "result", "output", "data", "status", "version", "found", "value",
                 "value_us", "change_id"):
        value = getattr(event, name, None)
        if value is None or (name == "attempt" and value == 1):
            continue
        if name in PAYLOAD_FIELDS or name == "result":
            value = _payload(value)
        parts.append(f"{name}={value}")
    return ", ".join(parts)


def _opened(ev: HistoryEvent) -> Bar | None:
    """The span that ``ev`` opens (work a later event completes), if it opens one."""
    if isinstance(ev, ActivityScheduled):
        return Bar(f"activity {ev.name}" + (f" (attempt {ev.attempt})" if ev.attempt > 1
                                            else ""), "activity", ev.ts, None, open=True,
                   detail=f"input={_payload(ev.input)}")
    if isinstance(ev, TimerCreated):
        return Bar("timer", "timer", ev.ts, None, open=True,
                   detail=f"fires at {datetime.fromtimestamp(ev.fire_at / 1000, UTC)}")
    if isinstance(ev, SubOrchestrationScheduled):
        return Bar(f"child {ev.name}", "sub_orchestration", ev.ts, None, open=True,
                   detail=ev.instance_id, link=ev.instance_id)
    if isinstance(ev, KeyValueReadScheduled):
        return Bar(f"reads {ev.key} of {ev.instance_id}", "kv_read", ev.ts, None, open=True,
                   detail=ev.instance_id, link=ev.instance_id)
    return None


def _point(ev: HistoryEvent) -> Bar | None:
    """The point ``ev`` draws, if it draws one."""
    if isinstance(ev, EventSubscribed):
        return Bar(f"waits for {ev.name}", "wait", ev.ts, None)
    if isinstance(ev, QueueSubscribed):
        return Bar(f"dequeues from {ev.name}", "wait", ev.ts, None)
    if isinstance(ev, EventRaised):
        return Bar(f"event {ev.name}", "event", ev.ts, None, detail=f"data={_payload(ev.data)}")
    if isinstance(ev, QueueEventDelivered):
        return Bar(f"message on {ev.name}", "event", ev.ts, None,
                   detail=f"data={_payload(ev.data)}")
    if isinstance(ev, KeyValueSet):
        return Bar(f"kv set {ev.key}", "kv", ev.ts, None, detail=f"= {_payload(ev.value)}")
    if isinstance(ev, KeyValueCleared):
        return Bar(f"kv {ev.key} cleared", "kv", ev.ts, None)
    if isinstance(ev, KeyValuesCleared):
        return Bar("kv all cleared", "kv", ev.ts, None)
    if ev.kind.startswith("Orchestration") or ev.kind in ("CancellationRequested",
                                                          "CustomStatusSet"):
        return Bar(ev.kind, "lifecycle", ev.ts, None, detail=_event_fields(ev),
                   failed=ev.kind == "OrchestrationFailed")
    return None


def _close(bar: Bar, ev: HistoryEvent) -> None:
    bar.end_ms, bar.open = ev.ts, False
    if isinstance(ev, (ActivityFailedEvent, SubOrchestrationFailedEvent)):
        bar.failed = True
        bar.detail += f" → {ev.error_type}: {_payload(ev.message)}"
    elif isinstance(ev, (ActivityCompleted, SubOrchestrationCompleted)):
        bar.detail += f" → {_payload(ev.result)}"
    elif isinstance(ev, KeyValueReadCompleted):
        bar.detail += f" → {_payload(ev.value)}" if ev.found else " → not found"


_CLOSING = (ActivityCompleted, ActivityFailedEvent, TimerFired, SubOrchestrationCompleted,
            SubOrchestrationFailedEvent, KeyValueReadCompleted)


def timeline(execution_id: int, events: Sequence[HistoryEvent], now_ms: int,
             running: bool) -> Timeline:
    """One execution's history as rows: activities, timers, children and cross-instance
    KV reads as spans from their schedule to their completion (open ones reach to now
    while it runs); waits, events, queue messages, KV writes and the lifecycle as
    points."""
    rows: list[Bar] = []
    by_source: dict[int, Bar] = {}
    for ev in events:
        if isinstance(ev, _CLOSING):
            done = by_source.get(ev.source_event_id)
            if done is not None:
                _close(done, ev)
            continue
        bar = _opened(ev)
        if bar is not None:
            by_source[ev.event_id] = bar
        else:
            bar = _point(ev)
        if bar is not None:
            rows.append(bar)
    start = events[0].ts if events else now_ms
    end = max([start, *(e.ts for e in events)] + ([now_ms] if running else []))
    width = max(end - start, 1)
    for bar in rows:
        stop = bar.end_ms if bar.end_ms is not None else (end if bar.open else None)
        bar.left = 100.0 * (bar.start_ms - start) / width
        bar.width = 0.0 if stop is None else max(100.0 * (stop - bar.start_ms) / width, 0.4)
    listed = [{"id": e.event_id, "kind": e.kind,
               "time": datetime.fromtimestamp(e.ts / 1000, UTC).strftime("%H:%M:%S.%f")[:-3],
               "fields": _event_fields(e)} for e in events]
    return Timeline(execution_id, start, end, rows, listed)


def pretty(value: Any) -> str:
    """A decoded JSON value as indented text."""
    try:
        return dumps(value, indent=2)
    except (TypeError, ValueError):
        return json.dumps(str(value))

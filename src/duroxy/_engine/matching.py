"""How decisions are named and told apart in nondeterminism messages: both sides, in
words a person reads (``expected activity 'reserve' at event 3, code scheduled timer``)."""

from __future__ import annotations

import dataclasses

from ..history import (
    ActivityScheduled,
    DetachedOrchestrationScheduled,
    EventSubscribed,
    HistoryEvent,
    KeyValueCleared,
    KeyValueReadScheduled,
    KeyValuesCleared,
    KeyValueSet,
    QueueSubscribed,
    SubOrchestrationScheduled,
    TimerCreated,
    WorkCancelled,
)

__all__ = ["describe", "difference"]


def difference(recorded: HistoryEvent, event: HistoryEvent) -> str:
    """How a decision differs from the recorded one of the same kind and name."""
    fields = [f.name for f in dataclasses.fields(event)
              if f.name not in ("event_id", "ts", "updated_at") and f.compare
              and getattr(event, f.name, None) != getattr(recorded, f.name, None)]
    if not fields:
        return "other arguments"
    parts = [f"{name} {getattr(event, name)!r:.60} (history: {getattr(recorded, name)!r:.60})"
             for name in fields]
    return "a different " + ", ".join(parts)


def describe(event: HistoryEvent) -> str:
    """A person's name for a decision: ``activity 'reserve'``, ``timer`` ..."""
    match event:
        case ActivityScheduled(name=name):
            return f"activity {name!r}"
        case TimerCreated():
            return "timer"
        case EventSubscribed(name=name):
            return f"wait for event {name!r}"
        case QueueSubscribed(name=name):
            return f"dequeue from queue {name!r}"
        case KeyValueSet(key=key):
            return f"set of KV key {key!r}"
        case KeyValueCleared(key=key):
            return f"clear of KV key {key!r}"
        case KeyValuesCleared():
            return "clear of every KV key"
        case KeyValueReadScheduled(instance_id=iid, key=key):
            return f"read of KV key {key!r} of instance {iid!r}"
        case SubOrchestrationScheduled(name=name):
            return f"sub-orchestration {name!r}"
        case DetachedOrchestrationScheduled(name=name):
            return f"detached orchestration {name!r}"
        case WorkCancelled(source_event_id=sid):
            return f"cancellation of the work scheduled at event {sid}"
    return event.kind

"""Replaying one execution's recorded history against code, with no store.

This is the engine's own replay, as the orchestration dispatcher runs it for a turn
(``OrchestrationExecution`` built with the persisted history), given no new events:
so it fails exactly where a runtime would fail the instance for nondeterminism, and
passes where a runtime would go on. Nothing runs: no activity, no timer, no store
write; decisions the code makes past the end of a history that ends mid-way are
dropped, and ``trace_*`` stays silent.

One addition to what a turn checks: a runtime imposes some endings on an instance
without its code (a poison or not-registered failure, or a failure for
nondeterminism found by older code). Such an ending is not the code's decision, so
the history before it is replayed as a history that ends mid-way.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._engine import OrchestrationExecution
from ..errors import DuroxyError, NotRegistered
from ..history import HistoryEvent, OrchestrationFailed
from .registry import ActivityRegistry, OrchestrationRegistry

__all__ = ["RUNTIME_ENDINGS", "Replayed", "replay_execution"]

#: ``OrchestrationFailed.error_kind`` values a runtime records without the code.
RUNTIME_ENDINGS = frozenset({"poison", "not_registered", "nondeterminism"})


@dataclass(frozen=True, slots=True)
class Replayed:
    """How a replay ended. ``error`` is ``None`` when code and history agree; else a
    ``NondeterminismError`` (``kind`` ``"nondeterminism"``, ``event_id`` the recorded
    event where they part) or ``NotRegistered`` (``"not_registered"``). ``kv`` is the
    key-value state as the execution left it (the next execution starts with it)."""

    error: DuroxyError | None = None
    kind: str | None = None
    event_id: int | None = None
    kv: dict[str, tuple[str, int]] = field(default_factory=dict)


def _code_history(events: Sequence[HistoryEvent]) -> Sequence[HistoryEvent]:
    """``events`` without an ending a runtime imposed (see the module docstring)."""
    last = events[-1] if events else None
    if isinstance(last, OrchestrationFailed) and last.error_kind in RUNTIME_ENDINGS:
        return events[:-1]
    return events


def replay_execution(orchestrations: OrchestrationRegistry,
                     activities: ActivityRegistry | None, instance_id: str, name: str,
                     version: str | None, events: Sequence[HistoryEvent],
                     kv: Mapping[str, tuple[str, int]] | None = None) -> Replayed:
    """Replay ``events`` (one execution's history, oldest first) with the handler
    ``orchestrations`` registers for ``name`` at ``version`` (the latest when ``None``).
    ``activities``, when given, names the activity functions the code passes and gives
    their registered output types, as on a worker. ``kv`` is the key-value state the
    execution started with (empty when not known)."""
    try:
        entry = orchestrations.resolve(name, version)
    except NotRegistered as e:
        first = events[0].event_id if events else None
        return Replayed(e, "not_registered", first, dict(kv or {}))
    history = _code_history(events)

    def function_name(fn: Callable[..., Any]) -> str:
        found = (activities.name_of(fn) if activities is not None else None) \
            or orchestrations.name_of(fn)
        return found or str(getattr(fn, "__name__", repr(fn)))

    execution = OrchestrationExecution(
        entry.fn, instance_id=instance_id, history=history,
        activity_output_type=activities.output_type if activities is not None else None,
        function_name=function_name, new_guid=lambda: str(uuid.uuid4()), kv=kv)
    execution.quiet = True
    now_us = (history[-1].ts * 1000) if history else 0
    execution.turn([], now_us)
    found = execution.nondeterminism
    if found is not None:
        return Replayed(found, "nondeterminism", execution.diverged_at, dict(execution.kv))
    return Replayed(kv=dict(execution.kv))

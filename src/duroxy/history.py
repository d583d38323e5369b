"""History events: what an orchestration decided and what happened to it.

Every event is an immutable dataclass with a stable wire name (``kind``) kept apart
from the class name, so classes may be renamed without breaking stored histories.
Payload fields (``input``, ``result``, ``data`` ...) hold JSON *text*, exactly as
encoded when the event was first recorded; replay compares those texts.

Wire form: a JSON object ``{"v": FORMAT_VERSION, "k": kind, "id": event_id,
"ts": epoch-milliseconds, <fields>}``. Readers accept every format version up to
their own; unknown kinds and newer versions fail to decode with :class:`PayloadError`.

Correlation: a completion (``ActivityCompleted``, ``TimerFired`` ...) names the
``event_id`` of the event that scheduled its work in ``source_event_id``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from .codec._common import dump_json
from .errors import ErrorDetails, PayloadError

__all__ = [
    "FORMAT_VERSION",
    "ActivityCompleted",
    "ActivityFailedEvent",
    "ActivityScheduled",
    "ActivityWork",
    "CancellationRequested",
    "CustomStatusSet",
    "DetachedOrchestrationScheduled",
    "EventRaised",
    "EventSubscribed",
    "GuidRecorded",
    "HistoryEvent",
    "OrchestrationCancelled",
    "OrchestrationCompleted",
    "OrchestrationContinuedAsNew",
    "OrchestrationFailed",
    "OrchestrationStarted",
    "OrchestratorMessage",
    "SubOrchestrationCompleted",
    "SubOrchestrationFailedEvent",
    "SubOrchestrationScheduled",
    "TimerCreated",
    "TimerFired",
    "UtcNowRecorded",
    "WorkCancelled",
    "decode_event",
    "decode_message",
    "encode_event",
    "encode_message",
    "event_from_json",
    "event_to_json",
]

FORMAT_VERSION = 1

_KINDS: dict[str, type[HistoryEvent]] = {}

#: Optional fields written only when set: a history that does not use them stays
#: byte-identical to one written before they existed (no FORMAT_VERSION bump).
_WRITTEN_WHEN_SET = frozenset({"trace_context"})

# A trace context is metadata about a run, not a decision: its field takes no part in
# equality (so never in replay matching) nor in hashing (it is a mapping).


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryEvent:
    """Base of every history event. ``ts`` is milliseconds since the Unix epoch (UTC)."""

    kind: ClassVar[str] = ""
    #: True for events produced by the orchestration's own decisions (matched on replay).
    is_decision: ClassVar[bool] = False

    event_id: int = 0
    ts: int = 0

    @property
    def timestamp(self) -> datetime:
        return datetime.fromtimestamp(self.ts / 1000.0, UTC)

    def __str__(self) -> str:
        parts = [f"{f.name}={getattr(self, f.name)!r}" for f in _fields(type(self))
                 if f.name not in ("event_id", "ts") and not _unset_optional(self, f.name)]
        return f"{self.kind}#{self.event_id}(" + ", ".join(parts) + ")"


# ----------------------------------------------------------------- lifecycle
@dataclass(frozen=True, slots=True, kw_only=True)
class OrchestrationStarted(HistoryEvent):
    kind: ClassVar[str] = "OrchestrationStarted"
    name: str
    version: str | None = None
    input: str | None = None
    execution_id: int = 1
    parent_instance_id: str | None = None
    parent_execution_id: int | None = None
    parent_event_id: int | None = None
    #: custom status carried over from the previous execution (JSON text)
    custom_status: str | None = None
    #: the W3C trace context (``traceparent``/``tracestate``) the instance continues,
    #: when tracing is on: never part of replay matching (``compare=False``)
    trace_context: dict[str, str] | None = dataclasses.field(default=None, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class OrchestrationCompleted(HistoryEvent):
    kind: ClassVar[str] = "OrchestrationCompleted"
    is_decision: ClassVar[bool] = True
    output: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OrchestrationFailed(HistoryEvent):
    kind: ClassVar[str] = "OrchestrationFailed"
    is_decision: ClassVar[bool] = True
    error_kind: str = "application"
    error_type: str = ""
    message: str = ""

    @property
    def error(self) -> ErrorDetails:
        return ErrorDetails(self.error_kind, self.error_type, self.message)


@dataclass(frozen=True, slots=True, kw_only=True)
class OrchestrationCancelled(HistoryEvent):
    kind: ClassVar[str] = "OrchestrationCancelled"
    is_decision: ClassVar[bool] = True
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class OrchestrationContinuedAsNew(HistoryEvent):
    kind: ClassVar[str] = "OrchestrationContinuedAsNew"
    is_decision: ClassVar[bool] = True
    input: str | None = None
    version: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CancellationRequested(HistoryEvent):
    kind: ClassVar[str] = "CancellationRequested"
    reason: str = ""


# ----------------------------------------------------------------- activities
@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityScheduled(HistoryEvent):
    kind: ClassVar[str] = "ActivityScheduled"
    is_decision: ClassVar[bool] = True
    name: str
    input: str | None = None
    attempt: int = 1
    #: the trace context of the schedule call (every attempt of a retry has the first's)
    trace_context: dict[str, str] | None = dataclasses.field(default=None, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityCompleted(HistoryEvent):
    kind: ClassVar[str] = "ActivityCompleted"
    source_event_id: int
    result: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityFailedEvent(HistoryEvent):
    kind: ClassVar[str] = "ActivityFailed"
    source_event_id: int
    error_type: str = ""
    message: str = ""
    error_kind: str = "application"


# ----------------------------------------------------------------- timers
@dataclass(frozen=True, slots=True, kw_only=True)
class TimerCreated(HistoryEvent):
    kind: ClassVar[str] = "TimerCreated"
    is_decision: ClassVar[bool] = True
    fire_at: int  # epoch milliseconds


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerFired(HistoryEvent):
    kind: ClassVar[str] = "TimerFired"
    source_event_id: int
    fire_at: int = 0


# ----------------------------------------------------------------- external events
@dataclass(frozen=True, slots=True, kw_only=True)
class EventSubscribed(HistoryEvent):
    kind: ClassVar[str] = "EventSubscribed"
    is_decision: ClassVar[bool] = True
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRaised(HistoryEvent):
    kind: ClassVar[str] = "EventRaised"
    name: str
    data: str | None = None


# ----------------------------------------------------------------- sub-orchestrations
@dataclass(frozen=True, slots=True, kw_only=True)
class SubOrchestrationScheduled(HistoryEvent):
    kind: ClassVar[str] = "SubOrchestrationScheduled"
    is_decision: ClassVar[bool] = True
    name: str
    instance_id: str
    input: str | None = None
    version: str | None = None
    #: the trace context the child continues
    trace_context: dict[str, str] | None = dataclasses.field(default=None, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class SubOrchestrationCompleted(HistoryEvent):
    kind: ClassVar[str] = "SubOrchestrationCompleted"
    source_event_id: int
    result: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SubOrchestrationFailedEvent(HistoryEvent):
    kind: ClassVar[str] = "SubOrchestrationFailed"
    source_event_id: int
    error_type: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DetachedOrchestrationScheduled(HistoryEvent):
    kind: ClassVar[str] = "DetachedOrchestrationScheduled"
    is_decision: ClassVar[bool] = True
    name: str
    instance_id: str
    input: str | None = None
    version: str | None = None


# ----------------------------------------------------------------- breadcrumbs, values
@dataclass(frozen=True, slots=True, kw_only=True)
class WorkCancelled(HistoryEvent):
    """The orchestration abandoned scheduled work (a select loser, dropped pending work).

    Recorded so that replay knows the cancellation was already sent.
    """

    kind: ClassVar[str] = "WorkCancelled"
    is_decision: ClassVar[bool] = True
    source_event_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CustomStatusSet(HistoryEvent):
    kind: ClassVar[str] = "CustomStatusSet"
    is_decision: ClassVar[bool] = True
    status: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UtcNowRecorded(HistoryEvent):
    kind: ClassVar[str] = "UtcNowRecorded"
    is_decision: ClassVar[bool] = True
    value_us: int  # microseconds since the Unix epoch


@dataclass(frozen=True, slots=True, kw_only=True)
class GuidRecorded(HistoryEvent):
    kind: ClassVar[str] = "GuidRecorded"
    is_decision: ClassVar[bool] = True
    value: str


# ----------------------------------------------------------------- codec
def _register(*classes: type[HistoryEvent]) -> None:
    for cls in classes:
        if cls.kind in _KINDS:
            raise TypeError(f"duplicate history wire name {cls.kind!r}")
        _KINDS[cls.kind] = cls


_register(
    OrchestrationStarted, OrchestrationCompleted, OrchestrationFailed, OrchestrationCancelled,
    OrchestrationContinuedAsNew, CancellationRequested, ActivityScheduled, ActivityCompleted,
    ActivityFailedEvent, TimerCreated, TimerFired, EventSubscribed, EventRaised,
    SubOrchestrationScheduled, SubOrchestrationCompleted, SubOrchestrationFailedEvent,
    DetachedOrchestrationScheduled, WorkCancelled, CustomStatusSet, UtcNowRecorded, GuidRecorded,
)

_FIELDS: dict[type[Any], tuple[dataclasses.Field[Any], ...]] = {}


def _fields(cls: type[Any]) -> tuple[dataclasses.Field[Any], ...]:
    f = _FIELDS.get(cls)
    if f is None:
        f = _FIELDS[cls] = dataclasses.fields(cls)
    return f


def _unset_optional(obj: object, name: str) -> bool:
    return name in _WRITTEN_WHEN_SET and getattr(obj, name) is None


def _trace_context(value: Any) -> dict[str, str] | None:
    """A stored trace context as read back: a mapping of strings, else nothing (it is
    only ever a hint for tracing, so a malformed one is dropped, not an error)."""
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str)
                                       for k, v in value.items()):
        return value
    return None


def event_to_json(event: HistoryEvent) -> dict[str, Any]:
    out: dict[str, Any] = {"v": FORMAT_VERSION, "k": event.kind, "id": event.event_id,
                           "ts": event.ts}
    for f in _fields(type(event)):
        name = f.name
        if name not in ("event_id", "ts"):
            value = getattr(event, name)
            if value is None and name in _WRITTEN_WHEN_SET:
                continue
            out[name] = value
    return out


def event_from_json(data: Any) -> HistoryEvent:
    if not isinstance(data, dict):
        raise PayloadError(f"history event must be a JSON object, got {type(data).__name__}")
    version = data.get("v", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise PayloadError(
            f"history event format version {version!r} is newer than this duroxy "
            f"understands ({FORMAT_VERSION})")
    kind = data.get("k")
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise PayloadError(f"unknown history event kind {kind!r}")
    kwargs: dict[str, Any] = {"event_id": data.get("id", 0), "ts": data.get("ts", 0)}
    for f in _fields(cls):
        if f.name in data and f.name not in ("event_id", "ts"):
            kwargs[f.name] = data[f.name]
    if "trace_context" in kwargs:
        kwargs["trace_context"] = _trace_context(kwargs["trace_context"])
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise PayloadError(f"malformed {kind} history event: {e}") from None


#: records are written as payloads are (lone surrogates in a message stay storable)
_encode = dump_json


def encode_event(event: HistoryEvent) -> str:
    return _encode(event_to_json(event))


def decode_event(text: str | bytes) -> HistoryEvent:
    try:
        data = json.loads(text)
    except (ValueError, TypeError) as e:
        raise PayloadError(f"history event is not valid JSON: {e}") from None
    return event_from_json(data)


# ----------------------------------------------------------------- queue payloads
@dataclass(frozen=True, slots=True)
class OrchestratorMessage:
    """A message for an instance's orchestration queue.

    ``event`` becomes a history event when a turn consumes it (its ``event_id`` is
    assigned then). ``execution_id`` names the execution it is for; ``None`` means
    whichever execution is current (external events, cancellation).
    ``visible_at`` (epoch seconds) delays delivery, for timers and abandon-with-delay.
    """

    instance_id: str
    event: HistoryEvent
    execution_id: int | None = None
    visible_at: float | None = None


def encode_message(msg: OrchestratorMessage) -> str:
    return _encode({"execution_id": msg.execution_id, "event": event_to_json(msg.event)})


def decode_message(instance_id: str, text: str | bytes,
                   visible_at: float | None = None) -> OrchestratorMessage:
    try:
        data = json.loads(text)
    except (ValueError, TypeError) as e:
        raise PayloadError(f"queued message is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise PayloadError("queued message must be a JSON object")
    return OrchestratorMessage(instance_id, event_from_json(data.get("event")),
                               data.get("execution_id"), visible_at)


@dataclass(frozen=True, slots=True)
class ActivityWork:
    """One activity execution to run: scheduled by ``event_id`` of ``instance_id``'s
    ``execution_id``. ``attempt`` is the retry attempt the orchestration asked for."""

    instance_id: str
    execution_id: int
    event_id: int
    name: str
    input: str | None
    orchestration_name: str
    orchestration_version: str | None
    attempt: int = 1
    #: the trace context of the schedule call, so that the attempt continues its trace
    #: wherever it runs (written only when set)
    trace_context: dict[str, str] | None = dataclasses.field(default=None, compare=False)

    def to_json(self) -> str:
        return _encode({f.name: getattr(self, f.name) for f in _fields(ActivityWork)
                        if not _unset_optional(self, f.name)})

    @classmethod
    def from_json(cls, text: str | bytes) -> ActivityWork:
        try:
            data = json.loads(text)
            if "trace_context" in data:
                data["trace_context"] = _trace_context(data["trace_context"])
            return cls(**data)
        except (ValueError, TypeError) as e:
            raise PayloadError(f"malformed activity work item: {e}") from None

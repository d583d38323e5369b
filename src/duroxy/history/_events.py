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

Optional fields added after a kind was first stored (``ActivityScheduled.session_id``
...) are marked ``optional`` (see :func:`optional`): they are written only when they
differ from their default, so a history that does not use them stays byte-identical,
and a history written before them reads unchanged. They do not bump ``FORMAT_VERSION``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from ..codec import decode as _decode_payload
from ..codec._common import dump_json
from ..errors import ErrorDetails, PayloadError

FORMAT_VERSION = 1

_KINDS: dict[str, type[HistoryEvent]] = {}

#: Field metadata of an optional field: written only when it differs from its default.
_OPTIONAL = {"optional": True}


def optional(default: Any) -> Any:
    """A field added to a kind after it was first stored: omitted from the wire form
    while it holds ``default``, so histories that do not use it keep their bytes (no
    FORMAT_VERSION bump). A trace context is such a field too, and metadata about a run
    rather than a decision: declared with ``compare=False``, it takes no part in
    equality (so never in replay matching) nor in hashing."""
    return dataclasses.field(default=default, metadata=_OPTIONAL)


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryEvent:
    """Base of every history event. ``ts`` is milliseconds since the Unix epoch (UTC)."""

    kind: ClassVar[str] = ""
    #: True for events produced by the orchestration's own decisions (matched on replay).
    is_decision: ClassVar[bool] = False
    #: the field holding the kind's main payload (JSON text), which ``payload`` decodes
    payload_field: ClassVar[str | None] = None

    event_id: int = 0
    ts: int = 0

    @property
    def timestamp(self) -> datetime:
        return datetime.fromtimestamp(self.ts / 1000.0, UTC)

    @property
    def payload(self) -> Any:
        """The decoded JSON value of the kind's payload field (``None`` when the kind
        has none, or the field holds nothing). Raises ``PayloadError`` for text that is
        not JSON."""
        name = self.payload_field
        text = getattr(self, name) if name is not None else None
        return None if text is None else _decode_payload(text)

    def __str__(self) -> str:
        parts = []
        for name, is_optional, default in _wire(type(self)):
            value = getattr(self, name)
            if not (is_optional and value == default):  # unset optional fields: left out
                parts.append(f"{name}={value!r}")
        return f"{self.kind}#{self.event_id}(" + ", ".join(parts) + ")"


# ----------------------------------------------------------------- lifecycle
@dataclass(frozen=True, slots=True, kw_only=True)
class OrchestrationStarted(HistoryEvent):
    kind: ClassVar[str] = "OrchestrationStarted"
    payload_field: ClassVar[str | None] = "input"
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
    trace_context: dict[str, str] | None = dataclasses.field(
        default=None, compare=False, metadata=_OPTIONAL)


@dataclass(frozen=True, slots=True, kw_only=True)
class OrchestrationCompleted(HistoryEvent):
    kind: ClassVar[str] = "OrchestrationCompleted"
    payload_field: ClassVar[str | None] = "output"
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
    payload_field: ClassVar[str | None] = "input"
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
    payload_field: ClassVar[str | None] = "input"
    is_decision: ClassVar[bool] = True
    name: str
    input: str | None = None
    attempt: int = 1
    #: the trace context of the schedule call (every attempt of a retry has the first's)
    trace_context: dict[str, str] | None = dataclasses.field(
        default=None, compare=False, metadata=_OPTIONAL)
    #: the activity session it runs in (one worker runs a session's activities)
    session_id: str | None = optional(None)
    #: the worker tag it needs (only workers whose filter accepts it run it)
    tag: str | None = optional(None)


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityCompleted(HistoryEvent):
    kind: ClassVar[str] = "ActivityCompleted"
    payload_field: ClassVar[str | None] = "result"
    source_event_id: int
    result: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityFailedEvent(HistoryEvent):
    kind: ClassVar[str] = "ActivityFailed"
    source_event_id: int
    error_type: str = ""
    message: str = ""
    error_kind: str = "application"
    #: False when the failure stops the retries (a non-retryable error)
    retryable: bool = optional(True)


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
    payload_field: ClassVar[str | None] = "data"
    name: str
    data: str | None = None


# ----------------------------------------------------------------- sub-orchestrations
@dataclass(frozen=True, slots=True, kw_only=True)
class SubOrchestrationScheduled(HistoryEvent):
    kind: ClassVar[str] = "SubOrchestrationScheduled"
    payload_field: ClassVar[str | None] = "input"
    is_decision: ClassVar[bool] = True
    name: str
    instance_id: str
    input: str | None = None
    version: str | None = None
    #: the trace context the child continues
    trace_context: dict[str, str] | None = dataclasses.field(
        default=None, compare=False, metadata=_OPTIONAL)


@dataclass(frozen=True, slots=True, kw_only=True)
class SubOrchestrationCompleted(HistoryEvent):
    kind: ClassVar[str] = "SubOrchestrationCompleted"
    payload_field: ClassVar[str | None] = "result"
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
    payload_field: ClassVar[str | None] = "input"
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
    payload_field: ClassVar[str | None] = "status"
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


# ----------------------------------------------------------------- event queues
@dataclass(frozen=True, slots=True, kw_only=True)
class QueueSubscribed(HistoryEvent):
    """``ctx.dequeue_event(name)``: the code takes the next message of queue ``name``."""

    kind: ClassVar[str] = "QueueSubscribed"
    is_decision: ClassVar[bool] = True
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueEventDelivered(HistoryEvent):
    """A message of queue ``name`` (``Client.enqueue_event``) reached the instance. It is
    kept, in arrival order, until a dequeue of its queue takes it."""

    kind: ClassVar[str] = "QueueEventDelivered"
    payload_field: ClassVar[str | None] = "data"
    name: str
    data: str | None = None


# ----------------------------------------------------------------- key-value state
@dataclass(frozen=True, slots=True, kw_only=True)
class KeyValueSet(HistoryEvent):
    """``ctx.set_kv_value``. ``updated_at`` is the orchestration time of the set (epoch
    ms); replay compares ``key`` and ``value`` only."""

    kind: ClassVar[str] = "KeyValueSet"
    is_decision: ClassVar[bool] = True
    payload_field: ClassVar[str | None] = "value"
    key: str
    value: str = "null"
    updated_at: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyValueCleared(HistoryEvent):
    kind: ClassVar[str] = "KeyValueCleared"
    is_decision: ClassVar[bool] = True
    key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyValuesCleared(HistoryEvent):
    kind: ClassVar[str] = "KeyValuesCleared"
    is_decision: ClassVar[bool] = True


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyValueReadScheduled(HistoryEvent):
    """``ctx.get_kv_value_from_instance``: a read of another instance's committed KV,
    done once after this turn commits and answered by ``KeyValueReadCompleted``."""

    kind: ClassVar[str] = "KeyValueReadScheduled"
    is_decision: ClassVar[bool] = True
    instance_id: str
    key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyValueReadCompleted(HistoryEvent):
    """The answer of a cross-instance read: ``found`` false when the instance or the key
    did not exist (the code then gets its default)."""

    kind: ClassVar[str] = "KeyValueReadCompleted"
    payload_field: ClassVar[str | None] = "value"
    source_event_id: int
    found: bool = False
    value: str | None = None


# ----------------------------------------------------------------- patching
@dataclass(frozen=True, slots=True, kw_only=True)
class PatchRecorded(HistoryEvent):
    """A patch marker (``ctx.is_patched``/``ctx.deprecate_patch``). Markers are looked up
    by ``change_id``, never matched by position, so it is not a decision."""

    kind: ClassVar[str] = "PatchRecorded"
    change_id: str
    deprecated: bool = False


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
    QueueSubscribed, QueueEventDelivered, KeyValueSet, KeyValueCleared, KeyValuesCleared,
    KeyValueReadScheduled, KeyValueReadCompleted, PatchRecorded,
)

_FIELDS: dict[type[Any], tuple[dataclasses.Field[Any], ...]] = {}


def _fields(cls: type[Any]) -> tuple[dataclasses.Field[Any], ...]:
    f = _FIELDS.get(cls)
    if f is None:
        f = _FIELDS[cls] = dataclasses.fields(cls)
    return f


def _trace_context(value: Any) -> dict[str, str] | None:
    """A stored trace context as read back: a mapping of strings, else nothing (it is
    only ever a hint for tracing, so a malformed one is dropped, not an error)."""
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str)
                                       for k, v in value.items()):
        return value
    return None


#: per class: (field name, whether it is optional, its default), wire order
_WIRE: dict[type[Any], tuple[tuple[str, bool, Any], ...]] = {}


def _wire(cls: type[Any]) -> tuple[tuple[str, bool, Any], ...]:
    w = _WIRE.get(cls)
    if w is None:
        w = _WIRE[cls] = tuple((f.name, bool(f.metadata.get("optional")), f.default)
                               for f in _fields(cls) if f.name not in ("event_id", "ts"))
    return w


def event_to_json(event: HistoryEvent) -> dict[str, Any]:
    out: dict[str, Any] = {"v": FORMAT_VERSION, "k": event.kind, "id": event.event_id,
                           "ts": event.ts}
    for name, is_optional, default in _wire(type(event)):
        value = getattr(event, name)
        if is_optional and value == default:
            continue  # not set: the wire form stays what it was before the field existed
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

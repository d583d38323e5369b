"""Queue payloads: a message on an instance's orchestration queue, and a unit of
activity work. Their events travel in the history's wire form (:mod:`._events`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from ..errors import PayloadError
from ._events import (
    _OPTIONAL,
    HistoryEvent,
    _encode,
    _fields,
    _trace_context,
    event_from_json,
    event_to_json,
    optional,
)


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
    trace_context: dict[str, str] | None = dataclasses.field(
        default=None, compare=False, metadata=_OPTIONAL)
    #: the session and the tag it was scheduled with (written only when set): a store
    #: routes the work by them
    session_id: str | None = optional(None)
    tag: str | None = optional(None)

    def to_json(self) -> str:
        out = {}
        for f in _fields(ActivityWork):
            value = getattr(self, f.name)
            if not (f.metadata.get("optional") and value == f.default):
                out[f.name] = value
        return _encode(out)

    @classmethod
    def from_json(cls, text: str | bytes) -> ActivityWork:
        try:
            data = json.loads(text)
            if "trace_context" in data:
                data["trace_context"] = _trace_context(data["trace_context"])
            return cls(**data)
        except (ValueError, TypeError) as e:
            raise PayloadError(f"malformed activity work item: {e}") from None

"""History: the events an execution records, their wire form, and history files.

* :mod:`~duroxy.history._events`: every event is an immutable dataclass with a stable
  wire name (``kind``); payload fields hold the stored JSON text, which replay compares.
  ``Client.read_history`` returns these events.
* :mod:`~duroxy.history._messages`: the queue payloads (a message for an instance's
  orchestration queue, a unit of activity work), carrying events in their wire form.
* :mod:`~duroxy.history._file`: :class:`ExecutionHistory` (one execution's events, as
  ``Client.export_history`` returns them) and the history file format
  (:func:`dump_histories`, :func:`load_histories`), which ``duroxy export`` writes and
  the replayer of :mod:`duroxy.testing` reads.
"""

from __future__ import annotations

from ._events import (
    _KINDS,
    FORMAT_VERSION,
    ActivityCompleted,
    ActivityFailedEvent,
    ActivityScheduled,
    CancellationRequested,
    CustomStatusSet,
    DetachedOrchestrationScheduled,
    EventRaised,
    EventSubscribed,
    GuidRecorded,
    HistoryEvent,
    KeyValueCleared,
    KeyValueReadCompleted,
    KeyValueReadScheduled,
    KeyValuesCleared,
    KeyValueSet,
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
    UtcNowRecorded,
    WorkCancelled,
    decode_event,
    encode_event,
    event_from_json,
    event_to_json,
    optional,
)
from ._file import (
    HISTORY_FILE_FORMAT,
    HISTORY_FILE_VERSION,
    ExecutionHistory,
    dump_histories,
    load_histories,
)
from ._messages import ActivityWork, OrchestratorMessage, decode_message, encode_message

__all__ = [
    "FORMAT_VERSION",
    "HISTORY_FILE_FORMAT",
    "HISTORY_FILE_VERSION",
    "ActivityCompleted",
    "ActivityFailedEvent",
    "ActivityScheduled",
    "ActivityWork",
    "CancellationRequested",
    "CustomStatusSet",
    "DetachedOrchestrationScheduled",
    "EventRaised",
    "EventSubscribed",
    "ExecutionHistory",
    "GuidRecorded",
    "HistoryEvent",
    "KeyValueCleared",
    "KeyValueReadCompleted",
    "KeyValueReadScheduled",
    "KeyValueSet",
    "KeyValuesCleared",
    "OrchestrationCancelled",
    "OrchestrationCompleted",
    "OrchestrationContinuedAsNew",
    "OrchestrationFailed",
    "OrchestrationStarted",
    "OrchestratorMessage",
    "PatchRecorded",
    "QueueEventDelivered",
    "QueueSubscribed",
    "SubOrchestrationCompleted",
    "SubOrchestrationFailedEvent",
    "SubOrchestrationScheduled",
    "TimerCreated",
    "TimerFired",
    "UtcNowRecorded",
    "WorkCancelled",
    "decode_event",
    "decode_message",
    "dump_histories",
    "encode_event",
    "encode_message",
    "event_from_json",
    "event_to_json",
    "load_histories",
]

#: (kept importable: the registry of wire names, read by tests)
_ = (_KINDS, optional)

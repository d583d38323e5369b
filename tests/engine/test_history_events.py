"""History events as ``read_history`` returns them (API.md section 10, "History events,
typed"): every kind's common fields, the ``payload`` property, ``str()``, the kinds of
queues, KV and patches, and optional fields that keep older histories byte-identical."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import pytest

import duroxy.history as history
from duroxy import PayloadError
from duroxy.history import (
    ActivityFailedEvent,
    ActivityScheduled,
    HistoryEvent,
    KeyValueReadCompleted,
    KeyValueSet,
    PatchRecorded,
    QueueEventDelivered,
    QueueSubscribed,
    decode_event,
    encode_event,
    event_from_json,
)
from duroxy.history._events import _KINDS

#: every kind and a sample of it with each payload field set
SAMPLES: dict[str, HistoryEvent] = {
    "OrchestrationStarted": history.OrchestrationStarted(name="n", input='{"a":1}'),
    "OrchestrationCompleted": history.OrchestrationCompleted(output='"done"'),
    "OrchestrationFailed": history.OrchestrationFailed(error_type="E", message="m"),
    "OrchestrationCancelled": history.OrchestrationCancelled(reason="r"),
    "OrchestrationContinuedAsNew": history.OrchestrationContinuedAsNew(input="[1]"),
    "CancellationRequested": history.CancellationRequested(reason="r"),
    "ActivityScheduled": ActivityScheduled(name="a", input="2"),
    "ActivityCompleted": history.ActivityCompleted(source_event_id=2, result="3"),
    "ActivityFailed": ActivityFailedEvent(source_event_id=2, error_type="E", message="m"),
    "TimerCreated": history.TimerCreated(fire_at=5),
    "TimerFired": history.TimerFired(source_event_id=2, fire_at=5),
    "EventSubscribed": history.EventSubscribed(name="e"),
    "EventRaised": history.EventRaised(name="e", data="true"),
    "SubOrchestrationScheduled": history.SubOrchestrationScheduled(
        name="c", instance_id="i", input="4"),
    "SubOrchestrationCompleted": history.SubOrchestrationCompleted(source_event_id=2,
                                                                   result="5"),
    "SubOrchestrationFailed": history.SubOrchestrationFailedEvent(source_event_id=2),
    "DetachedOrchestrationScheduled": history.DetachedOrchestrationScheduled(
        name="d", instance_id="j", input="6"),
    "WorkCancelled": history.WorkCancelled(source_event_id=2),
    "CustomStatusSet": history.CustomStatusSet(status='{"s":7}'),
    "UtcNowRecorded": history.UtcNowRecorded(value_us=1),
    "GuidRecorded": history.GuidRecorded(value="g"),
    "QueueSubscribed": QueueSubscribed(name="q"),
    "QueueEventDelivered": QueueEventDelivered(name="q", data='"msg"'),
    "KeyValueSet": KeyValueSet(key="k", value="[8]", updated_at=9),
    "KeyValueCleared": history.KeyValueCleared(key="k"),
    "KeyValuesCleared": history.KeyValuesCleared(),
    "KeyValueReadScheduled": history.KeyValueReadScheduled(instance_id="p", key="k"),
    "KeyValueReadCompleted": KeyValueReadCompleted(source_event_id=2, found=True, value="10"),
    "PatchRecorded": PatchRecorded(change_id="add-check"),
}
PAYLOADS = {"OrchestrationStarted": {"a": 1}, "OrchestrationCompleted": "done",
            "OrchestrationContinuedAsNew": [1], "ActivityScheduled": 2,
            "ActivityCompleted": 3, "EventRaised": True, "SubOrchestrationScheduled": 4,
            "SubOrchestrationCompleted": 5, "DetachedOrchestrationScheduled": 6,
            "CustomStatusSet": {"s": 7}, "QueueEventDelivered": "msg", "KeyValueSet": [8],
            "KeyValueReadCompleted": 10}
DECISIONS = {"OrchestrationCompleted", "OrchestrationFailed", "OrchestrationCancelled",
             "OrchestrationContinuedAsNew", "ActivityScheduled", "TimerCreated",
             "EventSubscribed", "SubOrchestrationScheduled", "DetachedOrchestrationScheduled",
             "WorkCancelled", "CustomStatusSet", "UtcNowRecorded", "GuidRecorded",
             "QueueSubscribed", "KeyValueSet", "KeyValueCleared", "KeyValuesCleared",
             "KeyValueReadScheduled"}
COMPLETIONS = {"ActivityCompleted", "ActivityFailed", "TimerFired",
               "SubOrchestrationCompleted", "SubOrchestrationFailed", "WorkCancelled",
               "KeyValueReadCompleted"}


def test_the_kinds_are_the_seeds_21_and_the_8_new_ones() -> None:
    assert set(_KINDS) == set(SAMPLES)
    assert len(SAMPLES) == 29


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_every_event_has_the_common_fields(kind: str) -> None:
    event = dataclasses.replace(SAMPLES[kind], event_id=4, ts=1_700_000_000_123)
    assert (event.kind, event.event_id, event.ts) == (kind, 4, 1_700_000_000_123)
    assert event.timestamp == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)
    assert event.is_decision is (kind in DECISIONS)
    assert event.payload == PAYLOADS.get(kind)
    assert hasattr(event, "source_event_id") is (kind in COMPLETIONS)
    text = str(event)
    assert text.startswith(f"{kind}#4(")
    for f in dataclasses.fields(event):
        if f.name not in ("event_id", "ts") and not f.metadata.get("optional"):
            assert f"{f.name}=" in text, (f.name, text)
    assert decode_event(encode_event(event)) == event


def test_payload_of_a_kind_whose_payload_is_unset_is_none() -> None:
    assert history.OrchestrationCompleted().payload is None
    assert KeyValueReadCompleted(source_event_id=1).payload is None


def test_optional_fields_are_written_only_when_set() -> None:
    plain = ActivityScheduled(event_id=2, ts=1, name="a", input="1")
    text = encode_event(plain)
    assert text == '{"v":1,"k":"ActivityScheduled","id":2,"ts":1,"name":"a","input":"1",' \
                   '"attempt":1}'
    assert "session_id" not in str(plain)
    routed = dataclasses.replace(plain, session_id="s-1", tag="gpu")
    assert json.loads(encode_event(routed))["tag"] == "gpu"
    assert decode_event(encode_event(routed)) == routed
    assert "tag='gpu'" in str(routed)
    failed = ActivityFailedEvent(event_id=3, ts=1, source_event_id=2, error_type="E")
    assert "retryable" not in encode_event(failed)
    final = dataclasses.replace(failed, retryable=False)
    assert json.loads(encode_event(final))["retryable"] is False
    assert decode_event(encode_event(final)).retryable is False  # type: ignore[attr-defined]
    # a history written before the fields existed reads unchanged
    assert decode_event(text) == plain and decode_event(text).tag is None  # type: ignore[attr-defined]


@pytest.mark.parametrize("data", [
    {"v": 1, "k": "NoSuchKind", "id": 1, "ts": 0},
    {"v": 2, "k": "QueueSubscribed", "id": 1, "ts": 0, "name": "q"},
    {"v": 1, "k": "KeyValueSet", "id": 1, "ts": 0},  # no key
])
def test_unknown_kinds_newer_versions_and_malformed_events_are_payload_errors(
        data: dict[str, Any]) -> None:
    with pytest.raises(PayloadError):
        event_from_json(data)


def test_patch_markers_are_not_decisions() -> None:
    marker = PatchRecorded(change_id="c", deprecated=True)
    assert not marker.is_decision and marker.payload is None
    assert decode_event(encode_event(marker)) == marker

"""How instances, history events and workers are shown to people and scripts: the
command line's output, and the example application's report of what happened.

``*_json`` give JSON objects (payload fields decoded); ``format_*`` give lines of text.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .client import InstanceInfo, OrchestrationState, WorkerInfo
from .history import HistoryEvent

__all__ = [
    "PAYLOAD_FIELDS",
    "ago",
    "dumps",
    "event_json",
    "format_instance",
    "format_timeline",
    "human_time",
    "instance_json",
    "iso",
    "name_at",
    "short",
    "worker_json",
    "worker_state",
]

PAYLOAD_FIELDS = frozenset({"input", "output", "result", "data", "status", "value"})


def dumps(value: Any, *, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent, default=str,
                      separators=None if indent else (",", ":"))


def short(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters (``...`` marks the cut); width 0: uncut."""
    text = " ".join(text.split()) if "\n" in text else text
    return text if width <= 0 or len(text) <= width else text[:max(width - 3, 1)] + "..."


def iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(UTC).isoformat(timespec="milliseconds")


def human_time(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def instance_json(info: InstanceInfo) -> dict[str, Any]:
    """An instance as a JSON object (``status``/``list``/``start --wait`` with ``--json``)."""
    return {
        "instance_id": info.instance_id, "name": info.name, "version": info.version,
        "state": info.state.value, "execution_id": info.execution_id,
        "created_at": iso(info.created_at), "updated_at": iso(info.updated_at),
        "parent_instance_id": info.parent_instance_id, "custom_status": info.custom_status,
        "custom_status_version": info.custom_status_version, "output": info.output,
        "error": None if info.error is None else info.error.to_json(),
    }


def name_at(name: str, version: str | None) -> str:
    return f"{name}@{version}" if version else name


def format_instance(info: InstanceInfo) -> list[str]:
    """An instance as aligned ``label  value`` lines."""
    rows: list[tuple[str, str]] = [
        ("instance", info.instance_id),
        ("name", name_at(info.name, info.version)),
        ("state", info.state.value),
        ("execution", str(info.execution_id)),
        ("created", human_time(info.created_at)),
        ("updated", human_time(info.updated_at)),
    ]
    if info.parent_instance_id:
        rows.append(("parent", info.parent_instance_id))
    if info.custom_status is not None:
        rows.append(("custom", dumps(info.custom_status)))
    if info.custom_status_version:
        rows.append(("custom-v", str(info.custom_status_version)))  # its version
    if info.state is OrchestrationState.COMPLETED:
        rows.append(("output", dumps(info.output)))
    if info.error is not None:
        rows.append(("error", f"{info.error} [{info.error.kind}]"))
    return [f"{label:<10} {value}" for label, value in rows]


# ====================================================================== history
def event_json(event: HistoryEvent) -> dict[str, Any]:
    """A history event as a JSON object; payload fields decoded to JSON values."""
    out: dict[str, Any] = {"event_id": event.event_id, "kind": event.kind,
                           "timestamp": iso(event.timestamp)}
    for f in dataclasses.fields(event):
        if f.name in ("event_id", "ts"):
            continue
        value = getattr(event, f.name)
        if f.metadata.get("optional") and value == f.default:
            continue  # a field added later and not set (a trace context too): left out
        if f.name in PAYLOAD_FIELDS and isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        out[f.name] = value
    return out


def event_details(ev: HistoryEvent, width: int) -> str:
    """The interesting fields of one event, for people."""
    def get(name: str) -> Any:
        return getattr(ev, name, None)

    def payload(name: str, label: str | None = None) -> str:
        text = get(name)
        shown = "null" if text is None else short(str(text), width)
        return f"{label or name}={shown}"

    kind = ev.kind
    src = f"<- #{get('source_event_id')}" if get("source_event_id") is not None else ""
    parts: list[str]
    if kind == "OrchestrationStarted":
        parts = [name_at(get("name"), get("version")), payload("input")]
        if get("execution_id") != 1:
            parts.append(f"execution={get('execution_id')}")
        if get("parent_instance_id"):
            parts.append(f"parent={get('parent_instance_id')}")
    elif kind == "OrchestrationCompleted":
        parts = [payload("output")]
    elif kind in ("OrchestrationFailed", "ActivityFailed", "SubOrchestrationFailed"):
        parts = [src] if src else []
        error_kind = get("error_kind")
        if error_kind and error_kind != "application":
            parts.append(f"[{error_kind}]")
        parts.append(short(f"{get('error_type')}: {get('message')}", width))
    elif kind in ("OrchestrationCancelled", "CancellationRequested"):
        parts = [f"reason={get('reason')!r}"] if get("reason") else []
    elif kind == "OrchestrationContinuedAsNew":
        parts = [payload("input")]
        if get("version"):
            parts.append(f"version={get('version')}")
    elif kind == "ActivityScheduled":
        parts = [get("name"), payload("input")]
        if get("attempt") != 1:
            parts.append(f"attempt={get('attempt')}")
        for optional in ("session_id", "tag"):
            if get(optional) is not None:
                parts.append(f"{optional}={get(optional)}")
    elif kind in ("ActivityCompleted", "SubOrchestrationCompleted"):
        parts = [src, payload("result")]
    elif kind == "TimerCreated":
        delay = (int(get("fire_at")) - ev.ts) / 1000.0
        parts = [f"fires in {delay:.3f}s"]
    elif kind in ("TimerFired", "WorkCancelled"):
        parts = [src]
    elif kind == "EventSubscribed":
        parts = [str(get("name"))]
    elif kind == "EventRaised":
        parts = [str(get("name")), payload("data")]
    elif kind == "QueueSubscribed":
        parts = [f"queue={get('name')}"]
    elif kind == "QueueEventDelivered":
        parts = [f"queue={get('name')}", payload("data")]
    elif kind == "KeyValueSet":
        parts = [str(get("key")), payload("value")]
    elif kind == "KeyValueCleared":
        parts = [str(get("key"))]
    elif kind == "KeyValueReadScheduled":
        parts = [f"{get('instance_id')}:{get('key')}"]
    elif kind == "KeyValueReadCompleted":
        parts = [src, payload("value") if get("found") else "(not found)"]
    elif kind == "PatchRecorded":
        parts = [str(get("change_id"))] + (["deprecated"] if get("deprecated") else [])
    elif kind in ("SubOrchestrationScheduled", "DetachedOrchestrationScheduled"):
        parts = [name_at(get("name"), get("version")), f"id={get('instance_id')}",
                 payload("input")]
    elif kind == "CustomStatusSet":
        parts = [payload("status")]
    elif kind == "UtcNowRecorded":
        parts = [iso(datetime.fromtimestamp(int(get("value_us")) / 1e6, UTC)) or ""]
    elif kind == "GuidRecorded":
        parts = [str(get("value"))]
    else:  # a kind this CLI does not know yet: every field
        parts = [f"{k}={short(dumps(v), width)}" for k, v in event_json(ev).items()
                 if k not in ("event_id", "kind", "timestamp")]
    return " ".join(p for p in parts if p)


def format_timeline(events: Sequence[HistoryEvent], *, width: int = 60,
                    indent: str = "", id_width: int = 0) -> list[str]:
    """One line per event: id, time since the first event, kind, interesting fields
    (payloads cut to ``width`` characters; 0 keeps them whole). Ids take at least
    ``id_width`` columns (a timeline printed as it grows keeps its columns)."""
    if not events:
        return [f"{indent}(no events)"]
    t0 = events[0].ts
    id_width = max(len(str(events[-1].event_id)), id_width)
    return [f"{indent}{ev.event_id:>{id_width}}  {f'+{(ev.ts - t0) / 1000:.3f}s':>9}  "
            f"{ev.kind:<30} {event_details(ev, width)}".rstrip() for ev in events]



def worker_json(info: WorkerInfo) -> dict[str, Any]:
    """A worker as a JSON object (``workers --json``): every ``WorkerInfo`` field."""
    out = {f.name: getattr(info, f.name) for f in dataclasses.fields(info)}
    for name in ("started_at", "last_seen_at", "stopped_at"):
        out[name] = iso(out[name])
    out["orchestrations"], out["activities"] = list(info.orchestrations), list(info.activities)
    return out


def worker_state(info: WorkerInfo) -> str:
    if info.stopped_at is not None:
        return "stopped"
    return "alive" if info.alive else "silent"  # silent: not seen lately, maybe dead


def ago(dt: datetime, now: datetime) -> str:
    secs = max((now - dt).total_seconds(), 0.0)
    if secs < 120:
        return f"{secs:.1f} s ago"
    if secs < 7200:
        return f"{secs / 60:.0f} min ago"
    return f"{secs / 3600:.1f} h ago"

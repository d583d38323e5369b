"""What the dashboard's pages show, read through the public ``Client`` only: instances
filtered, counted and paged; an instance's executions as timelines; its tree.

Filters the client does not offer (an id prefix, a creation time range) are applied
here over the client's listing, scanned in chunks; so are the counts by state. A scan
stops at ``SCAN_LIMIT`` instances, and the page says so.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .._render import PAYLOAD_FIELDS, dumps
from ..client import Client, InstanceInfo, OrchestrationState
from ..errors import InstanceNotFound
from ..history import (
    ActivityCompleted,
    ActivityFailedEvent,
    ActivityScheduled,
    EventRaised,
    EventSubscribed,
    HistoryEvent,
    SubOrchestrationCompleted,
    SubOrchestrationFailedEvent,
    SubOrchestrationScheduled,
    TimerCreated,
    TimerFired,
)

__all__ = ["PAGE_SIZE", "Filters", "Listing", "Timeline", "list_page", "timeline", "tree"]

#: instances on one page of the list
PAGE_SIZE = 50
#: the most instances one listing scans (for its filters and counts)
SCAN_LIMIT = 100_000
_CHUNK = 1000
#: the most instances an instance tree shows
TREE_LIMIT = 500
STATES = [s.value for s in OrchestrationState if s is not OrchestrationState.NOT_FOUND]


@dataclass(frozen=True)
class Filters:
    state: str | None = None
    name: str | None = None
    prefix: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None

    def matches(self, info: InstanceInfo) -> bool:
        if self.prefix and not info.instance_id.startswith(self.prefix):
            return False
        if self.created_after is not None and info.created_at < self.created_after:
            return False
        return not (self.created_before is not None and info.created_at >= self.created_before)


@dataclass
class Listing:
    items: list[InstanceInfo]
    page: int
    pages: int
    total: int
    counts: dict[str, int]
    #: the scan stopped at SCAN_LIMIT: counts and pages are of that many
    truncated: bool


def parse_time(text: str | None) -> datetime | None:
    """A time from the list's filter form (``YYYY-MM-DDTHH:MM``, read as UTC), or
    ``None`` for an empty field. ``ValueError`` for anything else."""
    if not text:
        return None
    dt = datetime.fromisoformat(text)
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


async def _scan(client: Client, name: str | None) -> AsyncIterator[InstanceInfo]:
    """Every instance (of ``name``), oldest first, in chunks."""
    offset = 0
    while True:
        chunk = await client.list_instances(name=name, limit=_CHUNK, offset=offset)
        for info in chunk:
            yield info
        if len(chunk) < _CHUNK:
            return
        offset += len(chunk)


async def list_page(client: Client, filters: Filters, page: int) -> Listing:
    """One page of the instances matching ``filters``, newest first, with the counts by
    state of those matching every filter but the state."""
    counts = dict.fromkeys(STATES, 0)
    matching: list[InstanceInfo] = []
    seen = 0
    truncated = False
    async for info in _scan(client, filters.name):
        seen += 1
        if seen > SCAN_LIMIT:
            truncated = True
            break
        if not filters.matches(info):
            continue
        counts[info.state.value] = counts.get(info.state.value, 0) + 1
        if filters.state is None or info.state.value == filters.state:
            matching.append(info)
    matching.sort(key=lambda i: (i.created_at, i.instance_id), reverse=True)
    pages = max(1, -(-len(matching) // PAGE_SIZE))
    page = min(max(page, 0), pages - 1)
    return Listing(matching[page * PAGE_SIZE:(page + 1) * PAGE_SIZE], page, pages,
                   len(matching), counts, truncated)


# ====================================================================== the tree
@dataclass
class TreeNode:
    info: InstanceInfo
    children: list[TreeNode] = field(default_factory=list)


async def tree(client: Client, root: InstanceInfo) -> tuple[TreeNode, bool]:
    """The instance and its descendants (children of every execution), breadth first
    in creation order; at most ``TREE_LIMIT`` of them (the flag tells it stopped)."""
    top = TreeNode(root)
    queue = [top]
    count = 1
    while queue:
        node = queue.pop(0)
        children = await client.list_instances(parent_instance_id=node.info.instance_id,
                                               limit=TREE_LIMIT, offset=0)
        for info in children:
            if count >= TREE_LIMIT:
                return top, True
            child = TreeNode(info)
            node.children.append(child)
            queue.append(child)
            count += 1
    return top, False


async def parent_of(client: Client, info: InstanceInfo) -> InstanceInfo | None:
    if info.parent_instance_id is None:
        return None
    try:
        return await client.get_instance_info(info.parent_instance_id)
    except InstanceNotFound:
        return None


# ====================================================================== timelines
@dataclass
class Bar:
    """A span (work from its schedule to its completion) or a point (an event)."""

    label: str
    kind: str  # activity, timer, sub_orchestration, wait, event, lifecycle
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
    for name in ("name", "instance_id", "source_event_id", "attempt", "fire_at", "error_kind",
                 "error_type", "message", "reason", "input", "result", "output", "data",
                 "status", "version", "value", "value_us"):
        value = getattr(event, name, None)
        if value is None or (name == "attempt" and value == 1):
            continue
        if name in PAYLOAD_FIELDS or name == "result":
            value = _payload(value)
        parts.append(f"{name}={value}")
    return ", ".join(parts)


def timeline(execution_id: int, events: Sequence[HistoryEvent], now_ms: int,
             running: bool) -> Timeline:
    """One execution's history as rows: activities, timers and children as spans from
    their schedule to their completion (open ones reach to now while it runs), waits
    and events as points."""
    rows: list[Bar] = []
    by_source: dict[int, Bar] = {}
    for ev in events:
        if isinstance(ev, ActivityScheduled):
            bar = Bar(f"activity {ev.name}" + (f" (attempt {ev.attempt})" if ev.attempt > 1
                                               else ""), "activity", ev.ts, None, open=True,
                      detail=f"input={_payload(ev.input)}")
        elif isinstance(ev, TimerCreated):
            bar = Bar("timer", "timer", ev.ts, None, open=True,
                      detail=f"fires at {datetime.fromtimestamp(ev.fire_at / 1000, UTC)}")
        elif isinstance(ev, SubOrchestrationScheduled):
            bar = Bar(f"child {ev.name}", "sub_orchestration", ev.ts, None, open=True,
                      detail=ev.instance_id, link=ev.instance_id)
        elif isinstance(ev, EventSubscribed):
            rows.append(Bar(f"waits for {ev.name}", "wait", ev.ts, None))
            continue
        elif isinstance(ev, (ActivityCompleted, ActivityFailedEvent, TimerFired,
                             SubOrchestrationCompleted, SubOrchestrationFailedEvent)):
            done = by_source.get(ev.source_event_id)
            if done is not None:
                done.end_ms, done.open = ev.ts, False
                done.failed = isinstance(ev, (ActivityFailedEvent, SubOrchestrationFailedEvent))
                if isinstance(ev, (ActivityFailedEvent, SubOrchestrationFailedEvent)):
                    done.detail += f" → {ev.error_type}: {_payload(ev.message)}"
                elif isinstance(ev, (ActivityCompleted, SubOrchestrationCompleted)):
                    done.detail += f" → {_payload(ev.result)}"
            continue
        elif isinstance(ev, EventRaised):
            rows.append(Bar(f"event {ev.name}", "event", ev.ts, None,
                            detail=f"data={_payload(ev.data)}"))
            continue
        elif ev.kind.startswith("Orchestration") or ev.kind in ("CancellationRequested",
                                                                "CustomStatusSet"):
            rows.append(Bar(ev.kind, "lifecycle", ev.ts, None, detail=_event_fields(ev),
                            failed=ev.kind == "OrchestrationFailed"))
            continue
        else:
            continue
        by_source[ev.event_id] = bar
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

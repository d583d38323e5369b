"""What a ``Client`` hands back: instance states, statuses, listings and worker rows.

Frozen values built from the store's records; times are timezone-aware (UTC) and
payloads decoded JSON values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import codec
from .errors import ErrorDetails
from .providers.base import TERMINAL_STATES, InstanceRecord, WorkerRecord

__all__ = ["InstanceInfo", "InstancePage", "OrchestrationState", "OrchestrationStatus",
           "WorkerInfo", "decode_plain", "instance_info", "worker_info"]


class OrchestrationState(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    NOT_FOUND = "NOT_FOUND"

    @property
    def is_terminal(self) -> bool:
        return self.value in TERMINAL_STATES


@dataclass(frozen=True, slots=True)
class OrchestrationStatus:
    """An instance's state as a client sees it. ``output`` and ``custom_status`` are
    decoded JSON values; ``error`` is set for FAILED and CANCELLED instances."""

    instance_id: str
    state: OrchestrationState
    output: Any = None
    error: ErrorDetails | None = None
    custom_status: Any = None
    name: str | None = None
    version: str | None = None
    execution_id: int | None = None
    #: committed turns that set the custom status (0 until the first set)
    custom_status_version: int = 0

    @property
    def is_terminal(self) -> bool:
        """COMPLETED, FAILED or CANCELLED."""
        return self.state.is_terminal


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    instance_id: str
    name: str
    version: str | None
    state: OrchestrationState
    execution_id: int
    created_at: datetime
    updated_at: datetime
    parent_instance_id: str | None
    output: Any = None
    error: ErrorDetails | None = None
    custom_status: Any = None
    custom_status_version: int = 0


@dataclass(frozen=True, slots=True)
class InstancePage:
    """One page of ``Client.list_instances_page``: ``next_page_token`` is set whenever
    more instances match (pass it back, with the same filters, for the next page)."""

    items: tuple[InstanceInfo, ...]
    next_page_token: str | None = None


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A runtime as its heartbeat row shows it (``Client.list_workers``). Times are
    timezone-aware (UTC); ``stopped_at`` is set once it shut down. ``orchestrations``
    lists ``"name@version"`` for every version it has registered, ``activities`` the
    activity names: during a rolling deploy they show which worker runs what. ``alive``:
    not stopped, and seen within three of its own heartbeat intervals (a worker that
    died just stops being seen). ``worker_node_id``, ``tag_filter`` and
    ``sessions_owned`` describe activity routing."""

    worker_id: str
    worker_node_id: str | None
    host: str
    pid: int
    duroxy_version: str
    started_at: datetime
    last_seen_at: datetime
    stopped_at: datetime | None
    orchestration_concurrency: int
    activity_concurrency: int
    tag_filter: str
    sessions_owned: int
    active_activities: int
    orchestrations: tuple[str, ...]
    activities: tuple[str, ...]
    alive: bool


def worker_info(rec: WorkerRecord, now: float) -> WorkerInfo:
    return WorkerInfo(
        worker_id=rec.worker_id, worker_node_id=rec.worker_node_id, host=rec.host,
        pid=rec.pid, duroxy_version=rec.duroxy_version, started_at=_to_dt(rec.started_at),
        last_seen_at=_to_dt(rec.last_seen_at),
        stopped_at=None if rec.stopped_at is None else _to_dt(rec.stopped_at),
        orchestration_concurrency=rec.orchestration_concurrency,
        activity_concurrency=rec.activity_concurrency, tag_filter=rec.tag_filter,
        sessions_owned=rec.sessions_owned, active_activities=rec.active_activities,
        orchestrations=tuple(rec.orchestrations), activities=tuple(rec.activities),
        alive=rec.alive_at(now))


def decode_plain(text: str | None) -> Any:
    return None if text is None else codec.decode(text)


def _to_dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def instance_info(rec: InstanceRecord) -> InstanceInfo:
    return InstanceInfo(
        instance_id=rec.instance_id, name=rec.name, version=rec.version,
        state=OrchestrationState(rec.state), execution_id=rec.execution_id,
        created_at=_to_dt(rec.created_at), updated_at=_to_dt(rec.updated_at),
        parent_instance_id=rec.parent_instance_id, output=decode_plain(rec.output),
        error=rec.error, custom_status=decode_plain(rec.custom_status),
        custom_status_version=rec.custom_status_version)

"""Worker heartbeats in the PostgreSQL store: a part of PostgresProvider (see
``sql/workers.sql``). Each call is one statement."""

from __future__ import annotations

from typing import Any, Protocol

from ..base import WorkerRecord
from ._marshal import key as _key

__all__ = ["Heartbeats"]

Row = tuple[Any, ...]


class _Host(Protocol):
    """What these calls use of the provider."""

    async def _rows(self, name: str, params: dict[str, Any]) -> list[Row]: ...

    def _writable(self, operation: str) -> None: ...


class Heartbeats:
    """Mixed into PostgresProvider."""

    async def record_heartbeat(self: _Host, worker: WorkerRecord, *,
                               forget_before: float | None = None) -> None:
        self._writable("record_heartbeat")
        await self._rows("record_heartbeat", {
            "key": _key(worker.worker_id), "worker_id": worker.worker_id,
            "worker_node_id": worker.worker_node_id, "host": worker.host,
            "pid": worker.pid, "duroxy_version": worker.duroxy_version,
            "started_at": worker.started_at, "last_seen_at": worker.last_seen_at,
            "stopped_at": worker.stopped_at, "heartbeat_interval": worker.heartbeat_interval,
            "orchestration_concurrency": worker.orchestration_concurrency,
            "activity_concurrency": worker.activity_concurrency,
            "tag_filter": worker.tag_filter, "sessions_owned": worker.sessions_owned,
            "active_activities": worker.active_activities,
            "orchestrations": list(worker.orchestrations),
            "activities": list(worker.activities), "forget_before": forget_before})

    async def list_workers(self: _Host, *, include_stopped: bool = False
                           ) -> list[WorkerRecord]:
        rows = await self._rows("list_workers", {"all": include_stopped})
        return [WorkerRecord(
            worker_id=wid, worker_node_id=node, host=host, pid=int(pid),
            duroxy_version=version, started_at=started, last_seen_at=seen,
            stopped_at=stopped, heartbeat_interval=every,
            orchestration_concurrency=int(orch_n), activity_concurrency=int(act_n),
            tag_filter=tags, sessions_owned=int(sessions), active_activities=int(active),
            orchestrations=tuple(orchs), activities=tuple(acts))
            for (wid, node, host, pid, version, started, seen, stopped, every, orch_n,
                 act_n, tags, sessions, active, orchs, acts) in rows]

"""Reads and management calls of the PostgreSQL store: a part of PostgresProvider,
kept apart from the queues. Each read is one statement; deleting and purging run their
two statements in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg

from ...history import HistoryEvent, decode_event
from ...options import TagFilter
from .._finals import FinalRecords
from ..base import (
    TERMINAL_STATES,
    DeleteCounts,
    ExecutionRecord,
    InstanceRecord,
    InstanceStats,
    KvEntry,
)
from ..pending import PendingWorkReport
from ._marshal import key as _key
from ._marshal import kv_base_from_json, record

__all__ = ["Management"]

Row = tuple[Any, ...]
Conn = psycopg.AsyncConnection[Row]



class _Host(Protocol):
    """What these calls use of the provider."""

    _finals: FinalRecords

    def _writable(self, operation: str) -> None: ...

    async def _rows(self, name: str, params: dict[str, Any]) -> list[Row]: ...

    async def _execute(self, name: str, params: dict[str, Any], conn: Conn | None = None
                       ) -> psycopg.AsyncCursor[Row]: ...

    def _transaction(self) -> AbstractAsyncContextManager[Conn]: ...


def _when(epoch: float | None) -> datetime | None:
    """An epoch as PostgreSQL's timestamptz holds it (exact to the microsecond: a time
    read back as a float epoch converts back to the very value stored)."""
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def _states(state: str | Sequence[str] | None) -> list[str] | None:
    if state is None:
        return None
    return [state] if isinstance(state, str) else list(state)


class Management:
    """Mixed into PostgresProvider."""

    async def get_instance(self: _Host, instance_id: str) -> InstanceRecord | None:
        final = self._finals.take(instance_id)
        if final is not None:
            return final
        rows = await self._rows("get_instance", {"key": _key(instance_id)})
        return record(rows[0]) if rows else None

    async def read_history(
        self: _Host, instance_id: str, execution_id: int | None = None
    ) -> list[HistoryEvent]:
        rows = await self._rows("read_history",
                                {"key": _key(instance_id), "execution_id": execution_id})
        # decode_event raises PayloadError for an undecodable stored event
        return [decode_event(r[0]) for r in rows]

    async def pending_work(self: _Host, accepts: TagFilter | None = None
                           ) -> PendingWorkReport:
        """See :class:`~duroxy.providers.pending.PendingWork` (the database's clock)."""
        [(held, due)] = await self._rows("pending_work", {
            "all": accepts is None,
            "default": accepts is not None and accepts.include_default,
            "any": accepts is not None and accepts.any_tag,
            "tags": sorted(accepts.tags) if accepts is not None else []})
        return PendingWorkReport(int(held), None if due is None else float(due))

    async def list_executions(self: _Host, instance_id: str) -> list[int]:
        rows = await self._rows("list_executions", {"key": _key(instance_id)})
        return [int(r[0]) for r in rows]

    async def list_instances(
        self: _Host,
        *,
        state: str | Sequence[str] | None = None,
        name: str | None = None,
        parent_instance_id: str | None = None,
        limit: int | None = 100,
        offset: int = 0,
        created_after: float | None = None,
        created_before: float | None = None,
        after: tuple[float, str] | None = None,
    ) -> list[InstanceRecord]:
        rows = await self._rows("list_instances", {
            "states": _states(state), "name": name, "parent": parent_instance_id,
            "limit": None if limit is None else max(limit, 0), "offset": max(offset, 0),
            "created_after": _when(created_after), "created_before": _when(created_before),
            "after_ts": None if after is None else _when(after[0]),
            "after_id": None if after is None else after[1]})
        return [record(r) for r in rows]

    async def get_execution(self: _Host, instance_id: str, execution_id: int
                            ) -> ExecutionRecord | None:
        [(count, first, last)] = await self._rows("execution_bounds", {
            "key": _key(instance_id), "execution_id": int(execution_id)})
        if not count:
            return None
        return ExecutionRecord(int(execution_id), int(count), decode_event(first),
                               decode_event(last))

    async def prune_executions(self: _Host, instance_id: str, keep_last: int,
                               ended_before_ms: int | None = None) -> tuple[int, int] | None:
        self._writable("prune_executions")
        rows = await self._rows("prune_executions", {
            "key": _key(instance_id), "keep": max(keep_last - 1, 0),
            "ended_before": ended_before_ms})
        if not rows:
            return None
        doomed = [r for r in rows if r[0] is not None]
        return len(doomed), sum(int(r[1]) for r in doomed)

    async def get_instance_stats(self: _Host, instance_id: str) -> InstanceStats | None:
        rows = await self._rows("instance_stats", {"key": _key(instance_id)})
        if not rows:
            return None
        unread, events, size, mail, keys, value_bytes, executions = (int(v) for v in rows[0])
        return InstanceStats(
            history_event_count=events, history_size_bytes=size, queued_mail=mail,
            unread=unread, kv_key_count=keys, kv_value_bytes=value_bytes,
            execution_count=executions)

    async def read_kv(self: _Host, instance_id: str, key: str | None = None
                      ) -> dict[str, KvEntry] | None:
        rows = await self._rows("kv_read", {
            "key": _key(instance_id), "kkey": None if key is None else _key(key)})
        if not rows:
            return None
        return {k: KvEntry(v, int(at)) for k, v, at in sorted(r for r in rows if r[0] is not None)}

    async def read_kv_base(self: _Host, instance_id: str) -> dict[str, KvEntry]:
        rows = await self._rows("kv_base", {"key": _key(instance_id)})
        return kv_base_from_json(rows[0][0]) if rows else {}

    async def delete_instance_tree(self: _Host, instance_id: str) -> DeleteCounts:
        self._writable("delete_instance_tree")
        try:
            async with self._transaction() as conn:
                cur = await self._execute(
                    "instance_tree", {"key": _key(instance_id), "cascade": True}, conn)
                keys = [bytes(r[0]) for r in await cur.fetchall()] or [_key(instance_id)]
                cur = await self._execute("delete_instances_counted", {"keys": keys}, conn)
                row = await cur.fetchone()
                assert row is not None
                return DeleteCounts(*(int(v) for v in row))
        finally:  # what a commit kept may be of an instance now gone
            self._finals.clear()

    async def delete_instance(self: _Host, instance_id: str, *, cascade: bool = True) -> int:
        self._writable("delete_instance")
        try:
            async with self._transaction() as conn:
                cur = await self._execute(
                    "instance_tree", {"key": _key(instance_id), "cascade": cascade}, conn)
                # An id without a record may still have leftovers (queued messages): delete
                # those too, counting no instance.
                keys = [bytes(r[0]) for r in await cur.fetchall()] or [_key(instance_id)]
                cur = await self._execute("delete_instances", {"keys": keys}, conn)
                return max(cur.rowcount, 0)
        finally:  # what a commit kept may be of an instance now gone
            self._finals.clear()

    async def purge_instances(
        self: _Host,
        *,
        states: Sequence[str] = tuple(sorted(TERMINAL_STATES)),
        updated_before: float | None = None,
        name: str | None = None,
        limit: int | None = None,
    ) -> int:
        self._writable("purge_instances")
        try:
            async with self._transaction() as conn:
                cur = await self._execute("purge_candidates", {
                    "states": _states(states), "before": updated_before, "name": name,
                    "limit": None if limit is None else max(limit, 0)}, conn)
                keys = [bytes(r[0]) for r in await cur.fetchall()]
                if not keys:
                    return 0
                cur = await self._execute("delete_instances", {"keys": keys}, conn)
                return max(cur.rowcount, 0)
        finally:  # what a commit kept may be of an instance now gone
            self._finals.clear()

    # ------------------------------------------------------------ test hooks

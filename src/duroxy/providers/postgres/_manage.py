"""Reads and management calls of the PostgreSQL store: a part of PostgresProvider,
kept apart from the queues. Each read is one statement; deleting and purging run their
two statements in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import psycopg

from ...history import HistoryEvent, decode_event
from .._finals import FinalRecords
from ..base import TERMINAL_STATES, InstanceRecord
from ._marshal import key as _key
from ._marshal import record

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

    async def list_executions(self: _Host, instance_id: str) -> list[int]:
        rows = await self._rows("list_executions", {"key": _key(instance_id)})
        return [int(r[0]) for r in rows]

    async def list_instances(
        self: _Host,
        *,
        state: str | Sequence[str] | None = None,
        name: str | None = None,
        parent_instance_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[InstanceRecord]:
        rows = await self._rows("list_instances", {
            "states": _states(state), "name": name, "parent": parent_instance_id,
            "limit": max(limit, 0), "offset": max(offset, 0)})
        return [record(r) for r in rows]

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

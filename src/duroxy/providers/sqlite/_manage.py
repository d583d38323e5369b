"""Listing, executions, sizes and key-value state of the SQLite store: a part of
:class:`~duroxy.providers.sqlite.SqliteProvider`, kept apart from its queues. Reads run
on the reader thread; pruning and deleting are writes of the writer thread, each one
transaction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from ..base import DeleteCounts, ExecutionRecord, InstanceRecord, InstanceStats, KvEntry
from . import _admin_ops
from ._tx import Tx

__all__ = ["SqliteManagement"]

T = TypeVar("T")


class _Host(Protocol):
    """What these calls use of the provider."""

    def _writable(self, operation: str) -> None: ...

    async def _read(self, fn: Callable[[Tx], T]) -> T: ...

    async def _write(self, fn: Callable[[Tx], T], discard: Callable[[Any], None] | None = None,
                     *, durable: bool = True, probe: Callable[[Tx], T | None] | None = None,
                     wait: float = 0.0) -> T: ...

    def _forget_finals(self) -> None: ...


class SqliteManagement:
    """Mixed into SqliteProvider."""

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
        states = [state] if isinstance(state, str) else list(state) if state is not None else None
        lim = None if limit is None else max(limit, 0)
        off = max(offset, 0)
        return await self._read(lambda tx: _admin_ops.list_instances(
            tx, states, name, parent_instance_id, lim, off, created_after, created_before,
            after))

    async def get_execution(self: _Host, instance_id: str, execution_id: int
                            ) -> ExecutionRecord | None:
        return await self._read(lambda tx: _admin_ops.get_execution(tx, instance_id, execution_id))

    async def prune_executions(self: _Host, instance_id: str, keep_last: int,
                               ended_before_ms: int | None = None) -> tuple[int, int] | None:
        self._writable("prune_executions")
        return await self._write(
            lambda tx: _admin_ops.prune_executions(tx, instance_id, keep_last, ended_before_ms))

    async def get_instance_stats(self: _Host, instance_id: str) -> InstanceStats | None:
        return await self._read(lambda tx: _admin_ops.instance_stats(tx, instance_id))

    async def read_kv(self: _Host, instance_id: str, key: str | None = None
                      ) -> dict[str, KvEntry] | None:
        return await self._read(lambda tx: _admin_ops.read_kv(tx, instance_id, key))

    async def read_kv_base(self: _Host, instance_id: str) -> dict[str, KvEntry]:
        return await self._read(lambda tx: _admin_ops.read_kv_base(tx, instance_id))

    async def delete_instance_tree(self: _Host, instance_id: str) -> DeleteCounts:
        self._writable("delete_instance_tree")
        try:
            return await self._write(lambda tx: _admin_ops.delete_instance_tree(tx, instance_id))
        finally:
            self._forget_finals()

"""The client's admin calls: executions, exporting their histories and pruning them,
instance trees, sizes, and deleting many instances. A part of ``Client``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Protocol

from ._admin import (
    DeleteResult,
    ExecutionInfo,
    InstanceTree,
    OrchestrationStats,
    PruneResult,
    check_id,
)
from .errors import ErrorDetails, InstanceNotFound, PayloadError
from .history import (
    ExecutionHistory,
    OrchestrationCancelled,
    OrchestrationCompleted,
    OrchestrationContinuedAsNew,
    OrchestrationFailed,
    OrchestrationStarted,
)
from .options import check_count, to_seconds
from .providers.base import TERMINAL_STATES, Provider

__all__ = ["AdminCalls"]


class _Host(Protocol):
    provider: Provider

    async def _tell_parent_child_deleted(self, parent_id: str, child_id: str) -> None: ...

    @staticmethod
    def _states(state: str | Sequence[str] | None) -> list[str] | None: ...


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000.0, UTC)


def _ended_before_ms(provider: Provider, older_than: float | timedelta | None) -> int | None:
    if older_than is None:
        return None
    return int((provider.clock.time() - to_seconds(older_than, "older_than")) * 1000)


class AdminCalls:
    """Mixed into ``Client``."""

    # ------------------------------------------------------------------ executions
    async def get_execution_info(self: _Host, instance_id: str, execution_id: int
                                 ) -> ExecutionInfo:
        """One execution of the instance: ``InstanceNotFound`` for an unknown instance,
        ``KeyError`` for an execution it does not have (any more)."""
        check_id(instance_id, "instance id")
        check_count(execution_id, "execution_id", 1)
        rec = await self.provider.get_instance(instance_id)
        if rec is None:
            raise InstanceNotFound(instance_id)
        found = await self.provider.get_execution(instance_id, execution_id)
        if found is None or found.first is None or found.last is None:
            if execution_id == rec.execution_id and rec.state == "PENDING":
                # started, no turn run yet: its execution has begun, with no events
                return ExecutionInfo(execution_id, "RUNNING",
                                     datetime.fromtimestamp(rec.created_at, UTC), None, 0)
            executions = await self.provider.list_executions(instance_id)
            raise KeyError(f"instance {instance_id!r} has no execution {execution_id} "
                           f"(executions stored: {', '.join(map(str, executions)) or 'none'})")
        last = found.last
        state, output, error = "RUNNING", None, None
        if isinstance(last, OrchestrationCompleted):
            state, output = "COMPLETED", last.payload
        elif isinstance(last, OrchestrationFailed):
            state, error = "FAILED", last.error
        elif isinstance(last, OrchestrationCancelled):
            state = "CANCELLED"
            error = ErrorDetails("cancelled", "Cancelled",
                                 last.reason or "the instance was cancelled")
        elif isinstance(last, OrchestrationContinuedAsNew):
            state = "CONTINUED_AS_NEW"
        return ExecutionInfo(
            execution_id=execution_id, state=state, started_at=_dt(found.first.ts),
            completed_at=None if state == "RUNNING" else _dt(last.ts),
            event_count=found.event_count, output=output, error=error)

    async def export_history(self: _Host, instance_id: str, execution_id: int | None = None
                             ) -> ExecutionHistory:
        """The latest (or the given) execution of the instance as an
        :class:`~duroxy.history.ExecutionHistory`, its events as stored, for
        ``duroxy.history.dump_histories`` and the replayer of ``duroxy.testing``.
        ``name`` and ``version`` are those the execution ran. Raises
        ``InstanceNotFound`` for an unknown instance, ``KeyError`` for an execution it
        does not have (any more), ``PayloadError`` naming the instance when a stored
        event does not decode."""
        check_id(instance_id, "instance id")
        if execution_id is not None:
            check_count(execution_id, "execution_id", 1)
        rec = await self.provider.get_instance(instance_id)
        if rec is None:
            raise InstanceNotFound(instance_id)
        eid = rec.execution_id if execution_id is None else execution_id
        try:
            events = await self.provider.read_history(instance_id, eid)
        except PayloadError as e:
            raise PayloadError(f"stored history of instance {instance_id!r} (execution "
                               f"{eid}) does not decode: {e}") from e
        if not events and not (eid == rec.execution_id and rec.state == "PENDING"):
            executions = await self.provider.list_executions(instance_id)
            if eid not in executions:
                raise KeyError(f"instance {instance_id!r} has no execution {eid} "
                               f"(executions stored: "
                               f"{', '.join(map(str, executions)) or 'none'})")
        first = events[0] if events else None
        if isinstance(first, OrchestrationStarted):
            name, version = first.name, first.version
        else:  # (not started yet: the record's, which is this execution's)
            name, version = rec.name, rec.version
        return ExecutionHistory(instance_id, eid, name, version, tuple(events))

    async def prune_executions(self: _Host, instance_id: str, keep_last: int = 1, *,
                               older_than: float | timedelta | None = None) -> PruneResult:
        """Delete the instance's past executions and their histories, atomically, but
        the newest ``keep_last`` (the current execution, never pruned, counts as one: 0
        and 1 both keep it alone), and with ``older_than`` only those that ended at least
        that long ago. Works on running instances (an eternal orchestration may prune
        itself from an activity)."""
        check_id(instance_id, "instance id")
        check_count(keep_last, "keep_last", 0)
        pruned = await self.provider.prune_executions(instance_id, keep_last,
                                                      _ended_before_ms(self.provider, older_than))
        if pruned is None:
            raise InstanceNotFound(instance_id)
        return PruneResult(1, *pruned)

    async def prune_executions_bulk(
        self: _Host, *, instance_ids: Iterable[str] | None = None,
        state: str | Sequence[str] | None = None, name: str | None = None,
        limit: int = 1000, keep_last: int = 1, older_than: float | timedelta | None = None,
    ) -> PruneResult:
        """``prune_executions`` for each matching instance (running ones included): the
        given ``instance_ids`` (unknown ones are passed over), or up to ``limit``
        instances by ``state``/``name``, oldest first. Returns the sum; each instance is
        pruned atomically, the batch as a whole is not."""
        check_count(keep_last, "keep_last", 0)
        check_count(limit, "limit", 0)
        states = self._states(state)
        ended = _ended_before_ms(self.provider, older_than)
        if instance_ids is not None:
            ids = [check_id(i, "instance id") for i in instance_ids]
            chosen = []
            for iid in dict.fromkeys(ids):
                rec = await self.provider.get_instance(iid)
                if rec is not None and (states is None or rec.state in states) \
                        and (name is None or rec.name == name):
                    chosen.append(iid)
            chosen = chosen[:limit]
        else:
            chosen = [r.instance_id for r in await self.provider.list_instances(
                state=states, name=name, limit=limit)]
        total = PruneResult()
        for iid in chosen:
            pruned = await self.provider.prune_executions(iid, keep_last, ended)
            if pruned is not None:
                total += PruneResult(1, *pruned)
        return total

    # ------------------------------------------------------------------ trees and sizes
    async def get_instance_tree(self: _Host, instance_id: str) -> InstanceTree:
        """The instance and its descendants (children of every execution; detached
        orchestrations have no parent and are not part of it)."""
        check_id(instance_id, "instance id")
        if await self.provider.get_instance(instance_id) is None:
            raise InstanceNotFound(instance_id)
        ids = [instance_id]
        parent_of: dict[str, str] = {}
        i = 0
        while i < len(ids):
            parent = ids[i]
            i += 1
            for child in await self.provider.list_instances(parent_instance_id=parent,
                                                            limit=None):
                cid = child.instance_id
                if cid != instance_id and cid not in parent_of:  # (guards against cycles)
                    parent_of[cid] = parent
                    ids.append(cid)
        return InstanceTree(instance_id, tuple(ids), MappingProxyType(parent_of))

    async def get_orchestration_stats(self: _Host, instance_id: str
                                      ) -> OrchestrationStats | None:
        """The instance's sizes (see :class:`OrchestrationStats`); ``None`` for an
        unknown id."""
        check_id(instance_id, "instance id")
        stats = await self.provider.get_instance_stats(instance_id)
        if stats is None:
            return None
        return OrchestrationStats(
            history_event_count=stats.history_event_count,
            history_size_bytes=stats.history_size_bytes,
            queue_pending_count=stats.queued_mail + stats.unread,
            kv_user_key_count=stats.kv_key_count, kv_total_value_bytes=stats.kv_value_bytes,
            execution_count=stats.execution_count)

    # ------------------------------------------------------------------ deleting many
    async def delete_instances(self: _Host, instance_ids: Iterable[str], *,
                               force: bool = False) -> DeleteResult:
        """Delete each instance as ``delete_instance`` does (its tree with it, atomically;
        a parent waiting on a deleted running child is told). Running instances are
        skipped unless ``force``; unknown ids are reported, not raised. The batch as a
        whole is not atomic."""
        ids = [check_id(i, "instance id") for i in instance_ids]
        instances = executions = events = queued = 0
        skipped: list[str] = []
        not_found: list[str] = []
        for iid in dict.fromkeys(ids):
            rec = await self.provider.get_instance(iid)
            if rec is None:
                not_found.append(iid)
                continue
            running = rec.state not in TERMINAL_STATES
            if running and not force:
                skipped.append(iid)
                continue
            went = await self.provider.delete_instance_tree(iid)
            instances += went.instances
            executions += went.executions
            events += went.events
            queued += went.queue_messages
            if running and rec.parent_instance_id is not None:
                await self._tell_parent_child_deleted(rec.parent_instance_id, iid)
        return DeleteResult(instances, executions, events, queued, tuple(skipped),
                            tuple(not_found))

    delete_instance_bulk = delete_instances

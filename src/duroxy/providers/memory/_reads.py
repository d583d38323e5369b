"""Reads, deletes and worker rows of the in-memory reference provider: a part of
:class:`~.provider.InMemoryProvider`, under its one lock."""

from __future__ import annotations

from collections.abc import Sequence

from ...history import HistoryEvent, decode_event
from ...options import TagFilter
from ..base import TERMINAL_STATES, DeleteCounts, InstanceRecord, WorkerRecord
from ..pending import PendingWorkReport
from ._state import Host

__all__ = ["MemoryReads"]


class MemoryReads:
    """Mixed into InMemoryProvider."""

    async def get_instance(self: Host, instance_id: str) -> InstanceRecord | None:
        with self._lock:
            self._check_open()
            rec = self._records.get(instance_id)
            return self._snapshot(rec) if rec is not None else None

    async def read_history(
        self: Host, instance_id: str, execution_id: int | None = None
    ) -> list[HistoryEvent]:
        with self._lock:
            self._check_open()
            execs = self._history.get(instance_id, {})
            if execution_id is None:
                execution_id = max(execs, default=0)
            texts = [text for _, text in execs.get(execution_id, ())]
        # decode_event raises PayloadError for undecodable stored events
        return [decode_event(text) for text in texts]

    async def pending_work(self: Host, accepts: TagFilter | None = None) -> PendingWorkReport:
        """See :class:`~duroxy.providers.pending.PendingWork`."""
        with self._lock:
            self._check_open()
            now = self._clock()
            held = sum(1 for lock in self._orch_locks.values()
                       if lock.token is not None and lock.expires_at > now)
            held += sum(1 for w in self._work.values()
                        if w.token is not None and w.expires_at > now)
            due: float | None = None
            for msg in self._messages.values():
                at = 0.0 if msg.visible_at is None else msg.visible_at
                if at > now:
                    rec = self._records.get(msg.instance_id)
                    if rec is not None and rec.state in TERMINAL_STATES:
                        continue  # (it will only be discarded)
                lock = self._orch_locks.get(msg.instance_id)
                if lock is not None and lock.token is None:  # cooling down until then
                    at = max(at, lock.expires_at)
                due = at if due is None else min(due, at)
            for w in self._work.values():
                if w.token is not None and w.expires_at > now:
                    continue  # held
                if accepts is not None and not accepts.matches(w.tag):
                    continue  # nobody in view takes it
                at = 0.0 if w.visible_at is None else w.visible_at
                due = at if due is None else min(due, at)
            return PendingWorkReport(held, due)

    async def list_executions(self: Host, instance_id: str) -> list[int]:
        with self._lock:
            self._check_open()
            return sorted(e for e, evs in self._history.get(instance_id, {}).items() if evs)

    async def list_instances(
        self: Host,
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
        states = {state} if isinstance(state, str) else set(state) if state is not None else None
        with self._lock:
            self._check_open()
            found = [r for r in self._records.values()
                     if (states is None or r.state in states)
                     and (name is None or r.name == name)
                     and (parent_instance_id is None
                          or r.parent_instance_id == parent_instance_id)
                     and (created_after is None or r.created_at > created_after)
                     and (created_before is None or r.created_at < created_before)
                     and (after is None or (r.created_at, r.instance_id) > after)]
            found.sort(key=lambda r: (r.created_at, r.instance_id))
            start = max(offset, 0)
            end = None if limit is None else start + max(limit, 0)
            return [self._snapshot(r) for r in found[start:end]]

    async def delete_instance_tree(self: Host, instance_id: str) -> DeleteCounts:
        self._writable("delete_instance_tree")
        with self._lock:
            self._check_open()
            doomed = self._tree(instance_id) if instance_id in self._records \
                else [instance_id]
            total = DeleteCounts()
            for iid in doomed:
                c = self._drop_instance_counted(iid)
                total = DeleteCounts(total.instances + c.instances,
                                     total.executions + c.executions,
                                     total.events + c.events,
                                     total.queue_messages + c.queue_messages)
            return total

    def _tree(self: Host, instance_id: str) -> list[str]:
        """The instance and its descendants, breadth-first over parent links (``seen``
        guards against cycles)."""
        doomed = [instance_id]
        seen = {instance_id}
        i = 0
        while i < len(doomed):
            parent = doomed[i]
            i += 1
            for r in self._records.values():
                if r.parent_instance_id == parent and r.instance_id not in seen:
                    seen.add(r.instance_id)
                    doomed.append(r.instance_id)
        return doomed

    async def delete_instance(self: Host, instance_id: str, *, cascade: bool = True) -> int:
        self._writable("delete_instance")
        with self._lock:
            self._check_open()
            if instance_id not in self._records:
                self._drop_instance_data(instance_id)  # leftovers of a record-less id
                return 0
            doomed = self._tree(instance_id) if cascade else [instance_id]
            for iid in doomed:
                self._drop_instance_data(iid)
            return len(doomed)

    async def purge_instances(
        self: Host,
        *,
        states: Sequence[str] = tuple(sorted(TERMINAL_STATES)),
        updated_before: float | None = None,
        name: str | None = None,
        limit: int | None = None,
    ) -> int:
        self._writable("purge_instances")
        wanted = {states} if isinstance(states, str) else set(states)
        with self._lock:
            self._check_open()
            found = [r for r in self._records.values()
                     if r.state in wanted
                     and (updated_before is None or r.updated_at < updated_before)
                     and (name is None or r.name == name)]
            found.sort(key=lambda r: (r.updated_at, r.instance_id))
            if limit is not None:
                found = found[:max(limit, 0)]
            for r in found:
                self._drop_instance_data(r.instance_id)
            return len(found)

    # ------------------------------------------------------------ workers
    async def record_heartbeat(self: Host, worker: WorkerRecord, *,
                               forget_before: float | None = None) -> None:
        self._writable("record_heartbeat")
        with self._lock:
            self._check_open()
            if forget_before is not None:
                for wid in [w.worker_id for w in self._workers.values()
                            if w.last_seen_at < forget_before
                            and w.worker_id != worker.worker_id]:
                    del self._workers[wid]
            old = self._workers.get(worker.worker_id)
            if old is not None and old.stopped_at is not None \
                    and old.started_at == worker.started_at:
                return  # a late heartbeat of a runtime that has stopped
            self._workers[worker.worker_id] = worker

    async def list_workers(self: Host, *, include_stopped: bool = False) -> list[WorkerRecord]:
        with self._lock:
            self._check_open()
            found = [w for w in self._workers.values()
                     if include_stopped or w.stopped_at is None]
        return sorted(found, key=lambda w: (w.started_at, w.worker_id))

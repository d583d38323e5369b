"""Transaction bodies of the SQLite store's reads, deletes, pruning and worker rows
(the queues' are in ``_ops``), under the same rules: each runs inside the transaction
the worker opened for it, with ``tx.now`` as the provider clock."""

from __future__ import annotations

import json

from ...history import HistoryEvent, decode_event
from ...options import TagFilter
from ..base import (
    DeleteCounts,
    ExecutionRecord,
    InstanceRecord,
    InstanceStats,
    KvEntry,
    WorkerRecord,
)
from ..pending import PendingWorkReport
from ._ops import Q, fetch_all, record_from_row
from ._tx import Tx


# ------------------------------------------------------------------ reads
def get_instance(tx: Tx, instance_id: str) -> InstanceRecord | None:
    found = fetch_all(tx.conn, Q["get_instance"], (instance_id,))
    return record_from_row(found[0]) if found else None


def read_history(tx: Tx, instance_id: str, execution_id: int | None) -> list[HistoryEvent]:
    if execution_id is None:
        texts = fetch_all(tx.conn, Q["read_latest_history"], (instance_id, instance_id))
    else:
        texts = fetch_all(tx.conn, Q["read_history"], (instance_id, execution_id))
    return [decode_event(t) for (t,) in texts]


def pending_work(tx: Tx, accepts: TagFilter | None = None) -> PendingWorkReport:
    now = tx.now
    ((held,),) = fetch_all(tx.conn, Q["pending_held"], (now, now))
    ((messages,),) = fetch_all(tx.conn, Q["pending_due_messages"], (now,))
    ((activities,),) = fetch_all(tx.conn, Q["pending_due_activities"], {
        "now": now, "all": int(accepts is None),
        "default": int(accepts is not None and accepts.include_default),
        "any": int(accepts is not None and accepts.any_tag),
        "tags": json.dumps(sorted(accepts.tags) if accepts is not None else [])})
    due = [float(at) for at in (messages, activities) if at is not None]
    return PendingWorkReport(int(held), min(due) if due else None)


def list_executions(tx: Tx, instance_id: str) -> list[int]:
    return [e for (e,) in fetch_all(tx.conn, Q["list_executions"], (instance_id,))]


def list_instances(tx: Tx, states: list[str] | None, name: str | None,
                   parent_instance_id: str | None, limit: int | None, offset: int,
                   created_after: float | None = None, created_before: float | None = None,
                   after: tuple[float, str] | None = None) -> list[InstanceRecord]:
    found = fetch_all(tx.conn, Q["list_instances"], {
        "states": json.dumps(states) if states is not None else None, "name": name,
        "parent": parent_instance_id, "limit": -1 if limit is None else limit,
        "offset": offset, "created_after": created_after, "created_before": created_before,
        "after_ts": None if after is None else after[0],
        "after_id": None if after is None else after[1]})
    return [record_from_row(r) for r in found]


def get_execution(tx: Tx, instance_id: str, execution_id: int) -> ExecutionRecord | None:
    ((count, first, last),) = fetch_all(tx.conn, Q["execution_bounds"],
                                    (instance_id, execution_id))
    if not count:
        return None
    texts = [t for (t,) in fetch_all(tx.conn, Q["read_events"],
                                 (instance_id, execution_id, first, last))]
    return ExecutionRecord(execution_id, count, decode_event(texts[0]),
                           decode_event(texts[-1]))


def prune_executions(tx: Tx, instance_id: str, keep_last: int,
                     ended_before_ms: int | None) -> tuple[int, int] | None:
    found = fetch_all(tx.conn, Q["current_execution"], (instance_id,))
    if not found:
        return None
    past = fetch_all(tx.conn, Q["past_executions"], (instance_id, found[0][0]))
    doomed = past[:max(len(past) - max(keep_last - 1, 0), 0)]
    if ended_before_ms is not None:
        doomed = [r for r in doomed if r[2] is not None and r[2] < ended_before_ms]
    tx.conn.executemany(Q["delete_execution"], [(instance_id, r[0]) for r in doomed])
    return len(doomed), sum(r[1] for r in doomed)


def instance_stats(tx: Tx, instance_id: str) -> InstanceStats | None:
    found = fetch_all(tx.conn, Q["instance_stats"], (instance_id,))
    if not found:
        return None
    unread, events, size, mail, keys, value_bytes, executions = found[0]
    return InstanceStats(
        history_event_count=events, history_size_bytes=size, queued_mail=mail,
        unread=unread, kv_key_count=keys, kv_value_bytes=value_bytes,
        execution_count=executions)


def read_kv(tx: Tx, instance_id: str, key: str | None) -> dict[str, KvEntry] | None:
    if not fetch_all(tx.conn, Q["instance_exists"], (instance_id,)):
        return None
    if key is None:
        rows = fetch_all(tx.conn, Q["kv_all"], (instance_id,))
    else:
        rows = fetch_all(tx.conn, Q["kv_one"], (instance_id, key))
    return {k: KvEntry(v, at) for k, v, at in sorted(rows)}


def read_kv_base(tx: Tx, instance_id: str) -> dict[str, KvEntry]:
    found = fetch_all(tx.conn, Q["kv_base"], (instance_id,))
    return kv_base_from_json(found[0][0]) if found and found[0][0] is not None else {}


def kv_base_to_json(base: dict[str, KvEntry] | None) -> str | None:
    """The stored form of ``kv_base``: a JSON object of key -> [value text, updated_at]."""
    return json.dumps({k: [e.value, e.updated_at] for k, e in base.items()}) if base else None


def kv_base_from_json(text: str) -> dict[str, KvEntry]:
    return {k: KvEntry(v, int(at)) for k, (v, at) in json.loads(text).items()}


# ------------------------------------------------------------------ management
def _drop_instance_data(tx: Tx, instance_id: str, count: bool = False) -> DeleteCounts:
    """Delete everything stored for one id: what went (``count``: also its executions
    and events, counted first; else just whether it had a record)."""
    conn = tx.conn
    executions = events = 0
    if count:
        ((executions, events),) = fetch_all(conn, Q["history_totals"], (instance_id,))
    had = conn.execute(Q["delete_instance_row"], (instance_id,)).rowcount
    conn.execute(Q["delete_instance_history"], (instance_id,))
    queued = conn.execute(Q["delete_instance_messages"], (instance_id,)).rowcount
    queued += conn.execute(Q["delete_instance_activities"], (instance_id,)).rowcount
    conn.execute(Q["delete_instance_kv"], (instance_id,))
    # Dropping the lock makes a turn in flight fail its ack instead of resurrecting it.
    conn.execute(Q["delete_instance_lock"], (instance_id,))
    return DeleteCounts(1 if had else 0, executions, events, max(queued, 0))


def delete_instance(tx: Tx, instance_id: str, cascade: bool) -> int:
    return sum(c.instances for c in _delete_tree(tx, instance_id, cascade, False))


def delete_instance_tree(tx: Tx, instance_id: str) -> DeleteCounts:
    went = _delete_tree(tx, instance_id, True, True)
    return DeleteCounts(sum(c.instances for c in went), sum(c.executions for c in went),
                        sum(c.events for c in went), sum(c.queue_messages for c in went))


def _delete_tree(tx: Tx, instance_id: str, cascade: bool, count: bool) -> list[DeleteCounts]:
    if not fetch_all(tx.conn, Q["instance_exists"], (instance_id,)):
        # leftovers of a record-less id
        return [_drop_instance_data(tx, instance_id, count)]
    doomed = [instance_id]
    if cascade:
        seen = {instance_id}  # guards against cycles in parent links
        i = 0
        while i < len(doomed):
            for (child,) in fetch_all(tx.conn, Q["children"], (doomed[i],)):
                if child not in seen:
                    seen.add(child)
                    doomed.append(child)
            i += 1
    return [_drop_instance_data(tx, iid, count) for iid in doomed]


def purge_instances(tx: Tx, states: list[str], updated_before: float | None,
                    name: str | None, limit: int | None) -> int:
    found = fetch_all(tx.conn, Q["purge_candidates"], {
        "states": json.dumps(states), "before": updated_before, "name": name,
        "limit": -1 if limit is None else max(limit, 0)})
    return sum(_drop_instance_data(tx, iid).instances for (iid,) in found)


# ------------------------------------------------------------------ workers
def record_heartbeat(tx: Tx, worker: WorkerRecord, forget_before: float | None) -> None:
    if forget_before is not None:
        tx.conn.execute(Q["forget_workers"], (forget_before, worker.worker_id))
    tx.conn.execute(Q["record_heartbeat"], {
        "worker_id": worker.worker_id, "worker_node_id": worker.worker_node_id,
        "host": worker.host, "pid": worker.pid, "duroxy_version": worker.duroxy_version,
        "started_at": worker.started_at, "last_seen_at": worker.last_seen_at,
        "stopped_at": worker.stopped_at, "heartbeat_interval": worker.heartbeat_interval,
        "orchestration_concurrency": worker.orchestration_concurrency,
        "activity_concurrency": worker.activity_concurrency,
        "tag_filter": worker.tag_filter, "sessions_owned": worker.sessions_owned,
        "active_activities": worker.active_activities,
        "orchestrations": json.dumps(list(worker.orchestrations)),
        "activities": json.dumps(list(worker.activities))})


def list_workers(tx: Tx, include_stopped: bool) -> list[WorkerRecord]:
    return [WorkerRecord(
        worker_id=wid, worker_node_id=node, host=host, pid=pid, duroxy_version=version,
        started_at=started, last_seen_at=seen, stopped_at=stopped, heartbeat_interval=every,
        orchestration_concurrency=orch_n, activity_concurrency=act_n, tag_filter=tags,
        sessions_owned=sessions, active_activities=active,
        orchestrations=tuple(json.loads(orchs)), activities=tuple(json.loads(acts)))
        for (wid, node, host, pid, version, started, seen, stopped, every, orch_n, act_n,
             tags, sessions, active, orchs, acts)
        in fetch_all(tx.conn, Q["list_workers"], {"all": 1 if include_stopped else 0})]

"""Transaction bodies of the SQLite store.

Each function runs on a connection thread inside the transaction (or savepoint) the
worker opened for it, with ``tx.now`` as the provider clock. Raising undoes exactly the
function's own changes. Payloads arrive already encoded: encoding happens on the
caller's thread, so a value with no JSON form fails before anything is written and the
single writer thread spends its time on SQL only.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import ErrorDetails, InstanceAlreadyExists, InstanceNotFound, LockLost, PayloadError
from ...history import ActivityWork, decode_message
from ..base import (
    TERMINAL_STATES,
    ActivityItem,
    ExcludedWork,
    InstanceRecord,
    OrchestrationItem,
    QueuedMessage,
)
from ._sql import queries
from ._tx import Tx

__all__ = [
    "PreparedCommit",
    "PreparedMessage",
    "Q",
    "Skip",
    "StartInfo",
    "fetch_all",
    "record_from_row",
    "skip_orchestrations",
]

log = logging.getLogger("duroxy.providers.sqlite")

Q = queries()


@dataclass(frozen=True, slots=True)
class StartInfo:
    """What a record created from an ``OrchestrationStarted`` message holds."""

    name: str
    version: str | None
    execution_id: int
    custom_status: str | None
    parent_instance_id: str | None


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    instance_id: str
    payload: str  # encode_message text
    visible_at: float | None
    start: StartInfo | None  # set when the event is an OrchestrationStarted


@dataclass(frozen=True, slots=True)
class PreparedCommit:
    execution_id: int
    state: str
    name: str
    version: str | None
    output: str | None
    error_json: str | None
    custom_status: str | None
    history: list[tuple[int, str]]  # (event_id, encode_event text)
    #: (instance, execution, event id, activity name, payload, tag or '', session or None)
    activities: list[tuple[str, int, int, str, str, str, str | None]]
    messages: list[PreparedMessage]
    cancel_activities: list[tuple[str, int, int]]
    acked_activities: list[str]  # lock tokens of work rows this turn consumed directly
    claim: tuple[int, float] = (0, 0.0)  # (how many activities to enqueue locked, for how long)
    #: the first claim[0] activities as objects, for the items handed back (not decoded
    #: again on the writer thread)
    claimed_work: tuple[ActivityWork, ...] = ()
    custom_status_changed: bool = False
    unread: int | None = None
    #: (replace it, the new kv_base JSON or None)
    kv_base: tuple[bool, str | None] = (False, None)
    kv_clear: bool = False
    kv_delete: tuple[str, ...] = ()
    kv_set: tuple[tuple[str, str, int], ...] = ()

    @property
    def kv_changed(self) -> bool:
        return self.kv_clear or bool(self.kv_delete) or bool(self.kv_set)


#: What a fetch leaves to other workers, as its statement's JSON parameters (``None``:
#: nothing, and the plain statement runs).
Skip = tuple[str, ...] | None


def skip_orchestrations(exclude: ExcludedWork | None) -> Skip:
    """(JSON array of names, JSON array of [name, version] pairs), or ``None``."""
    if exclude is None or not exclude.any_orchestration:
        return None
    return (json.dumps(sorted(exclude.orchestrations)),
            json.dumps(sorted([n, v] for n, v in exclude.orchestration_versions)))


#: The start of the token of an instance lock row that is a cool-down after an abandon
#: with a delay, not a lock anyone holds (the row itself looks like a lock).
COOL_DOWN = "cool:"


def new_token() -> str:
    return os.urandom(12).hex()


def fetch_all(conn: sqlite3.Connection, sql: str, params: Sequence[Any] | dict[str, Any] = ()
          ) -> list[Any]:
    # Always read to the end: a half-read statement keeps its read snapshot open, and a
    # later read on the same connection would not see newer commits.
    return conn.execute(sql, params).fetchall()


def record_from_row(row: Sequence[Any]) -> InstanceRecord:
    (iid, name, version, state, execution_id, output, error_json, custom_status,
     created_at, updated_at, parent, history_len, status_version, kv_base) = row
    error = ErrorDetails.from_json(json.loads(error_json)) if error_json is not None else None
    return InstanceRecord(
        instance_id=iid, name=name, version=version, state=state, execution_id=execution_id,
        output=output, error=error, custom_status=custom_status, created_at=created_at,
        updated_at=updated_at, parent_instance_id=parent, history_len=history_len,
        custom_status_version=status_version, kv_base=bool(kv_base))


def _enqueue(tx: Tx, msg: PreparedMessage) -> None:
    visible = tx.now if msg.visible_at is None or msg.visible_at < tx.now else msg.visible_at
    tx.conn.execute(Q["enqueue_message"], (msg.instance_id, msg.payload, visible, msg.visible_at))
    if visible > tx.now:
        tx.due(visible)


def next_due(tx: Tx) -> float | None:
    """When the next delayed message falls due (parked fetches wake then)."""
    ((at,),) = fetch_all(tx.conn, Q["next_due"], (tx.now,))
    return None if at is None else float(at)


def warm_up(tx: Tx) -> None:
    """Shortly before a queued message falls due, with nothing else to do: take the write
    lock, read when the next message falls due, give the lock back. The fetch at the due
    time then finds the connection, its locks and its pages warm: after an idle spell
    that takes about half a millisecond off the path from a timer to its turn's commit.
    Never waits for another process's write lock (busy: nothing is done)."""
    conn = tx.conn
    ((busy_ms,),) = fetch_all(conn, "PRAGMA busy_timeout")
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return
        try:
            next_due(tx)
        finally:
            conn.execute("ROLLBACK")
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")


def _insert_record(tx: Tx, instance_id: str, start: StartInfo) -> bool:
    cur = tx.conn.execute(Q["insert_instance"], (
        instance_id, start.name, start.version, start.execution_id, start.custom_status,
        tx.now, tx.now, start.parent_instance_id))
    return cur.rowcount > 0


# ------------------------------------------------------------------ instances
def create_instance(tx: Tx, msg: PreparedMessage) -> None:
    assert msg.start is not None
    if not _insert_record(tx, msg.instance_id, msg.start):
        raise InstanceAlreadyExists(msg.instance_id)
    _enqueue(tx, msg)
    tx.notify("orchestrator", msg.instance_id)


def enqueue_orchestrator_message(tx: Tx, msg: PreparedMessage) -> None:
    if not fetch_all(tx.conn, Q["instance_exists"], (msg.instance_id,)):
        raise InstanceNotFound(msg.instance_id)
    _enqueue(tx, msg)
    tx.notify("orchestrator", msg.instance_id)


# ------------------------------------------------------------------ orchestration queue
def _candidates(tx: Tx, cap: int, skip: Skip) -> list[Any]:
    if skip is None:
        return fetch_all(tx.conn, Q["orchestration_candidates"], (tx.now, tx.now, cap))
    return fetch_all(tx.conn, Q["orchestration_candidates_excluding"],
                 (tx.now, tx.now, *skip, cap))


def fetch_orchestration_items(tx: Tx, lock_timeout: float, limit: int, skip: Skip = None
                              ) -> list[OrchestrationItem]:
    now = tx.now
    until = now + lock_timeout
    items: list[OrchestrationItem] = []
    taken: set[str] = set()
    # Usually one scan finds every instance. It reads at most ``cap`` rows, so that a
    # burst of messages for one instance is not read in full; when the cap was hit,
    # scan again: the instances just locked no longer match.
    cap = 1 if limit == 1 else limit * 8
    while len(items) < limit:
        found = _candidates(tx, cap, skip)
        fresh = [i for i in dict.fromkeys(r[0] for r in found) if i not in taken]
        for instance_id in fresh[:limit - len(items)]:
            taken.add(instance_id)
            items.append(_lock_instance(tx, instance_id, until))
        # Done when the scan saw everything, or found nothing new (a lock_timeout <= 0
        # leaves our own locks dead, so they would match again).
        if len(found) < cap or not fresh:
            break
    return items


def lock_instance(tx: Tx, instance_id: str, lock_timeout: float) -> OrchestrationItem | None:
    """Lock an instance with a record that no live lock holds, with or without messages."""
    rec_rows = fetch_all(tx.conn, Q["get_instance"], (instance_id,))
    if not rec_rows:
        return None
    lock = fetch_all(tx.conn, Q["lock_expiry"], (instance_id,))
    if lock and lock[0][0] > tx.now:  # held, or cooling down after a delayed abandon
        return None
    return _lock_instance(tx, instance_id, tx.now + lock_timeout, rec_rows)


def _lock_instance(tx: Tx, instance_id: str, until: float,
                   rec_rows: list[Any] | None = None) -> OrchestrationItem:
    """Lock one instance and take all its visible messages."""
    conn, now = tx.conn, tx.now
    if rec_rows is None:
        rec_rows = fetch_all(conn, Q["get_instance"], (instance_id,))
    token = new_token()
    conn.execute(Q["lock_instance"], (instance_id, token, until, 1 if rec_rows else 0))
    claimed = fetch_all(conn, Q["claim_messages"], (token, instance_id, now))
    claimed.sort(key=lambda r: r[0])  # RETURNING order is unspecified; ids are FIFO
    delivered: list[QueuedMessage] = []
    for mid, payload, msg_visible_at, _count in claimed:
        try:
            decoded = decode_message(instance_id, payload, msg_visible_at)
        except PayloadError as e:
            delivered.append(QueuedMessage(mid, None, str(e)))
        else:
            delivered.append(QueuedMessage(mid, decoded))
    return OrchestrationItem(
        instance_id=instance_id, lock_token=token, messages=delivered,
        instance=record_from_row(rec_rows[0]) if rec_rows else None,
        attempt=max((r[3] for r in claimed), default=1))


def probe_orchestration_items(tx: Tx, skip: Skip = None) -> list[OrchestrationItem] | None:
    """Outside any transaction: ``[]`` when a fetch would find nothing (no write lock
    taken, no commit), ``None`` when the fetch must run."""
    return None if _candidates(tx, 1, skip) else []


def _check_lock(tx: Tx, found: list[Any]) -> None:
    if not found:
        raise LockLost("orchestration lock is not held (released, taken over or deleted)")
    if found[0][1] <= tx.now:
        raise LockLost("orchestration lock expired")


def _held_lock(tx: Tx, token: str) -> str:
    found = fetch_all(tx.conn, Q["find_lock"], (token,))
    _check_lock(tx, found)
    return str(found[0][0])


def ack_orchestration_item(tx: Tx, token: str, c: PreparedCommit) -> list[ActivityItem]:
    conn = tx.conn
    found = fetch_all(conn, Q["find_lock_and_progress"], (token,))
    _check_lock(tx, found)
    instance_id, _until, had_record, old_execution, old_len = found[0]
    claimed = _apply_turn(tx, instance_id, bool(had_record) and old_execution is not None,
                          old_execution, old_len, c)
    conn.execute(Q["delete_delivered"], (instance_id, token))
    conn.execute(Q["release_lock"], (instance_id,))
    if instance_id not in {m.instance_id for m in c.messages} and fetch_all(
            conn, Q["has_visible_messages"], (instance_id, tx.now)):
        # Messages that arrived while the lock was held can be fetched now.
        tx.notify("orchestrator", instance_id)
    return claimed


def commit_turn(tx: Tx, instance_id: str, expected_len: int, c: PreparedCommit,
                consume: tuple[str, ...] = ()) -> list[ActivityItem]:
    """An ack without a fetched lock, for an instance nothing happened to meanwhile:
    no lock is taken, and no message was delivered, so there is none to delete but the
    undelivered ones the turn consumed (``consume``: their payloads, distinct)."""
    found = fetch_all(tx.conn, Q["lock_free_turn_state"], (tx.now, tx.now, instance_id))
    if not found:
        raise LockLost("the instance has no record")
    execution_id, history_len, locked, waiting = found[0]
    if execution_id != c.execution_id or history_len != expected_len:
        raise LockLost("the instance moved on since its last turn here")
    if locked:
        raise LockLost("the instance is locked")
    for payload in consume:
        # (the savepoint undoes the deletions before a refusal)
        if tx.conn.execute(Q["consume_message"], (instance_id, payload)).rowcount != 1:
            raise LockLost("a consumed message is no longer queued undelivered")
    if consume:
        waiting = bool(fetch_all(tx.conn, Q["has_visible_messages"], (instance_id, tx.now)))
    if waiting:
        raise LockLost("the instance has messages waiting")
    return _apply_turn(tx, instance_id, True, execution_id, history_len, c)


def _apply_turn(tx: Tx, instance_id: str, has_record: bool, old_execution: int | None,
                old_len: int | None, c: PreparedCommit) -> list[ActivityItem]:
    """What every turn commit writes: consumed activities, history and record, messages,
    activity work (the claimed part locked for the caller), cancellations; and the news
    of it for the listeners."""
    conn = tx.conn
    for work_token in c.acked_activities:
        # Completions this turn consumed directly: their rows go with the turn, and a
        # lost activity lock fails the whole ack (the savepoint undoes the rest).
        wid = _work_id(work_token)
        if conn.execute(Q["ack_activity"], (wid, work_token, tx.now)).rowcount == 0:
            raise _activity_lock_lost(tx, wid, work_token)
    # Only an item fetched with a record writes history and the record.
    if has_record:
        if c.history:
            # A repeated event id violates the primary key: the whole ack rolls back.
            conn.executemany(Q["insert_event"], [
                (instance_id, c.execution_id, eid, text) for eid, text in c.history])
        if old_execution == c.execution_id and old_len is not None:
            history_len = old_len + len(c.history)
        else:
            history_len = fetch_all(conn, Q["count_history"], (instance_id, c.execution_id))[0][0]
        conn.execute(Q["update_instance"], (
            c.name, c.version, c.state, c.execution_id, c.output, c.error_json,
            c.custom_status, tx.now, history_len, 1 if c.custom_status_changed else 0,
            c.unread, 1 if c.kv_base[0] else 0, c.kv_base[1], instance_id))
        if c.kv_changed:
            _write_kv(conn, instance_id, c)
    for msg in c.messages:
        if msg.start is not None:
            _insert_record(tx, msg.instance_id, msg.start)  # no-op when the id is taken
        _enqueue(tx, msg)
    claim, claim_timeout = c.claim
    claimed: list[ActivityItem] = []
    if claim:
        # Enqueued already locked for the committing worker, which runs them at once.
        salt = new_token()
        for row, work in zip(c.activities[:claim], c.claimed_work, strict=True):
            rows = fetch_all(conn, Q["enqueue_activity_returning"], (*row, tx.now, tx.now))
            if rows:
                wid = rows[0][0]
                claimed.append(ActivityItem(wid, f"{wid}.{salt}", work, 1))
        conn.executemany(Q["lock_activity"], [
            (it.lock_token, tx.now + claim_timeout, it.id) for it in claimed])
    if len(c.activities) > claim:
        conn.executemany(Q["enqueue_activity"], [
            (*row, tx.now, tx.now) for row in c.activities[claim:]])
    if c.cancel_activities:
        conn.executemany(Q["cancel_activity"], c.cancel_activities)
    for target in dict.fromkeys(m.instance_id for m in c.messages):
        tx.notify("orchestrator", target)
    for target in dict.fromkeys(a[0] for a in c.activities[claim:]):
        tx.notify("activity", target)
    if has_record and (c.custom_status_changed or c.kv_changed):
        tx.notify("updated", instance_id)
    if has_record and c.state in TERMINAL_STATES:
        # The final record goes with the news: whoever waits for the end need not read.
        final = fetch_all(conn, Q["get_instance"], (instance_id,))
        tx.notify("terminal", instance_id, record_from_row(final[0]) if final else None)
    return claimed


def _write_kv(conn: sqlite3.Connection, instance_id: str, c: PreparedCommit) -> None:
    """A turn's key-value changes, in the order the commit gives them."""
    if c.kv_clear:
        conn.execute(Q["kv_clear"], (instance_id,))
    if c.kv_delete:
        conn.executemany(Q["kv_delete"], [(instance_id, k) for k in c.kv_delete])
    if c.kv_set:
        conn.executemany(Q["kv_set"], [(instance_id, k, v, t) for k, v, t in c.kv_set])


def abandon_orchestration_item(tx: Tx, token: str, delay: float, undo: bool = False
                               ) -> None:
    """``undo``: the lock was never used (its fetch's caller went away), so the delivery
    made under it does not count as an attempt."""
    instance_id = _held_lock(tx, token)
    tx.conn.execute(Q["undeliver_messages" if undo else "unclaim_messages"],
                    (instance_id, token))
    if delay > 0:
        # The whole instance waits (also messages enqueued meanwhile), so its messages
        # are never delivered out of enqueue order.
        # Under a token nobody holds, marked as a cool-down (see pending_work).
        tx.conn.execute(Q["cool_down"], (COOL_DOWN + new_token(), tx.now + delay,
                                         instance_id))
    else:
        tx.conn.execute(Q["release_lock"], (instance_id,))
        tx.notify("orchestrator", instance_id)


def renew_orchestration_lock(tx: Tx, token: str, lock_timeout: float) -> None:
    cur = tx.conn.execute(Q["renew_lock"], (tx.now + lock_timeout, token, tx.now))
    if cur.rowcount == 0:
        _held_lock(tx, token)  # raises with the reason
        raise LockLost("orchestration lock is not held")  # pragma: no cover


# ------------------------------------------------------------------ activity queue
def _work_id(token: str) -> int:
    head, sep, _ = token.partition(".")
    if not sep or not head.isdigit():
        raise LockLost("not an activity lock token")
    return int(head)


def _activity_lock_lost(tx: Tx, wid: int, token: str) -> LockLost:
    row = fetch_all(tx.conn, Q["activity_lock_token"], (wid,))
    if row and row[0][0] == token:
        return LockLost("activity lock expired")
    return LockLost("activity lock is not held (released, taken over or cancelled)")


def ack_activity(tx: Tx, token: str, completion: PreparedMessage) -> None:
    wid = _work_id(token)
    cur = tx.conn.execute(Q["ack_activity"], (wid, token, tx.now))
    if cur.rowcount == 0:
        raise _activity_lock_lost(tx, wid, token)
    _enqueue(tx, completion)
    tx.notify("orchestrator", completion.instance_id)


def abandon_activity(tx: Tx, token: str, delay: float, ignore_attempt: bool = False) -> None:
    """``ignore_attempt``: the fetch that delivered the row does not count."""
    wid = _work_id(token)
    visible = tx.now + delay if delay > 0 else None
    found = fetch_all(tx.conn, Q["abandon_activity"],
                  (visible, 0 if ignore_attempt else 1, wid, token, tx.now))
    if not found:
        raise _activity_lock_lost(tx, wid, token)
    if delay <= 0:
        tx.notify("activity", found[0][0])


def renew_activity_lock(tx: Tx, token: str, lock_timeout: float) -> None:
    wid = _work_id(token)
    cur = tx.conn.execute(Q["renew_activity"], (tx.now + lock_timeout, wid, token, tx.now))
    if cur.rowcount == 0:
        raise _activity_lock_lost(tx, wid, token)

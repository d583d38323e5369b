"""In-memory reference provider: the contract of :mod:`duroxy.providers.base`, plainly.

Single process, nothing durable. Every method does its whole work under one
``threading.Lock``, so each call is one atomic "transaction" and the provider works
from any event loop and any thread. Listeners are called after the lock is released.

Stored payloads are kept in their wire form (history events via
:func:`~duroxy.history.encode_event`, queued messages via
:func:`~duroxy.history.encode_message`, activity work as JSON), exactly as a database
would keep them, so decoding failures are real (the conformance suite's fixtures store
undecodable rows to exercise them).

Choices where the contract leaves room (the conformance suite checks them):

* A lock whose expiry has passed is lost even if nobody took the instance or row over.
* ``abandon_orchestration_item(delay > 0)`` keeps the whole *instance* out of fetches
  until the delay has passed (messages enqueued meanwhile wait too), so an instance's
  messages are never delivered out of enqueue order.
* ``abandon_activity`` and ``abandon_orchestration_item`` raise ``LockLost`` when the
  lock is no longer held.
* An item fetched for an instance without a record acks away its messages (and
  enqueues what the commit asks for) but creates no record and stores no history.
* ``delete_instance`` also drops the instance's orchestration lock, so a turn in flight
  for a deleted instance fails its ack with ``LockLost`` instead of resurrecting it.
* ``purge_instances`` deletes exactly the matching instances (no cascade), oldest
  updated first when ``limit`` applies.
* History is appended in commit order; an event id already present in that execution
  (or repeated within the commit) fails the ack with ``ProviderError`` and changes
  nothing, like a primary-key violation in a database. The lock stays held.
* ``read_history`` without an execution id reads the highest execution that has history.
* Worker heartbeat rows are kept as the :class:`~duroxy.providers.base.WorkerRecord` s
  given.
* Key-value state is a dict per instance, changed by acks only; listings of it are
  sorted by key.

A fresh provider is empty, so there is nothing to open read-only; instead,
:meth:`InMemoryProvider.read_only_view` gives a read-only provider on the data of an
existing one, as a store opened read-only reads what its writers hold.
"""

from __future__ import annotations

import copy
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..errors import (
    ErrorDetails,
    InstanceAlreadyExists,
    InstanceNotFound,
    LockLost,
    PayloadError,
    ProviderError,
)
from ..history import (
    ActivityWork,
    HistoryEvent,
    OrchestrationStarted,
    OrchestratorMessage,
    decode_event,
    decode_message,
    encode_event,
    encode_message,
)
from ._memory_admin import MemoryAdmin
from .base import (
    TERMINAL_STATES,
    ActivityItem,
    Channel,
    DeleteCounts,
    ExcludedWork,
    FastPath,
    InstanceRecord,
    KvEntry,
    Listener,
    OrchestrationCommit,
    OrchestrationItem,
    Provider,
    QueuedMessage,
    WorkerRecord,
    read_only_refusal,
)

__all__ = ["InMemoryProvider"]

_log = logging.getLogger(__name__)

_STATES = frozenset({"PENDING", "RUNNING"}) | TERMINAL_STATES


@dataclass(slots=True)
class _Record:
    instance_id: str
    name: str
    version: str | None
    state: str
    execution_id: int
    output: str | None
    error: ErrorDetails | None
    custom_status: str | None
    created_at: float
    updated_at: float
    parent_instance_id: str | None
    custom_status_version: int = 0
    unread: int = 0
    #: the KV the current execution started with (None: none)
    kv_base: dict[str, KvEntry] | None = None


@dataclass(slots=True)
class _Message:
    id: int
    instance_id: str
    text: str  # encode_message form
    visible_at: float | None
    #: how often this message was delivered without being consumed
    fetch_count: int = 0


@dataclass(slots=True)
class _OrchLock:
    #: ``None`` while the instance cools down after an abandon with delay: nobody holds
    #: it, but it is not fetchable before ``expires_at``.
    token: str | None
    expires_at: float
    #: the messages this lock delivered; only these are consumed by its ack
    message_ids: tuple[int, ...]
    #: whether the instance had a record at fetch time; an ack only updates records
    #: and history for items that did
    had_record: bool


@dataclass(slots=True)
class _Work:
    id: int
    key: tuple[str, int, int]  # (instance_id, execution_id, event_id)
    name: str  # the activity's name, for fetches that exclude some
    text: str  # ActivityWork.to_json form
    visible_at: float | None
    fetch_count: int = 0
    token: str | None = None
    expires_at: float = 0.0


def _visible(visible_at: float | None, now: float) -> bool:
    return visible_at is None or visible_at <= now


class InMemoryProvider(MemoryAdmin, Provider, FastPath):
    """The reference provider. ``clock`` returns epoch seconds (default ``time.time``);
    tests may inject a fake one to drive lock expiry and visibility."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock: Callable[[], float] = clock if clock is not None else time.time
        self._lock = threading.Lock()
        self._closed = False
        self._records: dict[str, _Record] = {}
        # instance -> execution -> [(event_id, encoded event)] in append order
        self._history: dict[str, dict[int, list[tuple[int, str]]]] = {}
        # insertion order == id order, which is the enqueue (FIFO) order
        self._messages: dict[int, _Message] = {}
        self._orch_locks: dict[str, _OrchLock] = {}
        self._orch_tokens: dict[str, str] = {}  # token -> instance id
        self._work: dict[int, _Work] = {}
        self._work_tokens: dict[str, int] = {}  # token -> work id
        self._workers: dict[str, WorkerRecord] = {}
        # instance -> key -> entry: each instance's committed key-value state
        self._kv: dict[str, dict[str, KvEntry]] = {}
        self._ids = itertools.count(1)
        self._listeners: dict[Channel, dict[int, Listener]] = {
            "orchestrator": {}, "activity": {}, "terminal": {}, "updated": {}}
        self._listener_ids = itertools.count(1)
        self._read_only = False

    def read_only_view(self) -> InMemoryProvider:
        """A provider on this one's data that refuses every write
        (:class:`~duroxy.errors.StoreReadOnly`): it reads what this provider holds, at
        once and from then on. It has listeners and a ``close()`` of its own; as it
        commits nothing, its listeners hear nothing."""
        view = copy.copy(self)  # shares the lock and every table; nothing else
        view._read_only = True
        view._closed = False
        view._listeners = {channel: {} for channel in self._listeners}
        view._listener_ids = itertools.count(1)
        return view

    @property
    def read_only(self) -> bool:
        return self._read_only

    def _writable(self, operation: str) -> None:
        if self._read_only:
            raise read_only_refusal("the in-memory store view", operation)

    # ------------------------------------------------------------ lifecycle
    async def close(self) -> None:
        with self._lock:
            self._closed = True
            for registered in self._listeners.values():
                registered.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise ProviderError("the in-memory provider is closed")

    # ------------------------------------------------------------ wake-ups
    def listen(self, channel: Channel, callback: Listener) -> Callable[[], None]:
        if channel not in self._listeners:
            raise ValueError(f"unknown channel {channel!r}")
        with self._lock:
            key = next(self._listener_ids)
            self._listeners[channel][key] = callback

        def unsubscribe() -> None:
            with self._lock:
                self._listeners[channel].pop(key, None)

        return unsubscribe

    def _notify(self, calls: Iterable[tuple[Channel, str | None]]) -> None:
        """Call listeners; must run without ``self._lock`` held (listeners may call back)."""
        for channel, instance_id in calls:
            with self._lock:
                targets = list(self._listeners[channel].values())
            for callback in targets:
                try:
                    callback(instance_id)
                except Exception:
                    # The commit already happened; a broken listener must not undo it.
                    _log.exception("%s listener failed", channel)

    # ------------------------------------------------------------ helpers (lock held)
    def _snapshot(self, rec: _Record) -> InstanceRecord:
        execs = self._history.get(rec.instance_id, {})
        return InstanceRecord(
            instance_id=rec.instance_id, name=rec.name, version=rec.version, state=rec.state,
            execution_id=rec.execution_id, output=rec.output, error=rec.error,
            custom_status=rec.custom_status, created_at=rec.created_at,
            updated_at=rec.updated_at, parent_instance_id=rec.parent_instance_id,
            history_len=len(execs.get(rec.execution_id, ())),
            custom_status_version=rec.custom_status_version, kv_base=bool(rec.kv_base))

    def _enqueue(self, message: OrchestratorMessage, text: str) -> None:
        mid = next(self._ids)
        self._messages[mid] = _Message(mid, message.instance_id, text, message.visible_at)

    def _new_record(self, event: OrchestrationStarted, instance_id: str, now: float) -> None:
        self._records[instance_id] = _Record(
            instance_id=instance_id, name=event.name, version=event.version, state="PENDING",
            execution_id=event.execution_id, output=None, error=None,
            custom_status=None, created_at=now, updated_at=now,
            parent_instance_id=event.parent_instance_id)

    def _held_orch(self, token: str, now: float) -> tuple[str, _OrchLock]:
        instance_id = self._orch_tokens.get(token)
        lock = self._orch_locks.get(instance_id) if instance_id is not None else None
        if instance_id is None or lock is None or lock.token != token:
            raise LockLost("orchestration lock is not held (released, taken over or deleted)")
        if lock.expires_at <= now:
            raise LockLost("orchestration lock expired")
        return instance_id, lock

    def _held_work(self, token: str, now: float) -> _Work:
        wid = self._work_tokens.get(token)
        row = self._work.get(wid) if wid is not None else None
        if row is None or row.token != token:
            raise LockLost("activity lock is not held (released, taken over or cancelled)")
        if row.expires_at <= now:
            raise LockLost("activity lock expired")
        return row

    def _drop_work(self, wid: int) -> None:
        row = self._work.pop(wid)
        if row.token is not None:
            self._work_tokens.pop(row.token, None)

    def _drop_instance_data(self, instance_id: str) -> None:
        """Remove everything stored for ``instance_id`` (record, history, queued messages,
        activity work, lock)."""
        self._drop_instance_counted(instance_id)

    def _drop_instance_counted(self, instance_id: str) -> DeleteCounts:
        had = self._records.pop(instance_id, None) is not None
        execs = self._history.pop(instance_id, {})
        self._kv.pop(instance_id, None)
        mids = [m.id for m in self._messages.values() if m.instance_id == instance_id]
        for mid in mids:
            del self._messages[mid]
        wids = [w.id for w in self._work.values() if w.key[0] == instance_id]
        for wid in wids:
            self._drop_work(wid)
        lock = self._orch_locks.pop(instance_id, None)
        if lock is not None and lock.token is not None:
            self._orch_tokens.pop(lock.token, None)
        return DeleteCounts(1 if had else 0, sum(1 for evs in execs.values() if evs),
                            sum(len(evs) for evs in execs.values()), len(mids) + len(wids))

    # ------------------------------------------------------------ instances
    async def create_instance(self, message: OrchestratorMessage) -> None:
        self._writable("create_instance")
        event = message.event
        if not isinstance(event, OrchestrationStarted):
            raise ValueError(
                f"create_instance needs an OrchestrationStarted message, got {event.kind}")
        text = encode_message(message)
        with self._lock:
            self._check_open()
            if message.instance_id in self._records:
                raise InstanceAlreadyExists(message.instance_id)
            self._new_record(event, message.instance_id, self._clock())
            self._enqueue(message, text)
        self._notify([("orchestrator", message.instance_id)])

    async def enqueue_orchestrator_message(self, message: OrchestratorMessage) -> None:
        self._writable("enqueue_orchestrator_message")
        text = encode_message(message)
        with self._lock:
            self._check_open()
            if message.instance_id not in self._records:
                raise InstanceNotFound(message.instance_id)
            self._enqueue(message, text)
        self._notify([("orchestrator", message.instance_id)])

    # ------------------------------------------------------------ orchestration queue
    async def fetch_orchestration_items(
        self, lock_timeout: float, limit: int = 1, exclude: ExcludedWork | None = None
    ) -> list[OrchestrationItem]:
        self._writable("fetch_orchestration_items")
        if limit <= 0:
            return []
        with self._lock:
            self._check_open()
            now = self._clock()
            # Group visible messages of fetchable instances; dict order follows each
            # instance's oldest visible message because messages iterate in id order.
            fetchable: dict[str, bool] = {}
            batches: dict[str, list[_Message]] = {}
            for msg in self._messages.values():
                if not _visible(msg.visible_at, now):
                    continue
                ok = fetchable.get(msg.instance_id)
                if ok is None:
                    lock = self._orch_locks.get(msg.instance_id)
                    rec = self._records.get(msg.instance_id)
                    ok = fetchable[msg.instance_id] = (
                        (lock is None or lock.expires_at <= now)
                        and not (exclude is not None and rec is not None
                                 and exclude.excludes_instance(rec.name, rec.version)))
                if ok:
                    batches.setdefault(msg.instance_id, []).append(msg)
            return [self._lock_batch(instance_id, batch, now, lock_timeout)
                    for instance_id, batch in itertools.islice(batches.items(), limit)]

    async def poll_orchestration_items(self, lock_timeout: float, limit: int = 1,
                                       wait: float = 0.0, exclude: ExcludedWork | None = None
                                       ) -> list[OrchestrationItem]:
        """Fetches once: this store does not wait for work (``long_poll`` is false)."""
        return await self.fetch_orchestration_items(lock_timeout, limit, exclude)

    def _lock_batch(self, instance_id: str, batch: list[_Message], now: float,
                    lock_timeout: float) -> OrchestrationItem:
        old = self._orch_locks.get(instance_id)
        if old is not None and old.token is not None:
            self._orch_tokens.pop(old.token, None)  # expired: taken over
        token = uuid.uuid4().hex
        rec = self._records.get(instance_id)
        self._orch_locks[instance_id] = _OrchLock(
            token, now + lock_timeout, tuple(m.id for m in batch), rec is not None)
        self._orch_tokens[token] = instance_id
        delivered: list[QueuedMessage] = []
        for msg in batch:
            msg.fetch_count += 1
            try:
                decoded = decode_message(instance_id, msg.text, msg.visible_at)
            except PayloadError as e:
                delivered.append(QueuedMessage(msg.id, None, str(e)))
            else:
                delivered.append(QueuedMessage(msg.id, decoded))
        return OrchestrationItem(
            instance_id=instance_id, lock_token=token, messages=delivered,
            instance=self._snapshot(rec) if rec is not None else None,
            attempt=max((m.fetch_count for m in batch), default=1))

    async def lock_instance(self, instance_id: str, lock_timeout: float
                            ) -> OrchestrationItem | None:
        self._writable("lock_instance")
        with self._lock:
            self._check_open()
            now = self._clock()
            lock = self._orch_locks.get(instance_id)
            if instance_id not in self._records or (lock is not None and lock.expires_at > now):
                return None
            batch = [m for m in self._messages.values()
                     if m.instance_id == instance_id and _visible(m.visible_at, now)]
            return self._lock_batch(instance_id, batch, now, lock_timeout)

    async def commit_turn(self, instance_id: str, expected_history_len: int,
                          commit: OrchestrationCommit) -> list[ActivityItem]:
        self._writable("commit_turn")
        with self._lock:
            self._check_open()
            now = self._clock()
            rec = self._records.get(instance_id)
            if rec is None or rec.execution_id != commit.execution_id or \
                    self._snapshot(rec).history_len != expected_history_len:
                raise LockLost("the instance moved on since its last turn here")
            lock = self._orch_locks.get(instance_id)
            if lock is not None and lock.expires_at > now:
                raise LockLost("the instance is locked")
            if any(m.instance_id == instance_id and _visible(m.visible_at, now)
                   for m in self._messages.values()):
                raise LockLost("the instance has messages waiting")
            if lock is not None and lock.token is not None:
                self._orch_tokens.pop(lock.token, None)
            token = uuid.uuid4().hex
            self._orch_locks[instance_id] = _OrchLock(token, now + 60.0, (), True)
            self._orch_tokens[token] = instance_id
        try:
            return await self.ack_orchestration_item(token, commit)
        except BaseException:
            with self._lock:  # nothing was applied: drop the lock taken above
                if self._orch_tokens.pop(token, None) is not None:
                    self._orch_locks.pop(instance_id, None)
            raise

    async def ack_orchestration_item(self, lock_token: str, commit: OrchestrationCommit
                                     ) -> list[ActivityItem]:
        self._writable("ack_orchestration_item")
        if commit.state not in _STATES:
            raise ValueError(f"unknown instance state {commit.state!r}")
        # Encode everything before touching state: a failure here changes nothing.
        try:
            history = [(e.event_id, encode_event(e)) for e in commit.history]
            messages = [(m, encode_message(m)) for m in commit.messages]
            works = [(w, w.to_json()) for w in commit.activities]
        except (TypeError, ValueError) as e:
            raise PayloadError(f"commit holds a value with no JSON form: {e}") from None
        with self._lock:
            self._check_open()
            now = self._clock()
            instance_id, lock = self._held_orch(lock_token, now)
            acked = [self._held_work(t, now).id for t in commit.acked_activities]
            rec = self._records.get(instance_id) if lock.had_record else None
            terminal = rec is not None and commit.state in TERMINAL_STATES
            if rec is not None and history:
                stored = self._history.get(instance_id, {}).get(commit.execution_id, [])
                seen = {eid for eid, _ in stored}
                for eid, _ in history:
                    if eid in seen:
                        raise ProviderError(
                            f"history event id {eid} already exists in execution "
                            f"{commit.execution_id} of {instance_id!r}")
                    seen.add(eid)
            # ---- validated: nothing below can fail, so the ack is all or nothing
            if rec is not None:
                if history:
                    per_exec = self._history.setdefault(instance_id, {})
                    per_exec.setdefault(commit.execution_id, []).extend(history)
                rec.state = commit.state
                rec.name = commit.name
                rec.version = commit.version
                rec.execution_id = commit.execution_id
                rec.output = commit.output
                rec.error = commit.error
                rec.custom_status = commit.custom_status
                rec.updated_at = now
                if commit.custom_status_changed:
                    rec.custom_status_version += 1
                if commit.unread is not None:
                    rec.unread = commit.unread
                if commit.replace_kv_base:
                    rec.kv_base = dict(commit.kv_base) if commit.kv_base else None
                if commit.kv_changed:
                    kv = self._kv.setdefault(instance_id, {})
                    if commit.kv_clear:
                        kv.clear()
                    for key in commit.kv_delete:
                        kv.pop(key, None)
                    for key, value, at in commit.kv_set:
                        kv[key] = KvEntry(value, at)
            for msg, text in messages:
                if isinstance(msg.event, OrchestrationStarted) and \
                        msg.instance_id not in self._records:
                    self._new_record(msg.event, msg.instance_id, now)
                self._enqueue(msg, text)
            claimed: list[ActivityItem] = []
            for n, (work, text) in enumerate(works):
                wid = next(self._ids)
                row = self._work[wid] = _Work(
                    wid, (work.instance_id, work.execution_id, work.event_id), work.name,
                    text, None)
                if n < commit.claim_activities:
                    row.token = uuid.uuid4().hex
                    row.expires_at = now + commit.claim_lock_timeout
                    row.fetch_count = 1
                    self._work_tokens[row.token] = wid
                    claimed.append(ActivityItem(wid, row.token, work, 1))
            for wid in acked:
                self._drop_work(wid)
            if commit.cancel_activities:
                cancelled = set(commit.cancel_activities)
                for wid in [w.id for w in self._work.values() if w.key in cancelled]:
                    self._drop_work(wid)
            for mid in lock.message_ids:
                self._messages.pop(mid, None)
            del self._orch_locks[instance_id]
            del self._orch_tokens[lock_token]
        # one call per distinct instance concerned, in enqueue order
        notify: list[tuple[Channel, str | None]] = [
            ("orchestrator", i) for i in dict.fromkeys(m.instance_id for m, _ in messages)]
        notify += [("activity", i) for i in dict.fromkeys(
            w.instance_id for w, _ in works[commit.claim_activities:])]
        if rec is not None and (commit.custom_status_changed or commit.kv_changed):
            notify.append(("updated", instance_id))
        if terminal:
            notify.append(("terminal", instance_id))
        self._notify(notify)
        return claimed

    async def abandon_orchestration_item(self, lock_token: str, delay: float = 0.0, *,
                                         ignore_attempt: bool = False) -> None:
        self._writable("abandon_orchestration_item")
        with self._lock:
            self._check_open()
            now = self._clock()
            instance_id, lock = self._held_orch(lock_token, now)
            del self._orch_tokens[lock_token]
            if ignore_attempt:
                for mid in lock.message_ids:
                    msg = self._messages.get(mid)
                    if msg is not None:
                        msg.fetch_count = max(msg.fetch_count - 1, 0)
            if delay > 0:
                self._orch_locks[instance_id] = _OrchLock(None, now + delay, (), lock.had_record)
            else:
                del self._orch_locks[instance_id]
        if delay <= 0:
            self._notify([("orchestrator", instance_id)])

    async def renew_orchestration_lock(self, lock_token: str, lock_timeout: float) -> None:
        self._writable("renew_orchestration_lock")
        with self._lock:
            self._check_open()
            now = self._clock()
            _, lock = self._held_orch(lock_token, now)
            lock.expires_at = now + lock_timeout

    # ------------------------------------------------------------ activity queue
    async def fetch_activity_items(self, lock_timeout: float, limit: int = 1,
                                   exclude: ExcludedWork | None = None) -> list[ActivityItem]:
        self._writable("fetch_activity_items")
        if limit <= 0:
            return []
        skip = exclude.activities if exclude is not None else frozenset()
        with self._lock:
            self._check_open()
            now = self._clock()
            items: list[ActivityItem] = []
            for row in self._work.values():  # id order: oldest first
                if len(items) >= limit:
                    break
                if not _visible(row.visible_at, now) or row.name in skip:
                    continue
                if row.token is not None and row.expires_at > now:
                    continue
                if row.token is not None:
                    self._work_tokens.pop(row.token, None)  # expired: taken over
                row.token = uuid.uuid4().hex
                row.expires_at = now + lock_timeout
                row.fetch_count += 1
                self._work_tokens[row.token] = row.id
                items.append(ActivityItem(row.id, row.token, ActivityWork.from_json(row.text),
                                          row.fetch_count))
            return items

    async def ack_activity(self, lock_token: str, completion: OrchestratorMessage) -> None:
        self._writable("ack_activity")
        text = encode_message(completion)
        with self._lock:
            self._check_open()
            row = self._held_work(lock_token, self._clock())
            self._drop_work(row.id)
            self._enqueue(completion, text)
        self._notify([("orchestrator", completion.instance_id)])

    async def abandon_activity(self, lock_token: str, delay: float = 0.0, *,
                               ignore_attempt: bool = False) -> None:
        self._writable("abandon_activity")
        with self._lock:
            self._check_open()
            now = self._clock()
            row = self._held_work(lock_token, now)
            del self._work_tokens[lock_token]
            if ignore_attempt:
                row.fetch_count = max(row.fetch_count - 1, 0)
            row.token = None
            row.expires_at = 0.0
            row.visible_at = now + delay if delay > 0 else None
        if delay <= 0:
            self._notify([("activity", row.key[0])])

    async def renew_activity_lock(self, lock_token: str, lock_timeout: float) -> None:
        self._writable("renew_activity_lock")
        with self._lock:
            self._check_open()
            now = self._clock()
            row = self._held_work(lock_token, now)
            row.expires_at = now + lock_timeout

    # ------------------------------------------------------------ reads and management
    async def get_instance(self, instance_id: str) -> InstanceRecord | None:
        with self._lock:
            self._check_open()
            rec = self._records.get(instance_id)
            return self._snapshot(rec) if rec is not None else None

    async def read_history(
        self, instance_id: str, execution_id: int | None = None
    ) -> list[HistoryEvent]:
        with self._lock:
            self._check_open()
            execs = self._history.get(instance_id, {})
            if execution_id is None:
                execution_id = max(execs, default=0)
            texts = [text for _, text in execs.get(execution_id, ())]
        # decode_event raises PayloadError for undecodable stored events
        return [decode_event(text) for text in texts]

    async def list_executions(self, instance_id: str) -> list[int]:
        with self._lock:
            self._check_open()
            return sorted(e for e, evs in self._history.get(instance_id, {}).items() if evs)

    async def list_instances(
        self,
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

    async def delete_instance_tree(self, instance_id: str) -> DeleteCounts:
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

    def _tree(self, instance_id: str) -> list[str]:
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

    async def delete_instance(self, instance_id: str, *, cascade: bool = True) -> int:
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
        self,
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
    async def record_heartbeat(self, worker: WorkerRecord, *,
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

    async def list_workers(self, *, include_stopped: bool = False) -> list[WorkerRecord]:
        with self._lock:
            self._check_open()
            found = [w for w in self._workers.values()
                     if include_stopped or w.stopped_at is None]
        return sorted(found, key=lambda w: (w.started_at, w.worker_id))

    # ------------------------------------------------------------ test hooks

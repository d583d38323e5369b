"""The in-memory provider's queues, commits and lifecycle; its reads, activity queue
and admin calls are mixins beside it (``_reads``, ``_activities``, ``_admin``). What it
promises is in the package's docstring."""

from __future__ import annotations

import copy
import itertools
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence

from ..._clock import Clock, as_clock
from ...errors import (
    InstanceAlreadyExists,
    InstanceNotFound,
    LockLost,
    PayloadError,
    ProviderError,
)
from ...history import (
    OrchestrationStarted,
    OrchestratorMessage,
    decode_message,
    encode_event,
    encode_message,
)
from ..base import (
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
from ..pending import PendingWork
from ._activities import MemoryActivities
from ._admin import MemoryAdmin
from ._reads import MemoryReads
from ._state import Message, OrchLock, Record, SessionLease, Work, visible

__all__ = ["InMemoryProvider"]

_log = logging.getLogger(__name__)

_STATES = frozenset({"PENDING", "RUNNING"}) | TERMINAL_STATES


def _duplicate_id(stored: list[tuple[int, str]], new: list[tuple[int, str]]) -> int | None:
    """An event id of ``new`` already in ``stored`` or repeated within ``new``. Ids come
    in increasing order from the engine: then a look at the last stored one settles it,
    and a commit costs nothing per event already stored (a long fan-out's history)."""
    last = stored[-1][0] if stored else None
    increasing = all(a[0] < b[0] for a, b in itertools.pairwise(new))
    if increasing and (last is None or new[0][0] > last):
        return None
    seen = {eid for eid, _ in stored}
    for eid, _ in new:
        if eid in seen:
            return eid
        seen.add(eid)
    return None


class InMemoryProvider(MemoryActivities, MemoryReads, MemoryAdmin, Provider, FastPath,
                       PendingWork):
    """The reference provider. ``clock``: the store's clock, a :class:`~duroxy._clock.
    Clock` or a function returning epoch seconds (default: the real time); tests may
    give a fake one to drive lock expiry, visibility and record times."""

    def __init__(self, clock: Clock | Callable[[], float] | None = None) -> None:
        self.clock = as_clock(clock)
        self._clock: Callable[[], float] = self.clock.time
        self._lock = threading.Lock()
        self._closed = False
        self._records: dict[str, Record] = {}
        # instance -> execution -> [(event_id, encoded event)] in append order
        self._history: dict[str, dict[int, list[tuple[int, str]]]] = {}
        # insertion order == id order, which is the enqueue (FIFO) order
        self._messages: dict[int, Message] = {}
        self._orch_locks: dict[str, OrchLock] = {}
        self._orch_tokens: dict[str, str] = {}  # token -> instance id
        self._work: dict[int, Work] = {}
        self._work_tokens: dict[str, int] = {}  # token -> work id
        self._workers: dict[str, WorkerRecord] = {}
        # session id -> its holder (activity routing)
        self._sessions: dict[str, SessionLease] = {}
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
    def _snapshot(self, rec: Record) -> InstanceRecord:
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
        self._messages[mid] = Message(mid, message.instance_id, text, message.visible_at)

    def _new_record(self, event: OrchestrationStarted, instance_id: str, now: float) -> None:
        self._records[instance_id] = Record(
            instance_id=instance_id, name=event.name, version=event.version, state="PENDING",
            execution_id=event.execution_id, output=None, error=None,
            custom_status=None, created_at=now, updated_at=now,
            parent_instance_id=event.parent_instance_id)

    def _held_orch(self, token: str, now: float) -> tuple[str, OrchLock]:
        instance_id = self._orch_tokens.get(token)
        lock = self._orch_locks.get(instance_id) if instance_id is not None else None
        if instance_id is None or lock is None or lock.token != token:
            raise LockLost("orchestration lock is not held (released, taken over or deleted)")
        if lock.expires_at <= now:
            raise LockLost("orchestration lock expired")
        return instance_id, lock

    def _held_work(self, token: str, now: float) -> Work:
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
            batches: dict[str, list[Message]] = {}
            for msg in self._messages.values():
                if not visible(msg.visible_at, now):
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

    def _lock_batch(self, instance_id: str, batch: list[Message], now: float,
                    lock_timeout: float) -> OrchestrationItem:
        old = self._orch_locks.get(instance_id)
        if old is not None and old.token is not None:
            self._orch_tokens.pop(old.token, None)  # expired: taken over
        token = uuid.uuid4().hex
        rec = self._records.get(instance_id)
        self._orch_locks[instance_id] = OrchLock(
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
                     if m.instance_id == instance_id and visible(m.visible_at, now)]
            return self._lock_batch(instance_id, batch, now, lock_timeout)

    async def commit_turn(self, instance_id: str, expected_history_len: int,
                          commit: OrchestrationCommit,
                          consume: Sequence[OrchestratorMessage] = ()) -> list[ActivityItem]:
        self._writable("commit_turn")
        payloads = set(encode_message(m) for m in consume)
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
            # (no live lock: no queued message of the instance is delivered to anyone)
            consumed = {m.text: m.id for m in self._messages.values()
                        if m.instance_id == instance_id and m.text in payloads}
            if len(consumed) != len(payloads):
                raise LockLost("a consumed message is no longer queued undelivered")
            if any(m.instance_id == instance_id and visible(m.visible_at, now)
                   and m.text not in consumed for m in self._messages.values()):
                raise LockLost("the instance has messages waiting")
            if lock is not None and lock.token is not None:
                self._orch_tokens.pop(lock.token, None)
            token = uuid.uuid4().hex
            # the ack consumes the messages its lock delivered: here, those consumed
            self._orch_locks[instance_id] = OrchLock(token, now + 60.0,
                                                     tuple(consumed.values()), True)
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
                duplicate = _duplicate_id(stored, history)
                if duplicate is not None:
                    raise ProviderError(
                        f"history event id {duplicate} already exists in execution "
                        f"{commit.execution_id} of {instance_id!r}")
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
                row = self._work[wid] = Work(
                    wid, (work.instance_id, work.execution_id, work.event_id), work.name,
                    text, None, tag=work.tag, session_id=work.session_id)
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
                self._orch_locks[instance_id] = OrchLock(None, now + delay, (), lock.had_record)
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


"""``SqliteProvider``: the embedded store, one SQLite file in WAL mode.

Threads and connections:

* one **writer** thread owns the only connection that writes. It drains its queue and
  runs every waiting operation in one ``BEGIN IMMEDIATE`` transaction (group commit),
  each in its own savepoint; writes queued meanwhile join it before its COMMIT.
  Fetches are writes too: they take locks.
* one **reader** thread owns a second connection for reads (instance records,
  history, listings). In WAL mode readers and the writer do not block each other.
* a one-row read (``get_instance``) runs on the caller's thread instead, on a third
  connection, when that is free: a read takes far less than the two thread wake-ups
  of a hand-off (see ``_inline``).
* ``SqliteProvider.in_memory()`` has a single connection (a private ``:memory:``
  database), so its writer thread serves reads as well.

Both threads are daemons started on first use, and every call captures the running
loop only for its own duration, so the store works from one event loop after another
and never keeps the process alive. Several processes may share one file:
``BEGIN IMMEDIATE`` with a busy timeout (and a retry loop around it) serialises their
writers; a lock expiry decides when one process may take over another's work.

Durability: ``synchronous="FULL"`` (the default) makes an acknowledged commit survive
power loss; ``synchronous="NORMAL"`` is faster and still safe against a process crash,
but the last commits before a power cut may be lost. Transactions that only take,
extend or give back locks (fetches, ``lock_instance``, renewals, abandons) commit
without an fsync even under FULL: WAL recovery keeps a prefix of the commits, the next
durable commit syncs them all, and losing one only hands back locks, as the crash of
their holder would.
Empty fetches are answered by a read, without a write transaction. Worker heartbeats
commit without an fsync too: one is written per runtime and heartbeat interval, and a
heartbeat lost to a power cut only makes its worker look silent until the next one.

Commit first, then effects: nothing a transaction produced (a lock, a claimed
activity, a record) is handed to its caller before its COMMIT has returned (see
``_worker``). The runtime's fetch of orchestration work parks in the writer thread
(``poll_orchestration_items``): a commit that enqueues messages (a start, an event, a
reply) locks them for it in the same transaction, and the writer wakes it when a timer
falls due.

Requires SQLite 3.35 or newer (``RETURNING``, ``ON CONFLICT ... DO UPDATE``, JSON).

One method per operation of the contract, each handing its SQL (in ``_ops``,
``_admin_ops`` and the ``.sql`` files) to the thread that runs it, which is why this
module runs past 500 lines.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..._clock import Clock, as_clock
from ...errors import ConfigurationError, PayloadError, ProviderError
from ...history import (
    HistoryEvent,
    OrchestrationStarted,
    OrchestratorMessage,
    encode_event,
    encode_message,
)
from ...options import TagFilter
from ..base import (
    TERMINAL_STATES,
    ActivityItem,
    ActivityRoute,
    Channel,
    ExcludedWork,
    FastPath,
    InstanceRecord,
    Listener,
    OrchestrationCommit,
    OrchestrationItem,
    Provider,
    WorkerRecord,
    read_only_refusal,
)
from ..pending import PendingWork, PendingWorkReport
from . import _admin_ops, _ops, _routing
from ._inline import Declined, InlineReader
from ._listeners import CHANNELS, Listeners
from ._manage import SqliteManagement
from ._open import MEMORY, SYNC_MODES, Config, parse_location
from ._tx import STOP, Op, Tx
from ._worker import ConnectionWorker

__all__ = ["SqliteProvider"]

log = logging.getLogger("duroxy.providers.sqlite")

T = TypeVar("T")

_STATES = frozenset({"PENDING", "RUNNING"}) | TERMINAL_STATES


#: At most this many callbacks ready to run besides the caller, and ``loop`` counts as
#: idle (see ``_idle``): a runtime's loop nearly always holds a callback or two of
#: housekeeping (a task's wake-up, a finished task's removal), and a burst of work holds
#: far more (W3's fan-in: hundreds), which the writer thread then commits in groups.
IDLE_READY = 4


def _idle(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` has next to nothing ready to run besides the caller: a write it
    runs on its own thread then delays nobody. (asyncio's own loops keep their ready
    callbacks in ``_ready``; a loop without one is never taken for idle.)"""
    ready = getattr(loop, "_ready", None)
    return ready is not None and len(ready) <= IDLE_READY


def _release(inline: InlineReader | None, *workers: ConnectionWorker) -> None:
    """What a provider garbage-collected unclosed gives back: the inline reader's
    connection (closed here), the worker threads' (each closes its own, after the work
    already queued). Never blocks on a read: a thread inside ``InlineReader.read``
    holds the provider, so the provider cannot be collected meanwhile."""
    if inline is not None:
        inline.close()
    for w in workers:
        w.stop_nowait()


# ------------------------------------------------------------------ the provider
#: SQLite takes its busy timeout in milliseconds as a C int.
_LONGEST_BUSY_TIMEOUT_S = 2_000_000.0


class SqliteProvider(SqliteManagement, Provider, FastPath, PendingWork):
    """The embedded store. ``path_or_url``: a file path, ``sqlite:///relative.db``,
    ``sqlite:////abs/path.db`` or ``sqlite::memory:`` (see also :meth:`in_memory`).
    ``synchronous``: ``"FULL"`` (default: an acknowledged commit survives power loss)
    or ``"NORMAL"`` (faster; survives a crash of the process, not of the machine).
    ``busy_timeout``: seconds to wait for another process's write lock.

    The constructor opens nothing; the file is created and migrated on first use.

    ``read_only=True`` (or ``?mode=ro`` in the URL) opens an existing store for reading
    only, with SQLite's ``mode=ro``: the file is never created, migrated or changed (its
    bytes, modification time and journal mode stay as they were, and ``close()`` removes
    the ``-wal``/``-shm`` files a WAL-mode file needs while it is read, unless they were
    there before or another connection uses them). Reads see what writers, in this
    process or others, commit; every write raises
    :class:`~duroxy.errors.StoreReadOnly`. The first read raises
    :class:`~duroxy.errors.StoreNotFound` for a missing file or one that holds no duroxy
    store, and :class:`~duroxy.errors.SchemaVersionError` for a store of another schema
    version.

    Latency switches, each on by default (what each gains is measured on the performance
    page); turning one off changes speed only, never what is committed or when:

    * ``inline_writes``: a write issued while the caller's event loop has next to nothing
      else to run runs on the caller's thread, sparing two thread wake-ups (the event
      loop then waits for that commit's disk sync);
    * ``inline_reads``: a one-row read (an instance's record) runs on the caller's thread
      when its connection is free;
    * ``preallocate_wal``: the write-ahead log is grown to its working size when the store
      opens, so that commits overwrite blocks instead of growing the file;
    * ``warm_up``: a moment before a queued message (a timer) falls due, after an idle
      spell, the writer takes and gives back the write lock, so that the fetch at the due
      time finds its connection warm.

    ``clock``: the store's clock (``Provider.clock``; default: the real time), which
    lock expiry, visibility and record times follow."""

    def __init__(
        self,
        path_or_url: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 30.0,
        read_only: bool = False,
        inline_writes: bool = True,
        inline_reads: bool = True,
        preallocate_wal: bool = True,
        warm_up: bool = True,
        clock: Clock | None = None,
    ) -> None:
        self.clock = as_clock(clock)
        path, options = parse_location(path_or_url)
        mode = "ro" if read_only else None
        for key, value in options.items():
            if key == "mode":
                if value not in ("ro", "rwc"):
                    raise ConfigurationError(
                        f"mode in SQLite URL {path_or_url!r} must be ro (read-only) or rwc "
                        f"(read, write and create: the default), not {value!r}")
                if read_only and value != "ro":
                    raise ConfigurationError(
                        f"read_only=True contradicts mode={value} in {path_or_url!r}")
                mode = value
            elif key == "synchronous":
                synchronous = value
            elif key == "busy_timeout":
                try:
                    busy_timeout = float(value)
                except ValueError:
                    raise ConfigurationError(
                        f"busy_timeout in {path_or_url!r} is not a number") from None
            else:
                raise ConfigurationError(f"unknown option {key!r} in SQLite URL {path_or_url!r}")
        sync = str(synchronous).upper()
        if sync not in SYNC_MODES:
            raise ConfigurationError(
                f"synchronous must be one of {', '.join(SYNC_MODES)}, not {synchronous!r}")
        if (isinstance(busy_timeout, bool) or not isinstance(busy_timeout, (int, float))
                or not 0 <= busy_timeout <= _LONGEST_BUSY_TIMEOUT_S):
            raise ConfigurationError(f"busy_timeout must be 0 to {_LONGEST_BUSY_TIMEOUT_S:g} "
                                     f"seconds, not {busy_timeout!r}")
        self._read_only = mode == "ro"
        if self._read_only and path == MEMORY:
            raise ConfigurationError("a private in-memory SQLite store starts empty: there "
                                     "is nothing to open read-only")
        self._config = Config(path, sync, float(busy_timeout), self._read_only,
                              preallocate_wal=preallocate_wal)
        self._inline_writes = inline_writes
        self._listeners = Listeners()
        self._closed = False
        tag = "memory" if self._config.memory else os.path.basename(path)
        lazy = "NORMAL" if SYNC_MODES.index(sync) > SYNC_MODES.index("NORMAL") else sync
        self._writer = ConnectionWorker(
            f"duroxy-sqlite-writer[{tag}]", self._config.open_writer, group_writes=True,
            begin_timeout=busy_timeout, on_commit=self._listeners.fire,
            sync_levels=(sync, lazy), reopenable=not self._config.memory,
            next_due=_ops.next_due, warm_up=_ops.warm_up if warm_up else None,
            now=self.clock.time)
        self._reader = self._writer if self._config.memory else ConnectionWorker(
            f"duroxy-sqlite-reader[{tag}]", self._config.open_reader, group_writes=False,
            begin_timeout=busy_timeout, now=self.clock.time)
        # A private in-memory database has one connection: the writer's.
        self._inline = None if self._config.memory or not inline_reads else InlineReader(
            self._config.open_inline_reader, self.clock.time)
        # A clock that jumps brings due messages nearer in no real time: parked fetches
        # look again at each jump.
        self._unjump = self.clock.on_jump(self._writer.clock_jumped)
        # An unclosed provider that is garbage-collected closes its connections: the
        # inline reader's at once, the threads' on their threads. Not at interpreter
        # exit: daemon threads just stop there, and every acknowledged commit is
        # already durable.
        self._finalizer = weakref.finalize(self, _release, self._inline, self._writer,
                                           self._reader)
        self._finalizer.atexit = False

    @classmethod
    def in_memory(cls, *, synchronous: str = "FULL", clock: Clock | None = None
                  ) -> SqliteProvider:
        """A private in-memory database, gone when the provider is closed."""
        return cls(MEMORY, synchronous=synchronous, clock=clock)

    @property
    def path(self) -> str | None:
        """The database file, or ``None`` for an in-memory store."""
        return None if self._config.memory else self._config.path

    @property
    def read_only(self) -> bool:
        return self._read_only

    def __repr__(self) -> str:
        where = "in-memory" if self._config.memory else repr(self._config.path)
        mode = "read-only" if self._read_only else f"synchronous={self._config.synchronous}"
        return f"<SqliteProvider {where} {mode}>"

    # ------------------------------------------------------------ plumbing
    def _check_open(self) -> None:
        if self._closed:
            raise ProviderError("the SQLite store is closed")

    def _writable(self, operation: str) -> None:
        """Refuse a write of a read-only store, before anything is queued."""
        ro = self._config.read_only
        if ro is not None:
            raise read_only_refusal(f"the SQLite store {ro.where}", operation)

    async def _write(self, fn: Callable[[Tx], T], discard: Callable[[Any], None] | None = None,
                     *, durable: bool = True, probe: Callable[[Tx], T | None] | None = None,
                     wait: float = 0.0) -> T:
        """Run ``fn`` in a write transaction; its result comes back once committed.
        ``wait``: a fetch that, finding nothing, waits up to that long for work."""
        self._check_open()
        self._writable("a write")  # the write operations refuse first, by name
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        deadline = time.monotonic() + wait if wait > 0 else None
        op = Op(fn, True, loop, fut, discard, durable, probe, deadline)
        if not (self._inline_writes and _idle(loop) and self._writer.run_inline(op)):
            self._writer.submit(op)
        try:
            return await fut
        except asyncio.CancelledError:
            # Cancelled after the outcome came but before this task ran again: what it
            # holds (locks, claims) is given back, as for a cancellation that came first.
            if (discard is not None and fut.done() and not fut.cancelled()
                    and fut.exception() is None):
                discard(fut.result())
            raise

    async def _lock_op(self, fn: Callable[[Tx], T], discard: Callable[[Any], None] | None = None,
                       probe: Callable[[Tx], T | None] | None = None, wait: float = 0.0) -> T:
        """A write that only takes, extends or releases locks: no fsync of its own."""
        return await self._write(fn, discard, durable=False, probe=probe, wait=wait)

    async def _read(self, fn: Callable[[Tx], T]) -> T:
        self._check_open()
        if (self._reader is not self._writer and not self._config.schema_ready.is_set()
                and not self._read_only):  # (read-only: the reader checks the schema)
            await self._write(lambda tx: None)  # the writer creates and migrates the file
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._reader.submit(Op(fn, False, loop, fut))
        return await fut

    async def _read_small(self, fn: Callable[[Tx], T]) -> T:
        """A read of bounded size (one row): on this thread when nothing stands in the
        way (see :class:`InlineReader`), else on the reader thread."""
        self._check_open()
        if self._inline is not None and self._config.schema_ready.is_set():
            result = self._inline.read(fn)
            if not isinstance(result, Declined):
                return result
        return await self._read(fn)

    def _forget_finals(self) -> None:
        """What a commit kept for waiters may be of an instance a delete removed."""
        self._listeners.finals.clear()

    def _background(self, fn: Callable[[Tx], Any]) -> None:
        self._writer.submit(Op(fn, True, None, None, durable=False))

    def _give_back_orchestration_items(self, items: list[OrchestrationItem]) -> None:
        """A fetch whose caller went away: release its locks at once."""
        for item in items:
            self._background(functools.partial(
                _ops.abandon_orchestration_item, token=item.lock_token, delay=0.0,
                undo=True))

    def _give_back_activity_items(self, items: list[ActivityItem]) -> None:
        for item in items:
            self._background(
                functools.partial(_ops.abandon_activity, token=item.lock_token, delay=0.0))


    # ------------------------------------------------------------ lifecycle
    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._listeners.clear()
        self._unjump()
        self._finalizer.detach()
        if self._inline is not None:
            self._inline.close()
        loop = asyncio.get_running_loop()
        waits: list[asyncio.Future[Any]] = []
        for worker in dict.fromkeys((self._reader, self._writer)):
            # A read already past its open check may still submit to a reader that
            # never started: it is refused instead of starting a thread nobody stops.
            if not worker.refuse_if_unstarted():
                fut: asyncio.Future[Any] = loop.create_future()
                worker.submit(Op(STOP, False, loop, fut))
                waits.append(fut)
        for fut in waits:
            await fut
        if self._config.read_only is not None:  # every connection is closed now
            await asyncio.to_thread(self._config.read_only.tidy_up)

    # ------------------------------------------------------------ wake-ups
    def listen(self, channel: Channel, callback: Listener) -> Callable[[], None]:
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r}")
        return self._listeners.add(channel, callback)

    # ------------------------------------------------------------ instances
    @staticmethod
    def _prepare(message: OrchestratorMessage) -> _ops.PreparedMessage:
        ev = message.event
        start = None
        if isinstance(ev, OrchestrationStarted):
            start = _ops.StartInfo(ev.name, ev.version, ev.execution_id, ev.custom_status,
                                   ev.parent_instance_id)
        return _ops.PreparedMessage(message.instance_id, encode_message(message),
                                    message.visible_at, start)

    async def create_instance(self, message: OrchestratorMessage) -> None:
        self._writable("create_instance")
        if not isinstance(message.event, OrchestrationStarted):
            raise ValueError(
                f"create_instance needs an OrchestrationStarted message, got {message.event.kind}")
        msg = self._prepare(message)
        await self._write(lambda tx: _ops.create_instance(tx, msg))

    async def enqueue_orchestrator_message(self, message: OrchestratorMessage) -> None:
        self._writable("enqueue_orchestrator_message")
        msg = self._prepare(message)
        await self._write(lambda tx: _ops.enqueue_orchestrator_message(tx, msg))

    # ------------------------------------------------------------ orchestration queue
    async def fetch_orchestration_items(
        self, lock_timeout: float, limit: int = 1, exclude: ExcludedWork | None = None
    ) -> list[OrchestrationItem]:
        self._writable("fetch_orchestration_items")
        return await self.poll_orchestration_items(lock_timeout, limit, exclude=exclude)

    long_poll = True

    async def poll_orchestration_items(self, lock_timeout: float, limit: int = 1,
                                       wait: float = 0.0, exclude: ExcludedWork | None = None
                                       ) -> list[OrchestrationItem]:
        self._writable("poll_orchestration_items")
        if limit <= 0:
            self._check_open()
            return []
        # A parked fetch that a commit wakes runs this same filtered fetch.
        skip = _ops.skip_orchestrations(exclude)
        return await self._lock_op(
            lambda tx: _ops.fetch_orchestration_items(tx, lock_timeout, limit, skip),
            self._give_back_orchestration_items,
            _ops.probe_orchestration_items if skip is None
            else functools.partial(_ops.probe_orchestration_items, skip=skip), wait=wait)

    async def flush(self) -> None:
        """Return once everything handed to the writer thread before this call has run
        (the locks given back in the background by a cancelled fetch, say). Every write
        this store acknowledged is committed already."""
        if self._closed or not self._writer.started:
            return
        # The writer runs operations in order: this one runs after those queued before.
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._writer.submit(Op(lambda tx: None, False, loop, fut))
        await fut

    async def lock_instance(self, instance_id: str, lock_timeout: float
                            ) -> OrchestrationItem | None:
        self._writable("lock_instance")
        return await self._lock_op(
            lambda tx: _ops.lock_instance(tx, instance_id, lock_timeout),
            lambda item: self._give_back_orchestration_items([item] if item else []))

    async def commit_turn(self, instance_id: str, expected_history_len: int,
                          commit: OrchestrationCommit,
                          consume: Sequence[OrchestratorMessage] = ()) -> list[ActivityItem]:
        self._writable("commit_turn")
        prepared = self._prepare_commit(commit)
        payloads = tuple(dict.fromkeys(encode_message(m) for m in consume))
        claimed = await self._write(
            lambda tx: _ops.commit_turn(tx, instance_id, expected_history_len, prepared,
                                        payloads),
            discard=self._give_back_activity_items)
        return claimed

    async def ack_orchestration_item(self, lock_token: str, commit: OrchestrationCommit
                                     ) -> list[ActivityItem]:
        self._writable("ack_orchestration_item")
        prepared = self._prepare_commit(commit)
        claimed = await self._write(
            lambda tx: _ops.ack_orchestration_item(tx, lock_token, prepared),
            discard=self._give_back_activity_items)
        return claimed

    def _prepare_commit(self, commit: OrchestrationCommit) -> _ops.PreparedCommit:
        if commit.state not in _STATES:
            raise ValueError(f"unknown instance state {commit.state!r}")
        claim = max(0, min(commit.claim_activities, len(commit.activities)))
        try:
            return _ops.PreparedCommit(
                execution_id=commit.execution_id, state=commit.state, name=commit.name,
                version=commit.version, output=commit.output,
                error_json=json.dumps(commit.error.to_json()) if commit.error else None,
                custom_status=commit.custom_status,
                history=[(e.event_id, encode_event(e)) for e in commit.history],
                activities=[(w.instance_id, w.execution_id, w.event_id, w.name, w.to_json(),
                             w.tag or "", w.session_id) for w in commit.activities],
                messages=[self._prepare(m) for m in commit.messages],
                cancel_activities=[(i, x, e) for i, x, e in commit.cancel_activities],
                acked_activities=list(commit.acked_activities),
                claim=(claim, commit.claim_lock_timeout),
                claimed_work=tuple(commit.activities[:claim]),
                custom_status_changed=commit.custom_status_changed, unread=commit.unread,
                kv_base=(commit.replace_kv_base, _admin_ops.kv_base_to_json(commit.kv_base)),
                kv_clear=commit.kv_clear, kv_delete=tuple(commit.kv_delete),
                kv_set=tuple(commit.kv_set),
            )
        except (TypeError, ValueError) as e:
            if isinstance(e, PayloadError):
                raise
            raise PayloadError(f"commit holds a value with no JSON form: {e}") from None

    async def abandon_orchestration_item(self, lock_token: str, delay: float = 0.0, *,
                                         ignore_attempt: bool = False) -> None:
        self._writable("abandon_orchestration_item")
        await self._lock_op(lambda tx: _ops.abandon_orchestration_item(
            tx, lock_token, delay, undo=ignore_attempt))

    async def renew_orchestration_lock(self, lock_token: str, lock_timeout: float) -> None:
        self._writable("renew_orchestration_lock")
        await self._lock_op(lambda tx: _ops.renew_orchestration_lock(tx, lock_token, lock_timeout))

    # ------------------------------------------------------------ activity queue
    async def fetch_activity_items(self, lock_timeout: float, limit: int = 1,
                                   exclude: ExcludedWork | None = None,
                                   route: ActivityRoute | None = None) -> list[ActivityItem]:
        self._writable("fetch_activity_items")
        claim = _routing.Claim.of(route, exclude)
        if limit <= 0 or claim.sql is None:
            self._check_open()
            return []
        return await self._lock_op(
            lambda tx: _routing.fetch_activity_items(tx, lock_timeout, limit, claim),
            self._give_back_activity_items,
            functools.partial(_routing.probe_activity_items, claim=claim))

    async def ack_activity(self, lock_token: str, completion: OrchestratorMessage) -> None:
        self._writable("ack_activity")
        msg = self._prepare(completion)
        await self._write(lambda tx: _ops.ack_activity(tx, lock_token, msg))

    async def abandon_activity(self, lock_token: str, delay: float = 0.0, *,
                               ignore_attempt: bool = False) -> None:
        self._writable("abandon_activity")
        await self._lock_op(
            lambda tx: _ops.abandon_activity(tx, lock_token, delay, ignore_attempt))

    async def renew_activity_lock(self, lock_token: str, lock_timeout: float) -> None:
        self._writable("renew_activity_lock")
        await self._lock_op(lambda tx: _ops.renew_activity_lock(tx, lock_token, lock_timeout))

    # ------------------------------------------------------------ activity sessions
    async def renew_sessions(self, owner: str, session_ids: Sequence[str],
                             lock_timeout: float) -> list[str]:
        self._writable("renew_sessions")
        return await self._lock_op(
            lambda tx: _routing.renew_sessions(tx, owner, session_ids, lock_timeout))

    async def release_sessions(self, owner: str, session_ids: Sequence[str] | None = None
                               ) -> int:
        self._writable("release_sessions")
        return await self._lock_op(
            lambda tx: _routing.release_sessions(tx, owner, session_ids))

    # ------------------------------------------------------------ reads and management
    async def get_instance(self, instance_id: str) -> InstanceRecord | None:
        final = self._listeners.finals.take(instance_id)
        if final is not None:
            self._check_open()
            return final
        return await self._read_small(lambda tx: _admin_ops.get_instance(tx, instance_id))

    async def read_history(
        self, instance_id: str, execution_id: int | None = None
    ) -> list[HistoryEvent]:
        return await self._read(lambda tx: _admin_ops.read_history(tx, instance_id, execution_id))

    async def pending_work(self, accepts: TagFilter | None = None) -> PendingWorkReport:
        return await self._read(lambda tx: _admin_ops.pending_work(tx, accepts))

    async def list_executions(self, instance_id: str) -> list[int]:
        return await self._read(lambda tx: _admin_ops.list_executions(tx, instance_id))

    async def delete_instance(self, instance_id: str, *, cascade: bool = True) -> int:
        self._writable("delete_instance")
        try:
            return await self._write(
                lambda tx: _admin_ops.delete_instance(tx, instance_id, cascade))
        finally:
            self._listeners.finals.clear()

    async def purge_instances(
        self,
        *,
        states: Sequence[str] = tuple(sorted(TERMINAL_STATES)),
        updated_before: float | None = None,
        name: str | None = None,
        limit: int | None = None,
    ) -> int:
        self._writable("purge_instances")
        wanted = [states] if isinstance(states, str) else list(states)
        try:
            return await self._write(
                lambda tx: _admin_ops.purge_instances(tx, wanted, updated_before, name, limit))
        finally:
            self._listeners.finals.clear()

    # ------------------------------------------------------------ workers
    async def record_heartbeat(self, worker: WorkerRecord, *,
                               forget_before: float | None = None) -> None:
        self._writable("record_heartbeat")
        # Not durable: no fsync of its own (see the module's docstring).
        await self._write(lambda tx: _admin_ops.record_heartbeat(tx, worker, forget_before),
                          durable=False)

    async def list_workers(self, *, include_stopped: bool = False) -> list[WorkerRecord]:
        return await self._read(lambda tx: _admin_ops.list_workers(tx, include_stopped))

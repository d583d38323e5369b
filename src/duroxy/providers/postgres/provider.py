"""PostgreSQL store: the provider contract on psycopg 3 (async) and psycopg_pool.

Layout: one schema per tenant (``schema`` parameter) holding the instance records, the
history, the two queues and the per-instance orchestration locks; see
``sql/0001_initial.sql``. Migrations run on first use, serialized across nodes by a
transaction-level advisory lock keyed by the schema name.

Clock: every lease and every visibility decision uses the database server's clock
(``clock_timestamp()`` / ``statement_timestamp()``), never this host's, so clock skew
between worker hosts cannot hand out a live lease or keep an expired one. The only
host-clock values are the ``visible_at`` times the runtime computes for timers, which
are compared with the database clock as given.

Claims use ``FOR UPDATE SKIP LOCKED``; each ack first row-locks its lease and checks the
token and expiry, then commits the whole turn in the same transaction, or raises
``LockLost`` having changed nothing.

Event loops: the pool and the listening connection belong to the loop that opened them.
When that loop shuts down (``asyncio.run`` cancels every task), a guard task closes the
pool. When a call arrives on another loop, both are dropped (their connections closed
without awaiting the old loop) and rebuilt on the new one. Nothing here starts a thread,
so an unclosed provider never keeps the process alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from ...errors import (
    ErrorDetails,
    InstanceAlreadyExists,
    InstanceNotFound,
    LockLost,
    PayloadError,
    ProviderError,
)
from ...history import (
    ActivityWork,
    HistoryEvent,
    OrchestrationStarted,
    OrchestratorMessage,
    decode_event,
    decode_message,
    encode_event,
    encode_message,
)
from ..base import (
    TERMINAL_STATES,
    ActivityItem,
    Channel,
    InstanceRecord,
    Listener,
    OrchestrationCommit,
    OrchestrationItem,
    Provider,
    QueuedMessage,
)
from ._notify import Notifier, note
from ._sql import (
    Migration,
    advisory_key,
    channel_name,
    load_migrations,
    load_statements,
    validate_schema,
)

__all__ = ["PostgresProvider"]

_log = logging.getLogger("duroxy.providers.postgres")

_STATES = frozenset({"PENDING", "RUNNING"}) | TERMINAL_STATES
#: What the corruption test hooks store: not JSON, so every decoder rejects it.
_GARBAGE = "not-json{"
#: SQLSTATE classes worth retrying: connection trouble, serialization failures and
#: deadlocks, lock timeouts, server shutting down or out of resources.
_RETRYABLE_SQLSTATE_PREFIXES = ("08", "40", "55P03", "57P", "53")

Row = tuple[Any, ...]
Conn = psycopg.AsyncConnection[Row]


def _retryable(e: psycopg.Error) -> bool:
    if isinstance(e, psycopg.OperationalError) and e.sqlstate is None:
        return True  # connection lost, pool timeout: no server answer at all
    state = e.sqlstate or ""
    return state.startswith(_RETRYABLE_SQLSTATE_PREFIXES)


def _provider_error(e: psycopg.Error) -> ProviderError:
    if isinstance(e, pg_errors.UniqueViolation):
        detail = e.diag.message_detail or ""
        return ProviderError(f"PostgreSQL store: duplicate key ({detail or e})")
    return ProviderError(f"PostgreSQL store: {type(e).__name__}: {e}", retryable=_retryable(e))


def _record(row: Row) -> InstanceRecord:
    (instance_id, name, version, state, execution_id, output, error, custom_status,
     created_at, updated_at, parent, history_len) = row
    return InstanceRecord(
        instance_id=instance_id, name=name, version=version, state=state,
        execution_id=execution_id, output=output,
        error=ErrorDetails.from_json(json.loads(error)) if error is not None else None,
        custom_status=custom_status, created_at=created_at, updated_at=updated_at,
        parent_instance_id=parent, history_len=int(history_len))


# TCP keepalives let the listening connection notice a silently dead peer (no FIN or
# RST) without any query traffic.
_KEEPALIVE: dict[str, Any] = {
    "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
}


def _defaults(params: dict[str, Any], **defaults: Any) -> dict[str, Any]:
    """The connection parameters among ``defaults`` that the DSN does not set itself."""
    return {k: v for k, v in defaults.items() if k not in params}


def _key(instance_id: str) -> bytes:
    """The row key of an instance: SHA-256 of the id's UTF-8 bytes. Ids can be longer
    than a B-tree entry allows; the digest is short and, unlike a truncation or a weak
    hash, never maps two ids to one key in practice. A lone surrogate (not valid text
    for PostgreSQL either) raises ``UnicodeEncodeError``, a ``ValueError``; so does NUL,
    which PostgreSQL text cannot hold."""
    if "\x00" in instance_id:
        raise ValueError("instance ids cannot contain NUL characters")
    return hashlib.sha256(instance_id.encode("utf-8")).digest()


def _states(state: str | Sequence[str] | None) -> list[str] | None:
    if state is None:
        return None
    return [state] if isinstance(state, str) else list(state)


@dataclass(eq=False, slots=True)
class _Binding:
    """A pool and the tasks around it, all belonging to one event loop."""

    loop: asyncio.AbstractEventLoop
    pool: AsyncConnectionPool[Conn]
    #: the pool's connections, so they can be closed without the loop (see _abandon)
    conns: weakref.WeakSet[Conn]
    opening: asyncio.Task[None] | None = None
    guard: asyncio.Task[None] | None = None
    released: bool = False


class PostgresProvider(Provider):
    """A provider on PostgreSQL (``postgresql://`` DSN or libpq key/value string).

    ``schema`` (default ``duroxy``) holds every table; several schemas are independent
    stores side by side in one database. ``min_size``/``max_size`` size the connection
    pool of this provider (default 1 and 10); one more connection listens for
    notifications once a listener is registered. The constructor opens nothing: the
    pool opens, and the schema is migrated, on first use.
    """

    def __init__(
        self,
        dsn: str,
        schema: str = "duroxy",
        *,
        min_size: int = 1,
        max_size: int = 10,
        pool_timeout: float = 30.0,
    ) -> None:
        if not isinstance(dsn, str) or not dsn:
            raise ValueError("a PostgreSQL DSN is required")
        try:
            params = conninfo_to_dict(dsn)  # parses only; connects to nothing
        except psycopg.Error as e:
            raise ValueError(f"malformed PostgreSQL DSN: {e}") from None
        if min_size < 0 or max_size < 1 or min_size > max_size:
            raise ValueError(f"bad pool size: min_size={min_size}, max_size={max_size}")
        self._dsn = dsn
        self._schema = validate_schema(schema)
        self._min_size = min_size
        self._max_size = max_size
        self._pool_timeout = pool_timeout
        self._q = load_statements(schema)
        self._migrations: list[Migration] = load_migrations(schema)
        self._channel = channel_name(schema)
        self._node_id = uuid.uuid4().hex[:12]
        # Defaults the DSN may override: a name that shows in pg_stat_activity, and a
        # bound on connection attempts to an unreachable server.
        self._conn_kwargs = _defaults(params, application_name="duroxy", connect_timeout=10)
        self._notifier = Notifier(dsn, self._channel, self._node_id, _defaults(
            params, application_name="duroxy-listen", connect_timeout=10, **_KEEPALIVE))
        # The pool of the event loop in use (see _ready):
        self._binding: _Binding | None = None
        self._migrated = False
        self._closed = False

    @property
    def schema(self) -> str:
        return self._schema

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel of this provider's schema."""
        return self._channel

    def __repr__(self) -> str:
        return f"PostgresProvider(schema={self._schema!r})"

    # ------------------------------------------------------------ lifecycle
    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._notifier.clear()
        binding, self._binding = self._binding, None
        if binding is None:
            await self._notifier.aclose()
        elif binding.loop is asyncio.get_running_loop():
            await self._release(binding)
        else:
            self._abandon(binding)

    def _bind(self, loop: asyncio.AbstractEventLoop) -> _Binding:
        """Build the pool for ``loop`` (not yet open) and the tasks that open and guard it."""
        conns: weakref.WeakSet[Conn] = weakref.WeakSet()

        async def configure(conn: Conn) -> None:
            conns.add(conn)

        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self._dsn, min_size=self._min_size, max_size=self._max_size, open=False,
            timeout=self._pool_timeout, kwargs={"autocommit": True, **self._conn_kwargs},
            configure=configure, name=f"duroxy-{self._schema}")
        b = _Binding(loop, pool, conns)
        b.opening = loop.create_task(self._open(pool), name=f"{pool.name}-open")
        b.guard = loop.create_task(self._guard(b), name=f"{pool.name}-guard")
        self._binding = b
        return b

    async def _open(self, pool: AsyncConnectionPool[Conn]) -> None:
        await pool.open()
        if not self._migrated:
            async with pool.connection() as conn:
                await self._migrate(conn)
            self._migrated = True

    async def _guard(self, b: _Binding) -> None:
        """Sleep until cancelled, then release the binding. Cancellation comes from
        close(), or from the loop shutting down (asyncio.run and friends cancel every
        task): closing the pool then matters, because a pool worker caught in a
        connection attempt swallows its own cancellation and would hang the shutdown."""
        try:
            await b.loop.create_future()
        finally:
            if not b.released:
                await self._release(b)

    async def _release(self, b: _Binding) -> None:
        """Close the binding's pool and listener, on the binding's (running) loop."""
        b.released = True
        me = asyncio.current_task()
        for task in (b.opening, b.guard):
            if task is not None and task is not me and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self._binding in (b, None):
            await self._notifier.aclose()
        await b.pool.close(timeout=1.0)

    def _abandon(self, b: _Binding) -> None:
        """Forget a binding whose loop is gone (closed, or just not the running one),
        closing its sockets synchronously: that loop cannot run the pool's close."""
        b.released = True
        if self._binding in (b, None):
            self._notifier.drop()
        for conn in list(b.conns):
            if not conn.closed:
                conn.pgconn.finish()

    async def _ready(self) -> AsyncConnectionPool[Conn]:
        """The pool of the running loop, opened and migrated."""
        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                raise ProviderError("the PostgreSQL provider is closed")
            b = self._binding
            if b is None:
                b = self._bind(loop)
            elif b.loop is not loop:
                _log.debug("event loop changed: rebuilding the pool of %r", self)
                self._abandon(b)
                b = self._bind(loop)
            elif b.released or (b.opening is not None and b.opening.done() and (
                    b.opening.cancelled() or b.opening.exception() is not None)):
                # Released by a loop shutdown, or the last open failed (server down,
                # migration error): retry on a fresh pool. Another call may rebuild it
                # while this one awaits the release, hence the loop.
                if not b.released:
                    await self._release(b)
                if self._binding is b:
                    self._binding = None
                continue
            break
        self._notifier.ensure_running()
        assert b.opening is not None
        await asyncio.shield(b.opening)
        return b.pool

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        try:
            pool = await self._ready()
            async with pool.connection() as conn:
                yield conn
        except psycopg.Error as e:
            raise _provider_error(e) from e

    @contextlib.asynccontextmanager
    async def _transaction(self, *, pipeline: bool = False) -> AsyncIterator[Conn]:
        """A transaction. With ``pipeline``, statements are sent without waiting for
        their results until one is read (a fetch), so BEGIN travels with the first
        statement and the writes that follow travel with COMMIT: one round trip each."""
        async with self._connection() as conn:
            if pipeline:
                async with conn.pipeline(), conn.transaction():
                    yield conn
            else:
                async with conn.transaction():
                    yield conn

    async def _migrate(self, conn: Conn) -> None:
        """Apply the migrations this schema lacks, each exactly once even when several
        nodes start together: the advisory lock serializes them and each re-reads the
        version after taking it."""
        schema = sql.Identifier(self._schema)
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", [advisory_key(self._schema)])
            cur = await conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                                     [self._schema])
            if await cur.fetchone() is None:
                await conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
            await conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.schema_version ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT clock_timestamp())").format(schema))
            cur = await conn.execute(sql.SQL(
                "SELECT coalesce(max(version), 0) FROM {}.schema_version").format(schema))
            row = await cur.fetchone()
            current = int(row[0]) if row is not None else 0
            latest = self._migrations[-1].version if self._migrations else 0
            if current > latest:
                raise ProviderError(
                    f"schema {self._schema!r} is at version {current}, newer than this "
                    f"duroxy knows ({latest}); upgrade duroxy")
            for mig in self._migrations:
                if mig.version <= current:
                    continue
                _log.info("applying migration %04d_%s to schema %r",
                          mig.version, mig.name, self._schema)
                await conn.execute(mig.script, prepare=False)
                await conn.execute(sql.SQL(
                    "INSERT INTO {}.schema_version (version, name) VALUES (%s, %s)"
                ).format(schema), [mig.version, mig.name])

    async def wait_listening(self, timeout: float = 10.0) -> None:
        """Wait until the listening connection is subscribed, so that work other nodes
        commit from now on wakes this node's listeners. Needs a registered listener."""
        await self._ready()
        await self._notifier.wait_ready(timeout)

    @property
    def listener_backend_pid(self) -> int | None:
        """Server process id of the listening connection (``None`` when not connected)."""
        return self._notifier.backend_pid

    # ------------------------------------------------------------ wake-ups
    def listen(self, channel: Channel, callback: Listener) -> Callable[[], None]:
        unsubscribe = self._notifier.add(channel, callback)
        with contextlib.suppress(RuntimeError):
            # Start listening now when called on the loop in use; otherwise the next
            # call on the provider starts it.
            b = self._binding
            if b is not None and b.loop is asyncio.get_running_loop() and not self._closed:
                self._notifier.ensure_running()
        return unsubscribe

    def _note(self, channel: Channel, instance_id: str) -> str:
        return note(channel, self._node_id, instance_id)

    # ------------------------------------------------------------ instances
    async def create_instance(self, message: OrchestratorMessage) -> None:
        event = message.event
        if not isinstance(event, OrchestrationStarted):
            raise ValueError(
                f"create_instance needs an OrchestrationStarted message, got {event.kind}")
        params = {
            "key": _key(message.instance_id), "instance_id": message.instance_id,
            "name": event.name, "version": event.version,
            "execution_id": event.execution_id, "custom_status": event.custom_status,
            "parent_instance_id": event.parent_instance_id,
            "payload": encode_message(message), "due_at": message.visible_at,
            "channel": self._channel,
            "note": self._note("orchestrator", message.instance_id),
        }
        async with self._connection() as conn:
            cur = await conn.execute(self._q["create_instance"], params)
            if cur.rowcount != 1:
                raise InstanceAlreadyExists(message.instance_id)
        self._notifier.call([("orchestrator", message.instance_id)])

    async def enqueue_orchestrator_message(self, message: OrchestratorMessage) -> None:
        params = {
            "key": _key(message.instance_id), "payload": encode_message(message),
            "due_at": message.visible_at, "channel": self._channel,
            "note": self._note("orchestrator", message.instance_id),
        }
        async with self._connection() as conn:
            cur = await conn.execute(self._q["enqueue_existing"], params)
            if cur.rowcount != 1:
                raise InstanceNotFound(message.instance_id)
        self._notifier.call([("orchestrator", message.instance_id)])

    # ------------------------------------------------------------ orchestration queue
    async def fetch_orchestration_items(
        self, lock_timeout: float, limit: int = 1
    ) -> list[OrchestrationItem]:
        if limit <= 0:
            return []
        async with self._transaction(pipeline=True) as conn:
            # An instance appears once per visible message; scanning a few rows per
            # wanted instance keeps batches full unless one instance has a long backlog.
            cur = await conn.execute(self._q["claim_instances"], {"scan": limit * 4 + 16})
            claimed = list(dict.fromkeys((bytes(k), iid) for k, iid in await cur.fetchall()))
            if not claimed:
                return []
            return await self._lease(conn, claimed[:limit], lock_timeout, keep_empty=False)

    async def lock_instance(self, instance_id: str, lock_timeout: float
                            ) -> OrchestrationItem | None:
        async with self._transaction(pipeline=True) as conn:
            # Lock-only: a lease lost in a server crash just means the work is fetched
            # again, so this commit need not wait for the WAL flush.
            await conn.execute("SET LOCAL synchronous_commit = off")
            cur = await conn.execute(self._q["claim_instance"], {"key": _key(instance_id)})
            row = await cur.fetchone()
            if row is None:
                return None
            [item] = await self._lease(conn, [(bytes(row[0]), row[1])], lock_timeout,
                                       keep_empty=True)
            return item

    async def _lease(self, conn: Conn, claimed: list[tuple[bytes, str]], lock_timeout: float,
                     *, keep_empty: bool) -> list[OrchestrationItem]:
        """Lease the claimed (row-locked) instances, given as (key, id), and deliver their
        visible messages, inside the caller's transaction. Without ``keep_empty``, an
        instance left with no visible message is released and skipped."""
        keys = [k for k, _ in claimed]
        tokens = [uuid.uuid4().hex for _ in claimed]
        # Both statements go out before either result is read (one round trip when the
        # connection is in pipeline mode).
        delivered = await conn.execute(self._q["lock_and_deliver"], {
            "keys": keys, "tokens": tokens, "lock_timeout": float(lock_timeout)})
        instances = await conn.execute(self._q["get_instances"], {"keys": keys})
        by_key: dict[bytes, list[Row]] = {k: [] for k in keys}
        for row in await delivered.fetchall():
            by_key[bytes(row[0])].append(row)
        records = {r[0]: _record(r) for r in await instances.fetchall()}
        empty = [k for k, rows in by_key.items() if not rows]
        if empty and not keep_empty:
            # Consumed by a concurrent turn between the claim and the lease.
            await conn.execute(self._q["release_locks"], {"keys": empty})
        items: list[OrchestrationItem] = []
        for (key, iid), token in zip(claimed, tokens, strict=True):
            rows = sorted(by_key[key], key=lambda r: int(r[1]))
            if not rows and not keep_empty:
                continue
            messages: list[QueuedMessage] = []
            for _, mid, payload, due_at, _attempts in rows:
                try:
                    messages.append(QueuedMessage(mid, decode_message(iid, payload, due_at)))
                except PayloadError as e:
                    messages.append(QueuedMessage(mid, None, str(e)))
            items.append(OrchestrationItem(
                instance_id=iid, lock_token=token, messages=messages,
                instance=records.get(iid),
                attempt=max((int(r[4]) for r in rows), default=1)))
        return items

    async def _check_orchestration_lock(self, conn: Conn, lock_token: str
                                        ) -> tuple[bytes, str, bool]:
        """(key, id, had a record at fetch) of the instance whose lease ``lock_token``
        names; ``LockLost`` unless the lease is still held."""
        cur = await conn.execute(self._q["check_orchestration_lock"], {"token": lock_token})
        row = await cur.fetchone()
        if row is None:
            raise LockLost("orchestration lock is not held (released, taken over or deleted)")
        if not row[2]:
            raise LockLost("orchestration lock expired")
        return bytes(row[0]), str(row[1]), bool(row[3])

    async def ack_orchestration_item(self, lock_token: str, commit: OrchestrationCommit) -> None:
        if commit.state not in _STATES:
            raise ValueError(f"unknown instance state {commit.state!r}")
        # Encode everything before the transaction: a failure here changes nothing.
        try:
            history = [encode_event(e) for e in commit.history]
            messages = [encode_message(m) for m in commit.messages]
            works = [w.to_json() for w in commit.activities]
        except (TypeError, ValueError) as e:
            raise PayloadError(f"commit holds a value with no JSON form: {e}") from None
        error = json.dumps(commit.error.to_json()) if commit.error is not None else None
        notes: list[tuple[Channel, str]] = [
            ("orchestrator", i) for i in dict.fromkeys(m.instance_id for m in commit.messages)]
        notes += [("activity", i) for i in dict.fromkeys(w.instance_id for w in commit.activities)]
        async with self._transaction(pipeline=True) as conn:
            key, instance_id, has_record = await self._check_orchestration_lock(
                conn, lock_token)
            if commit.acked_activities:
                await self._take_acked_activities(conn, commit.acked_activities)
            if has_record and commit.state in TERMINAL_STATES:
                notes.append(("terminal", instance_id))
            if has_record:
                if history:
                    await conn.execute(self._q["append_history"], {
                        "key": key, "execution_id": commit.execution_id,
                        "event_ids": [e.event_id for e in commit.history],
                        "payloads": history})
                await conn.execute(self._q["update_instance"], {
                    "key": key, "state": commit.state, "name": commit.name,
                    "version": commit.version, "execution_id": commit.execution_id,
                    "output": commit.output, "error": error,
                    "custom_status": commit.custom_status})
            if commit.messages:
                await self._enqueue_messages(conn, commit.messages, messages)
            if commit.activities:
                acts = commit.activities
                await conn.execute(self._q["enqueue_activities"], {
                    "keys": [_key(w.instance_id) for w in acts],
                    "instance_ids": [w.instance_id for w in acts],
                    "execution_ids": [w.execution_id for w in acts],
                    "event_ids": [w.event_id for w in acts], "payloads": works})
            if commit.cancel_activities:
                keys = commit.cancel_activities
                await conn.execute(self._q["cancel_activities"], {
                    "keys": [_key(k[0]) for k in keys], "execution_ids": [k[1] for k in keys],
                    "event_ids": [k[2] for k in keys]})
            await conn.execute(self._q["finish_turn"],
                               {"key": key, "token": lock_token})
            await self._send_notes(conn, notes)
        self._notifier.call(notes)

    async def _take_acked_activities(self, conn: Conn, tokens: list[str]) -> None:
        """Delete the work rows whose results this turn consumed; ``LockLost`` (failing
        the whole ack) unless every one of their leases is still held."""
        cur = await conn.execute(self._q["check_activity_locks"], {"tokens": tokens})
        rows = await cur.fetchall()
        if len(rows) != len(set(tokens)):
            raise LockLost("an acknowledged activity's lock is not held (released, taken "
                           "over or cancelled)")
        if not all(alive for _, alive in rows):
            raise LockLost("an acknowledged activity's lock expired")
        await conn.execute(self._q["delete_activities"], {"ids": [rid for rid, _ in rows]})

    async def _enqueue_messages(self, conn: Conn, msgs: Sequence[OrchestratorMessage],
                                payloads: list[str]) -> None:
        starts = [(m.instance_id, m.event) for m in msgs
                  if isinstance(m.event, OrchestrationStarted)]
        if starts:
            await conn.execute(self._q["create_started_records"], {
                "keys": [_key(iid) for iid, _ in starts],
                "instance_ids": [iid for iid, _ in starts],
                "names": [e.name for _, e in starts],
                "versions": [e.version for _, e in starts],
                "execution_ids": [e.execution_id for _, e in starts],
                "custom_statuses": [e.custom_status for _, e in starts],
                "parent_instance_ids": [e.parent_instance_id for _, e in starts],
            })
        await conn.execute(self._q["enqueue_messages"], {
            "keys": [_key(m.instance_id) for m in msgs],
            "instance_ids": [m.instance_id for m in msgs], "payloads": payloads,
            "due_ats": [m.visible_at for m in msgs]})

    async def _send_notes(self, conn: Conn, notes: Sequence[tuple[Channel, str]]) -> None:
        if notes:
            await conn.execute(self._q["notify"], {
                "channel": self._channel, "notes": [self._note(ch, i) for ch, i in notes]})

    async def abandon_orchestration_item(self, lock_token: str, delay: float = 0.0) -> None:
        async with self._transaction() as conn:
            cur = await conn.execute(self._q["abandon_orchestration"],
                                     {"token": lock_token, "delay": float(delay)})
            row = await cur.fetchone()
            if row is None:
                raise LockLost("orchestration lock is not held or expired")
            notes: list[tuple[Channel, str]] = [("orchestrator", row[0])] if delay <= 0 else []
            await self._send_notes(conn, notes)
        self._notifier.call(notes)

    async def renew_orchestration_lock(self, lock_token: str, lock_timeout: float) -> None:
        async with self._connection() as conn:
            cur = await conn.execute(self._q["renew_orchestration"],
                                     {"token": lock_token, "lock_timeout": float(lock_timeout)})
            if cur.rowcount != 1:
                raise LockLost("orchestration lock is not held or expired")

    # ------------------------------------------------------------ activity queue
    async def fetch_activity_items(self, lock_timeout: float, limit: int = 1) -> list[ActivityItem]:
        if limit <= 0:
            return []
        async with self._connection() as conn:
            cur = await conn.execute(self._q["fetch_activities"],
                                     {"limit": limit, "lock_timeout": float(lock_timeout)})
            rows = sorted(await cur.fetchall(), key=lambda r: int(r[0]))
        items: list[ActivityItem] = []
        for rid, token, payload, attempts in rows:
            try:
                items.append(ActivityItem(int(rid), token, ActivityWork.from_json(payload),
                                          int(attempts)))
            except PayloadError as e:
                # Only tampering produces this. Raising would strand the rest of the
                # batch until its leases lapse; the bad row stays leased (out of the
                # way) and comes back, with its attempt count growing, after the lease.
                _log.error("activity work row %s does not decode (attempt %s): %s",
                           rid, attempts, e)
        return items

    async def ack_activity(self, lock_token: str, completion: OrchestratorMessage) -> None:
        payload = encode_message(completion)
        notes: list[tuple[Channel, str]] = [("orchestrator", completion.instance_id)]
        async with self._transaction(pipeline=True) as conn:
            cur = await conn.execute(self._q["check_activity_lock"], {"token": lock_token})
            row = await cur.fetchone()
            if row is None:
                raise LockLost("activity lock is not held (released, taken over or cancelled)")
            if not row[2]:
                raise LockLost("activity lock expired")
            await conn.execute(self._q["delete_activity"], {"id": row[0]})
            await self._enqueue_messages(conn, [completion], [payload])
            await self._send_notes(conn, notes)
        self._notifier.call(notes)

    async def abandon_activity(self, lock_token: str, delay: float = 0.0) -> None:
        async with self._transaction() as conn:
            cur = await conn.execute(self._q["abandon_activity"],
                                     {"token": lock_token, "delay": float(delay)})
            row = await cur.fetchone()
            if row is None:
                raise LockLost("activity lock is not held (released, taken over or cancelled)")
            notes: list[tuple[Channel, str]] = [("activity", row[0])] if delay <= 0 else []
            await self._send_notes(conn, notes)
        self._notifier.call(notes)

    async def renew_activity_lock(self, lock_token: str, lock_timeout: float) -> None:
        async with self._connection() as conn:
            cur = await conn.execute(self._q["renew_activity"],
                                     {"token": lock_token, "lock_timeout": float(lock_timeout)})
            if cur.rowcount != 1:
                raise LockLost("activity lock is not held (expired, taken over or cancelled)")

    # ------------------------------------------------------------ reads and management
    async def get_instance(self, instance_id: str) -> InstanceRecord | None:
        async with self._connection() as conn:
            cur = await conn.execute(self._q["get_instances"], {"keys": [_key(instance_id)]})
            row = await cur.fetchone()
        return _record(row) if row is not None else None

    async def read_history(
        self, instance_id: str, execution_id: int | None = None
    ) -> list[HistoryEvent]:
        async with self._connection() as conn:
            cur = await conn.execute(self._q["read_history"],
                                     {"key": _key(instance_id), "execution_id": execution_id})
            rows = await cur.fetchall()
        # decode_event raises PayloadError for an undecodable stored event
        return [decode_event(r[0]) for r in rows]

    async def list_executions(self, instance_id: str) -> list[int]:
        async with self._connection() as conn:
            cur = await conn.execute(self._q["list_executions"], {"key": _key(instance_id)})
            return [int(r[0]) for r in await cur.fetchall()]

    async def list_instances(
        self,
        *,
        state: str | Sequence[str] | None = None,
        name: str | None = None,
        parent_instance_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[InstanceRecord]:
        async with self._connection() as conn:
            cur = await conn.execute(self._q["list_instances"], {
                "states": _states(state), "name": name, "parent": parent_instance_id,
                "limit": max(limit, 0), "offset": max(offset, 0)})
            return [_record(r) for r in await cur.fetchall()]

    async def delete_instance(self, instance_id: str, *, cascade: bool = True) -> int:
        async with self._transaction() as conn:
            cur = await conn.execute(self._q["instance_tree"],
                                     {"key": _key(instance_id), "cascade": cascade})
            # An id without a record may still have leftovers (queued messages): delete
            # those too, counting no instance.
            keys = [bytes(r[0]) for r in await cur.fetchall()] or [_key(instance_id)]
            cur = await conn.execute(self._q["delete_instances"], {"keys": keys})
            return max(cur.rowcount, 0)

    async def purge_instances(
        self,
        *,
        states: Sequence[str] = tuple(sorted(TERMINAL_STATES)),
        updated_before: float | None = None,
        name: str | None = None,
        limit: int | None = None,
    ) -> int:
        async with self._transaction() as conn:
            cur = await conn.execute(self._q["purge_candidates"], {
                "states": _states(states), "before": updated_before, "name": name,
                "limit": None if limit is None else max(limit, 0)})
            keys = [bytes(r[0]) for r in await cur.fetchall()]
            if not keys:
                return 0
            cur = await conn.execute(self._q["delete_instances"], {"keys": keys})
            return max(cur.rowcount, 0)

    # ------------------------------------------------------------ test hooks
    async def corrupt_history(self, instance_id: str) -> None:
        """Test hook: make every stored history event of the instance undecodable."""
        async with self._connection() as conn:
            await conn.execute(self._q["corrupt_history"],
                               {"key": _key(instance_id), "garbage": _GARBAGE})

    async def corrupt_messages(self, instance_id: str) -> None:
        """Test hook: make every queued message of the instance undecodable."""
        async with self._connection() as conn:
            await conn.execute(self._q["corrupt_messages"],
                               {"key": _key(instance_id), "garbage": _GARBAGE})

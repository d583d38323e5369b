"""The connections of the PostgreSQL store: its pool and listening connection, bound
to one event loop, and how one statement runs. The base of PostgresProvider.

Event loops: the pool and the listening connection belong to the loop that opened them.
When that loop shuts down (``asyncio.run`` cancels every task), a guard task closes the
pool. When a call arrives on another loop, both are dropped (their connections closed
without awaiting the old loop) and rebuilt on the new one. Nothing here starts a thread,
so an unclosed provider never keeps the process alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.array import ListBinaryDumper
from psycopg.types.string import StrBinaryDumper
from psycopg_pool import AsyncConnectionPool

from ..._redact import redact
from ...errors import ProviderError
from . import _arrays
from ._errors import OutcomeUnknown, provider_error
from ._migrate import check, migrate
from ._notify import Notifier
from ._pool import Pool
from ._sql import (
    Migration,
    Statement,
    channel_name,
    load_migrations,
    load_statements,
    session_setup,
    validate_schema,
)
from ._warm import warm_calls

__all__ = ["Conn", "Connections", "Row"]

_log = logging.getLogger("duroxy.providers.postgres")

Row = tuple[Any, ...]
Conn = psycopg.AsyncConnection[Row]

#: psycopg's raw cursor (3.2 and later) takes $n placeholders and parses nothing.
_RawCursor: Any = getattr(psycopg, "AsyncRawCursor", None)
#: Management statements whose best plan depends on which of their filters are NULL:
#: never prepared, so each execution is planned for its own values; and the release of
#: a runtime's sessions, which runs once in its life, when it stops.
_UNPREPARED = frozenset({"list_instances", "purge_candidates", "instance_tree",
                         "delete_instances", "record_heartbeat", "list_workers",
                         "prune_executions", "kv_read", "delete_instances_counted",
                         "instance_stats", "release_sessions"})
#: A connection the pool opens while it holds at most this many prepares the hot
#: statements before it serves (see _warm.py): these few serve a lightly loaded store,
#: where every turn's latency counts. Those a burst adds beyond them prepare only what
#: they run, when they first run it: warming them too would plan every statement on
#: every connection, much of it never used, while the burst waits for them.
_WARM_CONNECTIONS = 3

# TCP keepalives let the listening connection notice a silently dead peer (no FIN or
# RST) without any query traffic.
_KEEPALIVE: dict[str, Any] = {
    "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
}


async def _rolled_back(conn: Conn, e: psycopg.Error) -> bool:
    """After ``e`` from a transaction sent on ``conn``: whether it certainly committed
    nothing. Only an ordinary error (severity ERROR, which ends the statement, not the
    session) on a connection that then rolls back to idle says so."""
    if conn.closed or e.sqlstate is None or getattr(
            e.diag, "severity_nonlocalized", None) != "ERROR":
        return False
    try:
        await conn.rollback()
    except psycopg.Error:
        return False
    return conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def _defaults(params: dict[str, Any], **defaults: Any) -> dict[str, Any]:
    """The connection parameters among ``defaults`` that the DSN does not set itself."""
    return {k: v for k, v in defaults.items() if k not in params}


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


def _finish(conns: weakref.WeakSet[Conn]) -> None:
    """Close what is still open of ``conns`` at once, without the loop they belong to."""
    for conn in list(conns):
        if not conn.closed:
            conn.pgconn.finish()



class Connections:
    """The pool of the event loop in use (see ``_ready``), opened and migrated on first
    use, and the listening connection (``_notifier``)."""

    def __init__(self, dsn: str, schema: str, *, min_size: int, max_size: int,
                 pool_timeout: float, read_only: bool, warm_connections: bool) -> None:
        if not isinstance(dsn, str) or not dsn:
            raise ValueError("a PostgreSQL DSN is required")
        try:
            params = conninfo_to_dict(dsn)  # parses only; connects to nothing
        except psycopg.Error as e:
            raise ValueError(redact(f"malformed PostgreSQL DSN: {e}")) from None
        if min_size < 0 or max_size < 1 or min_size > max_size:
            raise ValueError(f"bad pool size: min_size={min_size}, max_size={max_size}")
        self._dsn = dsn
        self._schema = validate_schema(schema)
        self._min_size = min_size
        self._max_size = max_size
        self._pool_timeout = pool_timeout
        self._read_only = bool(read_only)
        self._warm_connections = warm_connections
        #: when the last statement ended (time.monotonic()): whether the store is busy
        self._last_statement = 0.0
        self._q = load_statements(schema)
        assert self._q.keys() >= _UNPREPARED
        # Run once on every new pooled connection (see session_setup).
        self._session_setup = session_setup(self._schema, read_only=self._read_only)
        self._migrations: list[Migration] = load_migrations(schema)
        self._channel = channel_name(schema)
        self._node_id = uuid.uuid4().hex[:12]
        # Defaults the DSN may override: a name that shows in pg_stat_activity, and a
        # bound on connection attempts to an unreachable server.
        self._conn_kwargs = _defaults(params, application_name="duroxy", connect_timeout=10)
        self._notifier = Notifier(dsn, self._channel, self._node_id, _defaults(
            params, application_name="duroxy-listen", connect_timeout=10, **_KEEPALIVE))
        self._binding: _Binding | None = None
        self._migrated = False
        self._closed = False

    def _bind(self, loop: asyncio.AbstractEventLoop) -> _Binding:
        """Build the pool for ``loop`` (not yet open) and the tasks that open and guard it."""
        conns: weakref.WeakSet[Conn] = weakref.WeakSet()

        async def configure(conn: Conn) -> None:
            conns.add(conn)
            # Prepare every statement on its first execution rather than its fifth: the
            # hot statements are planned once per connection instead of five times.
            conn.prepare_threshold = 0
            # Send text, lists of anything, and so every parameter in binary format,
            # which psycopg encodes several times faster than text (no quoting or
            # escaping of array elements). The statements cast every parameter whose
            # type PostgreSQL could not infer.
            conn.adapters.register_dumper(str, StrBinaryDumper)
            conn.adapters.register_dumper(list, ListBinaryDumper)
            _arrays.register(conn)
            await conn.execute(self._session_setup, prepare=False)
            if (self._warm_connections and len(conns) <= _WARM_CONNECTIONS
                    and not self._read_only):  # no hot path
                await self._warm(conn)

        pool: AsyncConnectionPool[Conn] = Pool(
            self._dsn, min_size=self._min_size, max_size=self._max_size, open=False,
            timeout=self._pool_timeout, kwargs={"autocommit": True, **self._conn_kwargs},
            configure=configure, name=f"duroxy-{self._schema}")
        b = _Binding(loop, pool, conns)
        b.opening = loop.create_task(self._open(b), name=f"{pool.name}-open")
        b.guard = loop.create_task(self._guard(b), name=f"{pool.name}-guard")
        self._binding = b
        return b

    async def _open(self, b: _Binding) -> None:
        if not self._migrated:
            # On a connection of its own, before the pool opens: every pooled connection
            # is then set up (and warmed) against the migrated schema. It is among the
            # binding's connections meanwhile, so that _abandon closes it too.
            try:
                async with asyncio.timeout(self._pool_timeout):
                    conn = await psycopg.AsyncConnection.connect(
                        self._dsn, autocommit=True, **self._conn_kwargs)
            except TimeoutError:
                raise ProviderError(f"PostgreSQL store: no connection within "
                                    f"{self._pool_timeout:g} s", retryable=True) from None
            b.conns.add(conn)
            try:
                async with conn:
                    prepare = check if self._read_only else migrate
                    await prepare(conn, self._schema, self._migrations)
            finally:
                b.conns.discard(conn)
            self._migrated = True
        if not b.released:
            await b.pool.open()

    async def _warm(self, conn: Conn) -> None:
        """Prepare the hot statements on ``conn`` (see _warm.py). Best effort: a
        statement that fails here is prepared by its first real call instead."""
        for name, flags, params in warm_calls(self._node_id, self._channel):
            stmt = self._q[name] if flags is None else self._q.variant(name, flags)
            try:
                await (await self._run(conn, stmt, params)).fetchall()
            except psycopg.Error as e:
                if conn.closed or conn.broken:
                    raise
                _log.debug("warming up statement %s failed: %s", name, e)

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
        try:
            if self._binding in (b, None):
                await self._notifier.aclose()
            await b.pool.close(timeout=1.0)
        finally:
            # A loop shutting down cancels the pool's own tasks as well, and the pool's
            # close can stop at the first of them, before it closes the connections.
            _finish(b.conns)

    def _abandon(self, b: _Binding) -> None:
        """Forget a binding whose loop is gone (closed, or just not the running one),
        closing its sockets synchronously: that loop cannot run the pool's close."""
        b.released = True
        if self._binding in (b, None):
            self._notifier.drop()
        _finish(b.conns)

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
        if not b.opening.done():
            await asyncio.shield(b.opening)
        return b.pool

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        try:
            pool = await self._ready()
            async with pool.connection() as conn:
                yield conn
        except psycopg.Error as e:
            raise provider_error(e) from e

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Conn]:
        """An explicit transaction, for the rare calls that need several statements."""
        async with self._connection() as conn, conn.transaction():
            yield conn

    async def _rows(self, name: str | Statement, params: dict[str, Any]) -> list[Row]:
        """Run one statement (named, or a variant) in its own implicit transaction
        (autocommit): one round trip, BEGIN and COMMIT included."""
        stmt = self._q[name] if isinstance(name, str) else name
        try:
            pool = await self._ready()
            async with pool.connection() as conn:
                cur = await self._run(conn, stmt, params)
                return await cur.fetchall()
        except psycopg.Error as e:
            raise provider_error(e) from e
        finally:
            self._last_statement = time.monotonic()

    async def _rows_in_one(self, first: Statement, first_params: dict[str, Any],
                           then: Statement, then_params: dict[str, Any]
                           ) -> tuple[list[Row], list[Row]]:
        """Run two statements in one transaction, the second seeing the first's writes,
        sent together in a pipeline: one round trip and one commit. Raises a
        ``ProviderError`` when nothing was committed (no connection to be had, or the
        server refused a statement and the transaction was rolled back), and
        ``OutcomeUnknown`` when the commit may have taken effect (the connection failed,
        or the server ended the session, once the pipeline was sent)."""
        try:
            pool = await self._ready()
            async with pool.connection() as conn:
                try:
                    async with conn.pipeline():
                        await conn.execute("BEGIN", prepare=False)
                        cur1 = await self._run(conn, first, first_params)
                        cur2 = await self._run(conn, then, then_params)
                        await conn.execute("COMMIT", prepare=False)
                    return await cur1.fetchall(), await cur2.fetchall()
                except psycopg.Error as e:
                    if not await _rolled_back(conn, e):
                        raise OutcomeUnknown(provider_error(e).args[0],
                                             retryable=True) from e
                    raise
        except psycopg.Error as e:
            raise provider_error(e) from e
        finally:
            self._last_statement = time.monotonic()

    async def _execute(self, name: str, params: dict[str, Any], conn: Conn | None = None
                       ) -> psycopg.AsyncCursor[Row]:
        """Run one named statement, on ``conn`` (in its transaction) or in its own."""
        if conn is not None:
            return await self._run(conn, self._q[name], params)
        async with self._connection() as conn:
            return await self._run(conn, self._q[name], params)

    @staticmethod
    async def _run(conn: Conn, stmt: Statement, params: dict[str, Any]
                   ) -> psycopg.AsyncCursor[Row]:
        """Execute ``stmt``; results come back in binary format. The raw cursor sends
        the statement's text as it is, without parsing it for placeholders."""
        prepare = False if stmt.name in _UNPREPARED else None
        if _RawCursor is None:  # psycopg before 3.2
            return await conn.execute(stmt.named, params, prepare=prepare, binary=True)
        cur: psycopg.AsyncCursor[Row] = _RawCursor(conn)
        return await cur.execute(stmt.raw, stmt.args(params), prepare=prepare, binary=True)

    async def wait_listening(self, timeout: float = 10.0) -> None:
        """Wait until the listening connection is subscribed, so that work other nodes
        commit from now on wakes this node's listeners. Needs a registered listener."""
        await self._ready()
        await self._notifier.wait_ready(timeout)

    @property
    def listener_backend_pid(self) -> int | None:
        """Server process id of the listening connection (``None`` when not connected)."""
        return self._notifier.backend_pid

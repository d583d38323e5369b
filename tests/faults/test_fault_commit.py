"""Commits that fail: a full disk under a SQLite store (a small tmpfs, filled), an error
injected right before SQLite's COMMIT, failures injected into the PostgreSQL provider's
statements (some before they run, some after they committed with the reply lost, as when
a connection is cut at commit time), and a full disk under a PostgreSQL store (its
tables in a tablespace on a small tmpfs, filled; on a private server).

The promises: a start the client saw succeed is never lost, and completes once the fault
is gone; the runtime keeps running through the failures (nothing hangs, no instance
fails); and no effect leaks: every idempotency key an activity was ever called with
(``key = await ctx.new_guid()``, passed to the activity) is a key its instance's history
recorded. Side effects are counted in a file outside the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sqlite3
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from faultkit import (
    Effects,
    check_keyed_outcome,
    keyed_app,
    recorded_guids,
    wait_all,
)
from mountkit import mount_tmpfs, unmount
from pgserver import PG_OS_USER, PrivatePg

from duroxy import Client, OrchestrationState, Runtime, RuntimeOptions
from duroxy.errors import InstanceAlreadyExists, ProviderError
from duroxy.providers.base import Provider
from duroxy.providers.sqlite import SqliteProvider
from duroxy.testing.provider_suite.support import commit, create, scheduled, started, work
from pgkit import parked

# Short leases: work whose commit failed comes back within a second.
OPTS = RuntimeOptions(orchestration_lock_timeout=1.0, activity_lock_timeout=1.0,
                      cancel_check_interval=0.2, orchestration_concurrency=8,
                      activity_concurrency=8)


# ====================================================================== faults
class Fault:
    """A fault switched on and off by the test; ``seen`` counts the failures it caused."""

    seen = 0

    async def on(self) -> None:
        raise NotImplementedError

    async def off(self) -> None:
        raise NotImplementedError

    def refused(self, error: ProviderError) -> None:
        """A client's start failed with ``error``: faults that cannot count their own
        failures do here."""

    def enough(self) -> bool:
        return self.seen >= 12


class FailingCommits(Fault):
    """Every ``every``-th COMMIT of the SQLite writer fails (SQLite's own error type, as a
    failing disk gives), through the writer's ``before_commit`` test hook."""

    def __init__(self, store: SqliteProvider, every: int = 3) -> None:
        self.every = every
        self.active = False
        self.commits = 0
        self._lock = threading.Lock()
        store._writer.before_commit = self._hook

    def _hook(self) -> None:  # on the writer thread
        with self._lock:
            if not self.active:
                return
            self.commits += 1
            if self.commits % self.every:
                return
            self.seen += 1
        raise sqlite3.OperationalError("disk I/O error (injected before COMMIT)")

    async def on(self) -> None:
        self.active = True

    async def off(self) -> None:
        self.active = False


class FullDisk(Fault):
    """The filesystem holding the store filled to the last byte by a filler file."""

    def __init__(self, mnt: Path) -> None:
        self.filler = mnt / "filler"

    async def on(self) -> None:
        chunk = b"\0" * (1 << 16)
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    if len(chunk) == 1:
                        break
                    chunk = chunk[:len(chunk) // 2]
        finally:
            os.close(fd)

    async def off(self) -> None:
        self.filler.unlink(missing_ok=True)

    def refused(self, error: ProviderError) -> None:
        self.seen += 1

    def enough(self) -> bool:
        return self.seen >= 3


# ====================================================================== the run
@dataclass
class Run:
    acked: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    histories: dict[str, list[Any]] = field(default_factory=dict)


async def run_through(store: Provider, client: Client, effects: Effects, fault: Fault,
                      tag: str, *, pad: int = 0, starts: int = 40,
                      max_starts: int = 400, refusal_is_final: bool = True) -> Run:
    """Start instances of ``pay`` while ``fault`` makes commits fail, until it has caused
    enough failures; then end the fault and let everything finish. ``pad`` makes each
    start's input that much bigger (a full disk fills faster). ``refusal_is_final``: a
    start the client saw fail was not committed (False where a reply may be lost after
    the commit: such a start may exist)."""
    acts, orchs = keyed_app(effects)
    run = Run()
    rt = await Runtime.start(store, acts, orchs, OPTS)
    try:
        await fault.on()
        n = 0
        while n < max_starts and (n < starts or not fault.enough()):
            iid = f"{tag}-{n}"
            try:
                await client.start_orchestration(iid, "pay", {"n": n, "pad": "x" * pad})
            except ProviderError as e:
                assert e.retryable, e  # a full disk or a failed commit: worth retrying
                run.refused[iid] = n
                fault.refused(e)
            else:
                run.acked[iid] = n
            n += 1
        assert fault.enough(), f"the fault caused only {fault.seen} failures"
        # The runtime meets the fault too for a moment: fetches, turns and activity acks
        # fail, and it keeps going.
        await asyncio.sleep(1.0)
        assert not any(t.done() for t in rt._loops), "a dispatcher stopped"
        await fault.off()
        statuses = await wait_all(client, run.acked, 90)
        for iid, n in run.acked.items():
            run.histories[iid] = await client.read_history(iid)
            check_keyed_outcome(iid, n, statuses[iid], run.histories[iid])
        assert run.acked, "no start was acknowledged"
        # A start that was refused left nothing half done: it can be made again.
        for iid, n in run.refused.items():
            if refusal_is_final:
                st = await client.get_orchestration_status(iid)
                assert st.state is OrchestrationState.NOT_FOUND, (iid, st.state)
            with contextlib.suppress(InstanceAlreadyExists):
                await client.start_orchestration(iid, "pay", {"n": n})
        again = await wait_all(client, run.refused, 60)
        for iid, n in run.refused.items():
            run.histories[iid] = await client.read_history(iid)
            check_keyed_outcome(iid, n, again[iid], run.histories[iid])
    finally:
        try:
            await fault.off()
        finally:
            await rt.shutdown(timeout=5)
    return run


def check_effects_follow_history(run: Run, effects: Effects) -> None:
    """Each key the history recorded was charged at least once (at-least-once), and each
    charge made under it happened for that instance."""
    charged = effects.keys_by_instance()
    for iid, history in run.histories.items():
        assert set(recorded_guids(history)) <= charged.get(iid, set()), iid


def check_no_effect_leaked(run: Run, effects: Effects) -> None:
    """No key an activity was called with is missing from its instance's history."""
    leaked = {iid: sorted(keys - set(recorded_guids(run.histories.get(iid, []))))
              for iid, keys in effects.keys_by_instance().items()}
    leaked = {iid: keys for iid, keys in leaked.items() if keys}
    assert not leaked, f"activities ran with keys no history recorded: {leaked}"


# ====================================================================== SQLite
@pytest.fixture(params=["before_commit", pytest.param("full_disk", marks=pytest.mark.slow)])
def sqlite_fault(request: pytest.FixtureRequest, tmp_path: Path
                 ) -> tuple[Path, Callable[[SqliteProvider], Fault], int]:
    """Where the store lives, the fault that fails its commits, and how big the starts
    are: an error injected right before COMMIT, or a full disk (the store on a small
    tmpfs, filled; padded starts fill the write-ahead log sooner)."""
    if request.param == "before_commit":
        return tmp_path, FailingCommits, 0
    mnt = request.getfixturevalue("tmpfs")
    return mnt, lambda _store: FullDisk(mnt), 20_000


async def _sqlite_run(tmp_path: Path, fault: tuple[Path, Callable[[SqliteProvider], Fault], int]
                      ) -> tuple[Run, Effects]:
    where, make_fault, pad = fault
    effects = Effects(tmp_path / "effects.log")  # outside the store's filesystem
    store = SqliteProvider(where / "store.db")
    async with store:
        run = await run_through(store, Client(store), effects, make_fault(store), "c",
                                pad=pad)
    assert run.refused, "no start met a failing commit"
    return run, effects


@pytest.mark.timeout(120)
async def test_sqlite_failing_commits_lose_no_acknowledged_start(
        tmp_path: Path, sqlite_fault: tuple[Path, Callable[[SqliteProvider], Fault], int]
        ) -> None:
    run, effects = await _sqlite_run(tmp_path, sqlite_fault)
    check_effects_follow_history(run, effects)


@pytest.mark.timeout(120)
async def test_sqlite_failing_commits_leak_no_effect(
        tmp_path: Path, sqlite_fault: tuple[Path, Callable[[SqliteProvider], Fault], int]
        ) -> None:
    """A store hands out nothing a transaction produced before its COMMIT returned: a
    writer that handed a turn's claimed activities to the runtime just before a COMMIT
    that then failed ran them with keys no history recorded (fails on such a writer)."""
    run, effects = await _sqlite_run(tmp_path, sqlite_fault)
    check_no_effect_leaked(run, effects)


# ====================================================================== PostgreSQL
#: The statements that change the store (every hot call is one statement, committed
#: on its own): the injection fails these.
PG_WRITES = frozenset({
    "create_instance", "create_instance_leased", "enqueue_existing", "fetch_orchestrations",
    "lock_instance", "ack_turn", "commit_turn", "abandon_orchestration",
    "renew_orchestration", "fetch_activities", "ack_activity", "renew_activity",
    "abandon_activity"})


class FailingStatements(Fault):
    """Every ``every``-th write statement of a PostgreSQL provider fails: alternately
    before it reaches the server (nothing changes), and after the server committed it
    with its reply lost (as when the connection drops at commit time). Either way the
    caller sees a retryable ``ProviderError``, as for a real cut."""

    def __init__(self, store: Any, every: int = 4) -> None:
        import psycopg

        self.every = every
        self.active = False
        self.statements = 0
        self.lost_replies = 0
        real = store._run

        async def run(conn: Any, stmt: Any, params: dict[str, Any]) -> Any:
            if not self.active or stmt.name not in PG_WRITES:
                return await real(conn, stmt, params)
            self.statements += 1
            if self.statements % self.every:
                return await real(conn, stmt, params)
            self.seen += 1
            if self.seen % 2:
                raise psycopg.OperationalError("injected: connection lost before the statement")
            cur = await real(conn, stmt, params)
            await cur.fetchall()
            self.lost_replies += 1
            raise psycopg.OperationalError("injected: connection lost at commit, reply lost")

        store._run = run

    async def on(self) -> None:
        self.active = True

    async def off(self) -> None:
        self.active = False


@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_postgres_failing_statements_lose_nothing_and_leak_no_effect(
        tmp_path: Path, providers: Callable[..., Any]) -> None:
    effects = Effects(tmp_path / "effects.log")
    store = providers()
    fault = FailingStatements(store)
    # A reply lost after the commit leaves the client unsure: such a start may exist.
    run = await run_through(store, Client(store), effects, fault, "pg",
                            refusal_is_final=False)
    assert fault.lost_replies > 0 and run.refused
    check_effects_follow_history(run, effects)
    check_no_effect_leaked(run, effects)


# ---------------------------------------------------------------- PostgreSQL, full disk
@dataclass
class Tablespace:
    name: str
    dsn: str  # the private server's test database, new tables in the tablespace


@pytest.fixture
def small_tablespace(private_pg: PrivatePg) -> Iterator[Tablespace]:
    """A tablespace of the private server on a freshly mounted 16 MiB tmpfs, and a DSN
    whose new tables and indexes go there (the write-ahead log stays on the server's own
    disk: what fills is the tables' space). Skips, saying why, where mounting is
    refused."""
    import psycopg
    from psycopg import sql

    mnt = Path(tempfile.mkdtemp(prefix="duroxy-faults-ts-"))
    opts = "size=16m,mode=0700"
    if os.geteuid() == 0:
        import pwd

        owner = pwd.getpwnam(PG_OS_USER)
        opts += f",uid={owner.pw_uid},gid={owner.pw_gid}"
    try:
        mount_tmpfs(mnt, opts)
    except BaseException:  # (pytest's skip too)
        mnt.rmdir()
        raise
    name = f"ts_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(private_pg.dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE TABLESPACE {} LOCATION {}").format(
                sql.Identifier(name), sql.Literal(str(mnt))))
        yield Tablespace(name, f"{private_pg.dsn}?options=-c%20default_tablespace%3D{name}")
    finally:
        with contextlib.suppress(Exception), psycopg.connect(
                private_pg.dsn, autocommit=True, connect_timeout=10) as conn:
            # what a failed test left in it first: a tablespace is dropped only empty
            left = conn.execute(
                "SELECT DISTINCT n.nspname FROM pg_class AS c "
                "JOIN pg_namespace AS n ON n.oid = c.relnamespace "
                "JOIN pg_tablespace AS t ON t.oid = c.reltablespace "
                "WHERE t.spcname = %s", (name,)).fetchall()
            for (schema,) in left:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
            conn.execute(sql.SQL("DROP TABLESPACE IF EXISTS {}").format(sql.Identifier(name)))
        unmount(mnt)
        with contextlib.suppress(OSError):
            mnt.rmdir()


class FullTablespace(Fault):
    """The tablespace holding the store filled by a filler table of its own (in a schema
    of its own) but for ``room`` bytes: the first writes that need new pages get them,
    and then every one fails with the server's ``disk_full`` (SQLSTATE 53100)."""

    def __init__(self, tablespace: Tablespace, room: int = 256 * 1024) -> None:
        self.tablespace = tablespace
        self.schema = f"fill_{uuid.uuid4().hex[:12]}"
        self.room = room
        self.filled = 0

    async def on(self) -> None:
        import psycopg
        from psycopg import errors, sql

        async with await psycopg.AsyncConnection.connect(
                self.tablespace.dsn, autocommit=True, connect_timeout=10) as conn:
            schema = sql.Identifier(self.schema)
            await conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
            await conn.execute(sql.SQL("CREATE TABLE {}.room (x bigint)").format(schema))
            # The rows of the inserts that failed stay in the file as dead pages: no vacuum
            # may give their space back while the disk is to stay full.
            await conn.execute(sql.SQL(
                "CREATE TABLE {}.filler (x bigint) "
                "WITH (autovacuum_enabled = off, vacuum_truncate = off)").format(schema))
            # 226 rows of a bigint fill a page of 8 kB
            await conn.execute(sql.SQL(
                "INSERT INTO {}.room SELECT g FROM generate_series(1, %s) AS g"
            ).format(schema), (self.room // 8192 * 226,))
            rows = 100_000
            while rows:
                try:
                    await conn.execute(sql.SQL(
                        "INSERT INTO {}.filler SELECT g FROM generate_series(1, %s) AS g"
                    ).format(schema), (rows,))
                    self.filled += rows
                except errors.DiskFull:
                    rows //= 2
            await conn.execute(sql.SQL("DROP TABLE {}.room").format(schema))

    async def off(self) -> None:
        import psycopg
        from psycopg import sql

        async with await psycopg.AsyncConnection.connect(
                self.tablespace.dsn, autocommit=True, connect_timeout=10) as conn:
            await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(self.schema)))

    def refused(self, error: ProviderError) -> None:
        # a refusal of the full disk, not of anything else that fails retryably
        assert getattr(error.__cause__, "sqlstate", None) == "53100", repr(error)
        self.seen += 1

    def enough(self) -> bool:
        return self.seen >= 3


@pytest.fixture
async def full_disk_store(small_tablespace: Tablespace) -> AsyncIterator[Any]:
    """A PostgreSQL store whose tables and indexes are all in ``small_tablespace``."""
    import psycopg
    from psycopg import sql

    from duroxy.providers.postgres import PostgresProvider

    schema = f"t_{uuid.uuid4().hex[:12]}"
    store = PostgresProvider(small_tablespace.dsn, schema)
    try:
        yield store
    finally:
        await store.close()
        with psycopg.connect(small_tablespace.dsn, autocommit=True,
                             connect_timeout=10) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(schema)))


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_postgres_full_disk_loses_no_acknowledged_start_and_leaks_no_effect(
        tmp_path: Path, small_tablespace: Tablespace, full_disk_store: Any) -> None:
    """The server refuses every write that needs a page it cannot get (``disk_full``,
    an ordinary error that rolls its transaction back). A start the client saw refused
    was not written; a start acknowledged was, and completes once there is room again;
    no activity ran for a turn whose commit the full disk refused."""
    import psycopg

    store = full_disk_store
    client = Client(store)
    await client.get_orchestration_status("none")  # the store is opened, migrated
    async with await psycopg.AsyncConnection.connect(
            small_tablespace.dsn, autocommit=True, connect_timeout=10) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_class AS c JOIN pg_namespace AS n "
            "ON n.oid = c.relnamespace JOIN pg_tablespace AS t ON t.oid = c.reltablespace "
            "WHERE n.nspname = %s AND t.spcname = %s AND c.relname = 'instances'",
            (store.schema, small_tablespace.name))
        assert await cur.fetchall() == [(1,)], "the store's tables are not in the tablespace"
    effects = Effects(tmp_path / "effects.log")
    fault = FullTablespace(small_tablespace)
    # (inputs under the size the server compresses: each start takes room of its own)
    run = await run_through(store, client, effects, fault, "pgfull", pad=1_500)
    check_effects_follow_history(run, effects)
    check_no_effect_leaked(run, effects)


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_postgres_full_disk_refuses_a_start_handed_to_its_first_turn(
        small_tablespace: Tablespace, full_disk_store: Any) -> None:
    """A start handed to a parked poll, to be committed with its first turn: the full
    disk refuses the pair, then the start alone. Both callers hear the refusal, nothing
    is written, and once there is room the same start is made."""
    store = full_disk_store
    await Client(store).get_orchestration_status("none")  # the store is opened, migrated
    fault = FullTablespace(small_tablespace, room=0)
    await fault.on()
    try:
        poll = await parked(store)
        creating = asyncio.ensure_future(create(store, "full-1"))
        (item,) = await asyncio.wait_for(poll, 5)
        assert item.instance_id == "full-1"  # handed over: nothing written yet
        with pytest.raises(ProviderError) as acked:
            await store.ack_orchestration_item(item.lock_token, commit(
                started(), scheduled(2), activities=[work("full-1")]))
        with pytest.raises(ProviderError) as made:
            await asyncio.wait_for(creating, 10)
        for refused in (acked.value, made.value):
            assert refused.retryable and "DiskFull" in str(refused), refused
        assert getattr(made.value.__cause__, "sqlstate", None) == "53100"
        assert await store.get_instance("full-1") is None
        assert await store.fetch_orchestration_items(30.0) == []
    finally:
        await fault.off()
    await create(store, "full-1")
    (item,) = await store.fetch_orchestration_items(30.0)
    assert item.instance_id == "full-1" and item.attempt == 1

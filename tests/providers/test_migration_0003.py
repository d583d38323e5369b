"""Upgrading a store of the previous release (schema 2) to migration 0003, on SQLite and
PostgreSQL: the store opens, migrates, and its instances keep running.

The schema-2 store is made here by the previous release's migrations and filled by a
runtime: a store made by this release with the tables and columns of migration 0003
and later ones taken away again (``migrationkit``), which is checked to equal, column
for column, what migrations 0001 and 0002 alone create. Its rows are what the previous
release writes (the formats of history events and queued messages did not change)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from duroxy import (
    ActivityRegistry,
    Client,
    OrchestrationContext,
    OrchestrationRegistry,
    OrchestrationState,
    Runtime,
)
from duroxy.providers.base import Provider
from duroxy.providers.sqlite import SqliteProvider
from duroxy.providers.sqlite._schema import latest_version
from migrationkit import pg_undo_0004, sqlite_undo_0004
from storekit import DSN

PREVIOUS = 2


async def waits(ctx: OrchestrationContext, _: Any) -> Any:
    ctx.set_custom_status("waiting")
    return await ctx.schedule_wait("go")


async def sleeps(ctx: OrchestrationContext, _: Any) -> str:
    await ctx.schedule_timer(1.0)
    return "slept"


async def queues(ctx: OrchestrationContext, _: Any) -> list[Any]:
    """New in this release: a queue and KV, on the migrated store."""
    got = await ctx.dequeue_event("q")
    ctx.set_kv_value("got", got)
    ctx.set_custom_status("done")
    return [got, ctx.get_kv_value("got")]


def registries() -> tuple[ActivityRegistry, OrchestrationRegistry]:
    orchs = (OrchestrationRegistry.builder().register("waits", waits)
             .register("sleeps", sleeps).register("queues", queues).build())
    return ActivityRegistry.builder().build(), orchs


async def fill(store: Provider) -> None:
    """Instances in every state a store carries across an upgrade: waiting for an event
    (with a custom status), with a timer pending, with an event queued and not yet run,
    PENDING, and COMPLETED."""
    client = Client(store)
    async with await Runtime.start(store, *registries()):
        await client.start_orchestration("waiting", "waits")
        await client.start_orchestration("sleeping", "sleeps")
        await client.start_orchestration("done", "waits")
        await client.raise_event("done", "go", "early")
        assert (await client.wait_for_orchestration("done", 30)).output == "early"
        for iid in ("waiting", "sleeping"):
            while (await client.get_orchestration_status(iid)).state is not \
                    OrchestrationState.RUNNING:
                await asyncio.sleep(0.01)
        while (await client.get_orchestration_status("waiting")).custom_status is None:
            await asyncio.sleep(0.01)
    await client.start_orchestration("pending", "waits")
    await client.raise_event("pending", "go", "queued before the upgrade")


async def resume(store: Provider) -> None:
    """What the migrated store must do: every instance carries on."""
    client = Client(store)
    waiting = await client.get_orchestration_status("waiting")
    # a custom status set before the upgrade counts as one version
    assert (waiting.custom_status, waiting.custom_status_version) == ("waiting", 1)
    assert (await client.get_orchestration_status("pending")).custom_status_version == 0
    assert (await client.get_kv_all_values("waiting")) == {}
    async with await Runtime.start(store, *registries()):
        await client.raise_event("waiting", "go", "after the upgrade")
        assert (await client.wait_for_orchestration("waiting", 30)).output == \
            "after the upgrade"
        assert (await client.wait_for_orchestration("sleeping", 30)).output == "slept"
        assert (await client.wait_for_orchestration("pending", 30)).output == \
            "queued before the upgrade"
        await client.start_orchestration("new", "queues")
        await client.enqueue_event("new", "q", {"n": 1})
        new = await client.wait_for_orchestration("new", 30)
    assert new.output == [{"n": 1}, {"n": 1}] and new.custom_status_version == 1
    assert await client.get_kv_value("new", "got") == {"n": 1}
    assert (await client.get_orchestration_status("done")).output == "early"
    assert [e.kind for e in await client.read_history("waiting")] == [
        "OrchestrationStarted", "CustomStatusSet", "EventSubscribed", "EventRaised",
        "OrchestrationCompleted"]


# ====================================================================== SQLite
def _columns(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    tables = [t for (t,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name")]
    return {t: [tuple(r[1:]) for r in conn.execute(f"PRAGMA table_info({t})")]
            for t in tables}


def _downgrade_sqlite(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        sqlite_undo_0004(conn)
        conn.execute("DROP TABLE kv")
        for column in ("custom_status_version", "unread", "kv_base"):
            conn.execute(f"ALTER TABLE instances DROP COLUMN {column}")
        conn.execute("DELETE FROM schema_version WHERE version > ?", (PREVIOUS,))


def _previous_schema_sqlite(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    from duroxy.providers.sqlite._sql import migrations, queries

    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for mig in migrations()[:PREVIOUS]:
            for stmt in mig.statements:
                conn.execute(stmt)
        conn.execute(queries()["create_schema_version"])
        return _columns(conn)


async def test_a_sqlite_store_of_the_previous_schema_migrates_and_keeps_running(
        tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteProvider(path)
    try:
        await fill(store)
    finally:
        await store.close()
    _downgrade_sqlite(path)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert _columns(conn) == _previous_schema_sqlite(tmp_path / "previous.db")
        assert conn.execute("SELECT max(version) FROM schema_version").fetchall() == [
            (PREVIOUS,)]

    store = SqliteProvider(path)
    try:
        await resume(store)
    finally:
        await store.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT max(version) FROM schema_version").fetchall() == [
            (latest_version(),)]


# ====================================================================== PostgreSQL
@pytest.fixture
async def pg_schema() -> AsyncIterator[Callable[[], str]]:
    if not DSN:
        pytest.skip("DUROXY_TEST_PG_DSN not set: PostgreSQL tests need a server")
    made: list[str] = []

    def make() -> str:
        made.append(f"t_{uuid.uuid4().hex[:12]}")
        return made[-1]

    yield make
    import psycopg
    from psycopg import sql

    async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as conn:
        for schema in made:
            await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(schema)))


async def _pg_columns(dsn: str, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_schema = %s "
            "ORDER BY table_name, ordinal_position", [schema])
        out: dict[str, list[tuple[Any, ...]]] = {}
        for table, *column in await cur.fetchall():
            out.setdefault(table, []).append(tuple(column))
        return out


@pytest.mark.postgres
async def test_a_postgres_store_of_the_previous_schema_migrates_and_keeps_running(
        pg_schema: Callable[[], str]) -> None:
    import psycopg
    from psycopg import sql

    from duroxy.providers.postgres import PostgresProvider
    from duroxy.providers.postgres._migrate import migrate
    from duroxy.providers.postgres._sql import load_migrations

    assert DSN
    schema, previous = pg_schema(), pg_schema()
    store = PostgresProvider(DSN, schema, max_size=4)
    try:
        await fill(store)
    finally:
        await store.close()
    async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as conn:
        s = sql.Identifier(schema)
        await pg_undo_0004(conn, schema)
        await conn.execute(sql.SQL("DROP TABLE {}.kv").format(s))
        await conn.execute(sql.SQL(
            "ALTER TABLE {}.instances DROP COLUMN custom_status_version, DROP COLUMN unread, "
            "DROP COLUMN kv_base").format(s))
        await conn.execute(sql.SQL("DELETE FROM {}.schema_version WHERE version > %s").format(s),
                           [PREVIOUS])
        await migrate(conn, previous, load_migrations(previous)[:PREVIOUS])
    assert await _pg_columns(DSN, schema) == await _pg_columns(DSN, previous)

    store = PostgresProvider(DSN, schema, max_size=4)
    try:
        await resume(store)
    finally:
        await store.close()
    async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as conn:
        cur = await conn.execute(sql.SQL("SELECT max(version) FROM {}.schema_version").format(
            sql.Identifier(schema)))
        assert await cur.fetchall() == [(len(load_migrations(schema)),)]

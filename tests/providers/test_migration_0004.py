"""Upgrading a store of the previous release (schema 3) to migration 0004 (activity
routing), on SQLite and PostgreSQL: the store opens and migrates, the activity work it
had queued runs, its instances carry on, and session and tagged work runs on it.

The schema-3 store is a store made by this release, filled by a runtime, with migration
0004 taken away again (``migrationkit``); it is checked to equal, column and index for
column and index, what migrations 0001 to 0003 alone create. Its rows are what the
previous release writes: the activity work it holds has neither tag nor session (the
format of work items did not change; their new fields are written only when set)."""

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
    ActivityContext,
    ActivityRegistry,
    Client,
    OrchestrationContext,
    OrchestrationRegistry,
    OrchestrationState,
    Runtime,
    RuntimeOptions,
    TagFilter,
)
from duroxy.providers.base import Provider
from duroxy.providers.sqlite import SqliteProvider
from migrationkit import pg_undo_0004, sqlite_layout, sqlite_undo_0004
from storekit import DSN

PREVIOUS = 3


async def where(ctx: ActivityContext, x: int) -> list[Any]:
    return [x, ctx.worker_id, ctx.session_id, ctx.tag]


async def waits_for_work(ctx: OrchestrationContext, x: int) -> Any:
    return await ctx.schedule_activity("where", x)


async def waits_for_event(ctx: OrchestrationContext, _: Any) -> Any:
    return await ctx.schedule_wait("go")


async def routed(ctx: OrchestrationContext, _: Any) -> list[Any]:
    return [await ctx.schedule_activity("where", 1, session_id="s1"),
            await ctx.schedule_activity("where", 2, tag="gpu"),
            await ctx.schedule_activity("where", 3)]


def registries() -> tuple[ActivityRegistry, OrchestrationRegistry]:
    return (ActivityRegistry.builder().register("where", where).build(),
            OrchestrationRegistry.builder().register("waits_for_work", waits_for_work)
            .register("waits_for_event", waits_for_event).register("routed", routed)
            .build())


async def fill(store: Provider) -> None:
    """Activity work queued and not run (its instances wait for it), an instance waiting
    for an event, and one that completed."""
    client = Client(store)
    acts, orchs = registries()
    async with await Runtime.start(store, acts, orchs):
        await client.start_orchestration("done", "waits_for_work", 9)
        assert (await client.wait_for_orchestration("done", 30)).output[0] == 9
    # a runtime without activity slots leaves the work its turns schedule in the queue
    async with await Runtime.start(store, None, orchs, RuntimeOptions(activity_concurrency=0)):
        for n in range(3):
            await client.start_orchestration(f"work-{n}", "waits_for_work", n)
        await client.start_orchestration("event", "waits_for_event")
        for iid in ("work-0", "work-1", "work-2", "event"):
            while (await client.get_orchestration_status(iid)).state is not \
                    OrchestrationState.RUNNING:
                await asyncio.sleep(0.01)


async def resume(store: Provider) -> None:
    client = Client(store)
    acts, orchs = registries()
    async with await Runtime.start(store, acts, orchs, RuntimeOptions(worker_id="plain")), \
            await Runtime.start(store, acts, None, RuntimeOptions(
                worker_id="gpu", orchestration_concurrency=0,
                worker_tag_filter=TagFilter.tags(["gpu"]))):
        for n in range(3):  # queued before the upgrade: untagged, without a session
            status = await client.wait_for_orchestration(f"work-{n}", 30)
            assert status.output == [n, "plain", None, None]
        await client.raise_event("event", "go", "after")
        assert (await client.wait_for_orchestration("event", 30)).output == "after"
        await client.start_orchestration("new", "routed")
        new = await client.wait_for_orchestration("new", 30)
    assert new.output == [[1, "plain", "s1", None], [2, "gpu", None, "gpu"],
                          [3, "plain", None, None]]
    assert (await client.get_orchestration_status("done")).output[0] == 9


# ====================================================================== SQLite
def _previous_layout_sqlite(path: Path) -> dict[str, Any]:
    from duroxy.providers.sqlite._sql import migrations, queries

    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for mig in migrations()[:PREVIOUS]:
            for stmt in mig.statements:
                conn.execute(stmt)
        conn.execute(queries()["create_schema_version"])
        return sqlite_layout(conn)


async def test_a_sqlite_store_of_the_previous_schema_migrates_and_runs_its_work(
        tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteProvider(path)
    try:
        await fill(store)
    finally:
        await store.close()
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        sqlite_undo_0004(conn)
        conn.execute("DELETE FROM schema_version WHERE version > ?", (PREVIOUS,))
        assert sqlite_layout(conn) == _previous_layout_sqlite(tmp_path / "previous.db")
        assert conn.execute("SELECT count(*) FROM activity_queue").fetchall() == [(3,)]

    store = SqliteProvider(path)
    try:
        await resume(store)
    finally:
        await store.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT max(version) FROM schema_version").fetchall() == [(4,)]
        assert conn.execute("SELECT count(*) FROM activity_queue").fetchall() == [(0,)]


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


async def _pg_layout(dsn: str, schema: str) -> dict[str, Any]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_schema = %s "
            "ORDER BY table_name, ordinal_position", [schema])
        columns: dict[str, list[tuple[Any, ...]]] = {}
        for table, *column in await cur.fetchall():
            columns.setdefault(table, []).append(tuple(column))
        cur = await conn.execute(
            "SELECT tablename, indexname, replace(indexdef, %s, '') FROM pg_indexes "
            "WHERE schemaname = %s ORDER BY 1, 2", [f"{schema}.", schema])
        return {"columns": columns, "indexes": await cur.fetchall()}


@pytest.mark.postgres
async def test_a_postgres_store_of_the_previous_schema_migrates_and_runs_its_work(
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
        await pg_undo_0004(conn, schema)
        await conn.execute(sql.SQL("DELETE FROM {}.schema_version WHERE version > %s").format(
            sql.Identifier(schema)), [PREVIOUS])
        await migrate(conn, previous, load_migrations(previous)[:PREVIOUS])
    mine, theirs = await _pg_layout(DSN, schema), await _pg_layout(DSN, previous)
    assert mine == theirs

    store = PostgresProvider(DSN, schema, max_size=4)
    try:
        await resume(store)
    finally:
        await store.close()
    async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as conn:
        cur = await conn.execute(sql.SQL("SELECT max(version) FROM {}.schema_version").format(
            sql.Identifier(schema)))
        assert await cur.fetchall() == [(4,)]

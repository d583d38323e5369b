"""A store written by the released duroxy 0.1.0, upgraded by this one: the SQLite file
and the PostgreSQL schema in ``tests/fixtures`` were made by 0.1.0 itself (see
``fixtures/make_release_stores.py``), with instances waiting for an event, on a timer,
past an activity, COMPLETED, and PENDING with an event queued. Opened by this release
they migrate, and every instance carries on to the output it would have had."""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import closing
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
from storekit import DSN

FIXTURES = Path(__file__).parents[1] / "fixtures"
RELEASE = "0.1.0"


async def waits(ctx: OrchestrationContext, _: Any) -> Any:
    ctx.set_custom_status("waiting")
    return await ctx.schedule_wait("go")


async def sleeps(ctx: OrchestrationContext, _: Any) -> str:
    await ctx.schedule_timer(1.0)
    return "slept"


async def echo(ctx: Any, x: Any) -> Any:
    return x


async def calls(ctx: OrchestrationContext, x: Any) -> list[Any]:
    first = await ctx.schedule_activity("echo", x)
    second = await ctx.schedule_wait("go")
    return [first, second]


async def queues(ctx: OrchestrationContext, _: Any) -> list[Any]:
    """What the release did not have: a queue and key-value state."""
    got = await ctx.dequeue_event("q")
    ctx.set_kv_value("got", got)
    return [got, ctx.get_kv_value("got")]


def registries() -> tuple[ActivityRegistry, OrchestrationRegistry]:
    orchs = (OrchestrationRegistry.builder().register("waits", waits)
             .register("sleeps", sleeps).register("calls", calls)
             .register("queues", queues).build())
    return ActivityRegistry.builder().register("echo", echo).build(), orchs


async def carries_on(store: Provider) -> None:
    client = Client(store)
    before = await client.get_orchestration_status("waiting")
    assert before.state is OrchestrationState.RUNNING and before.custom_status == "waiting"
    assert before.custom_status_version == 1  # a status set before the upgrade
    assert (await client.get_orchestration_status("pending")).state is \
        OrchestrationState.PENDING
    async with await Runtime.start(store, *registries()):
        assert (await client.wait_for_orchestration("sleeping", 30)).output == "slept"
        assert (await client.wait_for_orchestration("pending", 30)).output == \
            "queued before the upgrade"
        await client.raise_event("waiting", "go", "after the upgrade")
        assert (await client.wait_for_orchestration("waiting", 30)).output == \
            "after the upgrade"
        await client.raise_event("calling", "go", 2)
        assert (await client.wait_for_orchestration("calling", 30)).output == ["echoed", 2]
        await client.start_orchestration("new", "queues")
        await client.enqueue_event("new", "q", "hi")
        assert (await client.wait_for_orchestration("new", 30)).output == ["hi", "hi"]
        assert await client.get_kv_value("new", "got") == "hi"
        assert [w.worker_id for w in await client.list_workers()]  # its heartbeat row
    done = await client.get_orchestration_status("done")
    assert done.state is OrchestrationState.COMPLETED and done.output == "early"
    kinds = [e.kind for e in await client.read_history("calling")]
    assert kinds[:4] == ["OrchestrationStarted", "ActivityScheduled", "ActivityCompleted",
                         "EventSubscribed"]  # written by 0.1.0, read by this release
    assert {i.instance_id for i in await client.list_instances()} == {
        "waiting", "sleeping", "calling", "done", "pending", "new"}


async def test_a_sqlite_file_of_the_release_upgrades_and_carries_on(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    shutil.copy(FIXTURES / f"release-{RELEASE}.sqlite", path)
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (1,)
    store = SqliteProvider(path)
    try:
        await carries_on(store)
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] > 1


@pytest.fixture
async def release_schema() -> AsyncIterator[str]:
    """A fresh schema loaded from the release's dump."""
    if not DSN:
        pytest.skip("DUROXY_TEST_PG_DSN not set: PostgreSQL tests need a server")
    import psycopg

    schema = f"rel_{uuid.uuid4().hex[:12]}"
    text = (FIXTURES / f"release-{RELEASE}.postgres.sql").read_text(encoding="utf-8")
    # psql's meta-commands (\restrict) are not SQL
    sql = "\n".join(line for line in text.splitlines() if not line.startswith("\\"))
    async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as conn:
        await conn.execute(sql.replace("__SCHEMA__", schema).encode())
    try:
        yield schema
    finally:
        async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as conn:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE".encode())


@pytest.mark.postgres
async def test_a_postgres_schema_of_the_release_upgrades_and_carries_on(
        release_schema: str) -> None:
    from duroxy.providers.postgres import PostgresProvider

    assert DSN
    store = PostgresProvider(DSN, schema=release_schema)
    try:
        await carries_on(store)
    finally:
        await store.close()

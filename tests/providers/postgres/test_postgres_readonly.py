"""``PostgresProvider(dsn, schema, read_only=True)``: never creates the schema nor
migrates it, checks that it holds a duroxy store of this version, keeps every session
read-only, refuses every write, and reads what writers commit. Also the errors of a
schema newer than this duroxy knows, read-only or not.

Needs a server: set ``DUROXY_TEST_PG_DSN``; every test runs on fresh schemas."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

import duroxy
from duroxy import ActivityRegistry, Client, OrchestrationRegistry, Runtime
from duroxy.errors import ProviderError, SchemaVersionError, StoreNotFound, StoreReadOnly
from duroxy.testing.provider_suite.support import commit, create, fetch_one, started, uid

if TYPE_CHECKING:
    from duroxy.providers.postgres import PostgresProvider

pytestmark = pytest.mark.postgres


async def query(dsn: str, text: str, *params: Any) -> list[tuple[Any, ...]]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(text.encode(), params or None)
        return await cur.fetchall() if cur.description else []


async def schema_exists(dsn: str, schema: str) -> bool:
    return bool(await query(dsn, "SELECT 1 FROM pg_namespace WHERE nspname = %s", schema))


async def tables(dsn: str, schema: str) -> set[str]:
    rows = await query(dsn, "SELECT tablename FROM pg_tables WHERE schemaname = %s", schema)
    return {r[0] for r in rows}


def no_registries() -> tuple[ActivityRegistry, OrchestrationRegistry]:
    return ActivityRegistry.builder().build(), OrchestrationRegistry.builder().build()


async def test_a_schema_that_does_not_exist_is_not_created(
        dsn: str, schemas: Callable[[], str],
        providers: Callable[..., PostgresProvider]) -> None:
    schema = schemas()  # dropped after the test, should a bug create it
    store = providers(schema, read_only=True)
    for _ in range(2):  # every use says so, not just the first
        with pytest.raises(StoreNotFound) as e:
            await store.get_instance("x")
        assert str(e.value) == (f"no duroxy store in schema {schema!r} of PostgreSQL "
                                "database 'test' on 127.0.0.1: the schema does not exist")
        assert e.value.retryable is False and e.value.store in str(e.value)
    with pytest.raises(StoreNotFound):
        await Client(store).list_instances()
    await store.close()
    assert not await schema_exists(dsn, schema)


async def test_a_schema_without_duroxy_tables_is_left_as_it_was(
        dsn: str, schemas: Callable[[], str],
        providers: Callable[..., PostgresProvider]) -> None:
    schema = schemas()
    await query(dsn, f'CREATE SCHEMA "{schema}"')
    await query(dsn, f'CREATE TABLE "{schema}".users (id int PRIMARY KEY, name text)')
    with pytest.raises(StoreNotFound, match=f"not a duroxy store: schema '{schema}' of "
                       "PostgreSQL database 'test' on 127.0.0.1 holds no duroxy tables"):
        await providers(schema, read_only=True).get_instance("x")
    assert await tables(dsn, schema) == {"users"}


async def test_another_applications_schema_version_table(
        dsn: str, schemas: Callable[[], str],
        providers: Callable[..., PostgresProvider]) -> None:
    """Refused by name, never mistaken for a newer duroxy schema nor added to."""
    schema = schemas()
    await query(dsn, f'CREATE SCHEMA "{schema}"')
    await query(dsn, f'CREATE TABLE "{schema}".schema_version (version int, name text)')
    await query(dsn, f'INSERT INTO "{schema}".schema_version VALUES (1, %s), (9, %s)',
                "create users", "more")
    with pytest.raises(StoreNotFound, match="schema_version table that is not duroxy's"):
        await providers(schema, read_only=True).get_instance("x")
    with pytest.raises(ProviderError, match="cannot keep a duroxy store in schema"):
        await providers(schema).get_instance("x")
    assert await tables(dsn, schema) == {"schema_version"}


@pytest.mark.parametrize("read_only", [True, False])
async def test_a_newer_schema_names_both_versions(
        dsn: str, schemas: Callable[[], str], providers: Callable[..., PostgresProvider],
        read_only: bool) -> None:
    schema = schemas()
    writer = providers(schema)
    await create(writer, "a")
    latest = (await query(dsn, f'SELECT max(version) FROM "{schema}".schema_version'))[0][0]
    future = latest + 1
    await query(dsn, f'INSERT INTO "{schema}".schema_version (version, name) VALUES (%s, %s)',
                future, "future")
    store = providers(schema, read_only=read_only)
    with pytest.raises(SchemaVersionError) as e:
        await store.get_instance("a")
    assert str(e.value) == (f"schema {schema!r} of PostgreSQL database 'test' on 127.0.0.1 "
                            f"has schema version {future}, newer than this duroxy knows "
                            f"(schema version {latest}): upgrade duroxy")
    assert (e.value.store_version, e.value.supported_version) == (future, latest)
    assert not e.value.retryable
    if not read_only:
        with pytest.raises(SchemaVersionError, match="upgrade duroxy"):
            await Runtime.start(providers(schema), *no_registries())
    assert await query(dsn, f'SELECT max(version) FROM "{schema}".schema_version') == [
        (future,)]


async def test_reads_see_the_writer_and_writes_are_refused(
        dsn: str, providers: Callable[..., PostgresProvider]) -> None:
    writer = providers()
    await create(writer, "a")
    store = providers(writer.schema, read_only=True)
    assert store.read_only and "read_only=True" in repr(store)
    client = Client(store)
    assert (await client.get_instance_info("a")).state.value == "PENDING"
    with pytest.raises(StoreReadOnly, match="create_instance refused"):
        await client.start_orchestration("b", "x")
    with pytest.raises(StoreReadOnly, match="a runtime needs a store it can write"):
        await Runtime.start(store, *no_registries())

    # A waiter on the read-only store hears of the end the writer commits.
    waiting = asyncio.ensure_future(client.wait_for_orchestration("a", timeout=30))
    await asyncio.sleep(0)
    item = await fetch_one(writer)
    await writer.ack_orchestration_item(item.lock_token, commit(
        started(), state="COMPLETED", output='"done"'))
    status = await waiting
    assert (status.state.value, status.output) == ("COMPLETED", "done")


async def test_sessions_are_read_only_in_the_server(
        dsn: str, providers: Callable[..., PostgresProvider]) -> None:
    """A write that got past the provider's own refusal fails in the server."""
    import psycopg

    writer = providers()
    await create(writer, "a")
    store = providers(writer.schema, read_only=True)
    assert await store.get_instance("a") is not None
    pool = await store._ready()
    async with pool.connection() as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            await conn.execute("DELETE FROM instances")
    assert await writer.get_instance("a") is not None


async def test_connect_passes_read_only(dsn: str, schemas: Callable[[], str]) -> None:
    schema = schemas()
    store = duroxy.connect(f"{dsn}?schema={schema}", read_only=True)
    try:
        assert store.read_only
        with pytest.raises(StoreNotFound, match="the schema does not exist"):
            await store.get_instance(uid())
    finally:
        await store.close()
    assert not await schema_exists(dsn, schema)

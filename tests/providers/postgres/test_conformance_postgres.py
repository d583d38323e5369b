"""The PostgreSQL provider against the provider conformance suite.

Needs a server: set ``DUROXY_TEST_PG_DSN`` (e.g. ``postgresql://postgres@127.0.0.1/test``).
Every test runs on a fresh schema that is dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest

from duroxy.providers.base import Provider
from duroxy.testing.provider_suite import ProviderConformance

DSN = os.environ.get("DUROXY_TEST_PG_DSN")

pytestmark = pytest.mark.postgres


async def drop_schema(dsn: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
            sql.Identifier(schema)))


class TestPostgresConformance(ProviderConformance):
    @pytest.fixture
    async def provider(self) -> AsyncIterator[Provider]:
        if not DSN:
            pytest.skip("DUROXY_TEST_PG_DSN not set: PostgreSQL tests need a server")
        from duroxy.providers.postgres import PostgresProvider

        schema = f"t_{uuid.uuid4().hex[:12]}"
        store = PostgresProvider(DSN, schema=schema, max_size=4)
        try:
            yield store
        finally:
            await store.close()
            await drop_schema(DSN, schema)

    async def _corrupt(self, provider: Provider, table: str, instance_id: str) -> None:
        """Store a row the provider cannot decode (not JSON), straight in the table."""
        import psycopg
        from psycopg import sql

        from duroxy.providers.postgres import PostgresProvider
        from duroxy.providers.postgres._marshal import key

        assert isinstance(provider, PostgresProvider) and DSN
        async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as conn:
            await conn.execute(sql.SQL("UPDATE {}.{} SET payload = %s WHERE ikey = %s").format(
                sql.Identifier(provider.schema), sql.Identifier(table)),
                ("not-json{", key(instance_id)))

    async def corrupt_history(self, provider: Provider, instance_id: str) -> None:
        await self._corrupt(provider, "history", instance_id)

    async def corrupt_messages(self, provider: Provider, instance_id: str) -> None:
        await self._corrupt(provider, "orchestrator_queue", instance_id)

    async def open_read_only(self, provider: Provider) -> Provider:
        from duroxy.providers.postgres import PostgresProvider

        assert isinstance(provider, PostgresProvider) and DSN
        return PostgresProvider(DSN, provider.schema, max_size=2, read_only=True)


class TestPostgresWarmOffConformance(TestPostgresConformance):
    """The latency switches off (no connection prepares the hot statements before it
    serves, nothing wakes the server before a due time): slower turns, never a
    different store."""

    @pytest.fixture
    async def provider(self) -> AsyncIterator[Provider]:
        if not DSN:
            pytest.skip("DUROXY_TEST_PG_DSN not set: PostgreSQL tests need a server")
        from duroxy.providers.postgres import PostgresProvider

        schema = f"t_{uuid.uuid4().hex[:12]}"
        store = PostgresProvider(DSN, schema=schema, max_size=4, warm_connections=False,
                                 wake_before_due=False)
        try:
            yield store
        finally:
            await store.close()
            await drop_schema(DSN, schema)

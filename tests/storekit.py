"""A store per test, on each kind duroxy has: the in-memory reference store, a SQLite file
and (with ``DUROXY_TEST_PG_DSN``) a fresh PostgreSQL schema. Import ``store`` into a test
module to run its tests on all three."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from duroxy.providers.base import Provider
from duroxy.providers.memory import InMemoryProvider
from duroxy.providers.sqlite import SqliteProvider

DSN = os.environ.get("DUROXY_TEST_PG_DSN")

__all__ = ["STORES", "store"]

STORES = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _drop_schema(dsn: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Provider]:
    """A fresh, empty store of each kind."""
    provider: Provider
    schema = None
    if request.param == "memory":
        provider = InMemoryProvider()
    elif request.param == "sqlite":
        provider = SqliteProvider(tmp_path / "store.db")
    else:
        if not DSN:
            pytest.skip("DUROXY_TEST_PG_DSN not set: PostgreSQL tests need a server")
        from duroxy.providers.postgres import PostgresProvider

        schema = f"t_{uuid.uuid4().hex[:12]}"
        provider = PostgresProvider(DSN, schema, max_size=6)
    try:
        yield provider
    finally:
        await provider.close()
        if schema is not None and DSN:
            _drop_schema(DSN, schema)

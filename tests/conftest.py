"""Shared pytest configuration for duroxy's tests (fixtures used by several modules).

PostgreSQL: ``dsn`` (skips the test when ``DUROXY_TEST_PG_DSN`` is not set), ``schemas``
(fresh schema names, dropped after the test) and ``providers`` (PostgreSQL providers on
a given or fresh schema, closed after the test).

SQLite: every connection a test opens (its own or a store's) must be closed; a test
that leaves one open fails (see ``sqlitekit``)."""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

import sqlitekit

if TYPE_CHECKING:
    from duroxy.providers.postgres import PostgresProvider

DSN = os.environ.get("DUROXY_TEST_PG_DSN")


def _drop_schemas(dsn: str, names: list[str]) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def dsn() -> str:
    if not DSN:
        pytest.skip("DUROXY_TEST_PG_DSN not set: PostgreSQL tests need a server")
    return DSN


@pytest.fixture
def schemas(dsn: str) -> Iterator[Callable[[], str]]:
    """Hands out fresh schema names; drops them all after the test."""
    made: list[str] = []

    def make() -> str:
        made.append(f"t_{uuid.uuid4().hex[:12]}")
        return made[-1]

    yield make
    _drop_schemas(dsn, made)


@pytest.fixture
async def providers(dsn: str, schemas: Callable[[], str]
                    ) -> AsyncIterator[Callable[..., PostgresProvider]]:
    """Builds providers (on a given or fresh schema) and closes them after the test."""
    from duroxy.providers.postgres import PostgresProvider

    made: list[PostgresProvider] = []

    def make(schema: str | None = None, **kw: Any) -> PostgresProvider:
        made.append(PostgresProvider(dsn, schema or schemas(), **kw))
        return made[-1]

    yield make
    for p in made:
        await p.close()


# ------------------------------------------------------------------ unclosed SQLite connections
sqlitekit.install()


def _leak_report(leaks: list[str]) -> str:
    return ("SQLite connections were garbage-collected without close() (close every "
            "connection where it is opened, also when the code using it fails):\n  "
            + "\n  ".join(leaks))


@pytest.fixture(autouse=True)
def _sqlite_connections_closed(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails the test when a SQLite connection was dropped open. The collector runs
    after every test that left one of its connections open, so that one kept only by
    a reference cycle is found here rather than in whichever later test the collector
    happens to run in."""
    test = sqlitekit.current_test = request.node.nodeid
    yield
    if sqlitekit.still_open(test):
        gc.collect()
    leaks = sqlitekit.take_leaks()
    sqlitekit.current_test = "(between tests)"
    if leaks:
        pytest.fail(_leak_report(leaks), pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    gc.collect()
    leaks = sqlitekit.take_leaks()
    if leaks:
        print("\n" + _leak_report(leaks))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

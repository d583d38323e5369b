"""Bringing a tenant schema up to the newest migration this duroxy knows (a store opened
for writing), or checking it without changing anything (a store opened read-only).

A duroxy schema records every migration it ran in ``schema_version``; the row of
version 1 names duroxy's first migration. A ``schema_version`` table without those
columns or that row belongs to another application.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from ...errors import ProviderError, SchemaVersionError, StoreNotFound
from ._sql import Migration, advisory_key

__all__ = ["check", "describe", "migrate"]

_log = logging.getLogger("duroxy.providers.postgres")

Conn = psycopg.AsyncConnection[Any]


def describe(conn: Conn, schema_name: str) -> str:
    """How errors name a store: its schema, database and server."""
    info = conn.info
    return f"schema {schema_name!r} of PostgreSQL database {info.dbname!r} on {info.host}"


async def _stored_version(conn: Conn, schema_name: str, migrations: list[Migration]
                          ) -> int | None:
    """The duroxy schema version of ``schema_name``: 0 without a ``schema_version``
    table, ``None`` when that table is another application's. Runs in a transaction
    (a failed statement must not end the caller's)."""
    schema = sql.Identifier(schema_name)
    cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", [
        sql.SQL("{}.schema_version").format(schema).as_string(conn)])
    row = await cur.fetchone()
    if row is None or not row[0]:
        return 0
    try:
        async with conn.transaction():
            cur = await conn.execute(sql.SQL(
                "SELECT coalesce(max(version), 0),"
                " (SELECT name FROM {}.schema_version WHERE version = 1)"
                " FROM {}.schema_version").format(schema, schema))
            row = await cur.fetchone()
    except pg_errors.UndefinedColumn:
        return None
    assert row is not None
    version, first = int(row[0]), row[1]
    if version == 0:
        return 0
    return version if migrations and first == migrations[0].name else None


def _foreign(where: str) -> str:
    return f"{where} has a schema_version table that is not duroxy's (another application's)"


async def migrate(conn: Conn, schema_name: str, migrations: list[Migration]) -> None:
    """Apply the migrations this schema lacks, each exactly once even when several
    nodes start together: the advisory lock serializes them and each re-reads the
    version after taking it."""
    schema = sql.Identifier(schema_name)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", [advisory_key(schema_name)])
        cur = await conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                                 [schema_name])
        if await cur.fetchone() is None:
            await conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
        current = await _stored_version(conn, schema_name, migrations)
        latest = migrations[-1].version if migrations else 0
        if current is None:
            raise ProviderError(f"cannot keep a duroxy store in "
                                f"{_foreign(describe(conn, schema_name))}; use another schema")
        if current > latest:
            raise SchemaVersionError(describe(conn, schema_name), current, latest)
        if current == latest:
            return
        await conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {}.schema_version ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT clock_timestamp())").format(schema))
        for mig in migrations:
            if mig.version <= current:
                continue
            _log.info("applying migration %04d_%s to schema %r",
                      mig.version, mig.name, schema_name)
            await conn.execute(mig.script, prepare=False)
            await conn.execute(sql.SQL(
                "INSERT INTO {}.schema_version (version, name) VALUES (%s, %s)"
            ).format(schema), [mig.version, mig.name])


async def check(conn: Conn, schema_name: str, migrations: list[Migration]) -> None:
    """For a read-only opening: require a duroxy store of this version in the schema,
    changing nothing (the connection's transactions are read-only). Raises
    :class:`StoreNotFound` for a missing schema or one that holds no duroxy store,
    :class:`SchemaVersionError` for a store of another version."""
    where = describe(conn, schema_name)
    await conn.execute("SET default_transaction_read_only = on")
    async with conn.transaction():
        cur = await conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                                 [schema_name])
        if await cur.fetchone() is None:
            raise StoreNotFound(f"no duroxy store in {where}: the schema does not exist",
                                store=where)
        current = await _stored_version(conn, schema_name, migrations)
    if current is None:
        raise StoreNotFound(f"not a duroxy store: {_foreign(where)}", store=where)
    if current == 0:
        raise StoreNotFound(f"not a duroxy store: {where} holds no duroxy tables",
                            store=where)
    latest = migrations[-1].version if migrations else 0
    if current != latest:
        raise SchemaVersionError(where, current, latest)

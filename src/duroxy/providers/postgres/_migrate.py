"""Bringing a tenant schema up to the newest migration this duroxy knows."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg import sql

from ...errors import ProviderError
from ._sql import Migration, advisory_key

__all__ = ["migrate"]

_log = logging.getLogger("duroxy.providers.postgres")


async def migrate(conn: psycopg.AsyncConnection[Any], schema_name: str,
                  migrations: list[Migration]) -> None:
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
        await conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {}.schema_version ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT clock_timestamp())").format(schema))
        cur = await conn.execute(sql.SQL(
            "SELECT coalesce(max(version), 0) FROM {}.schema_version").format(schema))
        row = await cur.fetchone()
        current = int(row[0]) if row is not None else 0
        latest = migrations[-1].version if migrations else 0
        if current > latest:
            raise ProviderError(
                f"schema {schema_name!r} is at version {current}, newer than this "
                f"duroxy knows ({latest}); upgrade duroxy")
        for mig in migrations:
            if mig.version <= current:
                continue
            _log.info("applying migration %04d_%s to schema %r",
                      mig.version, mig.name, schema_name)
            await conn.execute(mig.script, prepare=False)
            await conn.execute(sql.SQL(
                "INSERT INTO {}.schema_version (version, name) VALUES (%s, %s)"
            ).format(schema), [mig.version, mig.name])

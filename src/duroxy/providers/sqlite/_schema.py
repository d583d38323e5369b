"""What a SQLite file holds of duroxy: its schema version, bringing it up to date (a
store opened for writing), and checking it without changing anything (a store opened
read-only).

A duroxy store records every migration it ran in ``schema_version``; the row of
version 1 names duroxy's first migration. A file without that table holds no duroxy
store; one whose ``schema_version`` table lacks those columns or that row belongs to
another application.
"""

from __future__ import annotations

import logging
import sqlite3
import time

from ...errors import ProviderError, SchemaVersionError, StoreNotFound
from ._sql import migrations, queries
from ._tx import begin_immediate

__all__ = ["check_schema", "latest_version", "migrate", "schema_version", "stored_version",
           "usable_version"]

log = logging.getLogger("duroxy.providers.sqlite")


def latest_version() -> int:
    """The schema version this duroxy's migrations lead to."""
    known = migrations()
    return known[-1].version if known else 0


def schema_version(conn: sqlite3.Connection) -> int:
    """``max(version)`` of ``schema_version``; 0 when the file has no such table."""
    # fetchall, never fetchone: a statement left unfinished keeps its read snapshot, and
    # a later BEGIN IMMEDIATE on a stale snapshot fails with SQLITE_BUSY_SNAPSHOT.
    try:
        ((version,),) = conn.execute(queries()["schema_version"]).fetchall()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return 0
        raise
    return int(version)


def stored_version(conn: sqlite3.Connection) -> int | None:
    """The duroxy schema version of the file open on ``conn``: 0 when it holds no
    duroxy schema, ``None`` when its ``schema_version`` table is another application's."""
    try:
        version = schema_version(conn)
        if version == 0:
            return 0
        first = conn.execute(queries()["first_migration"]).fetchall()
    except sqlite3.OperationalError as e:
        if "no such column" in str(e):
            return None
        raise
    return version if first == [(migrations()[0].name,)] else None


def _foreign(where: str) -> str:
    return (f"{where} has a schema_version table that is not duroxy's (another "
            "application's)")


def usable_version(conn: sqlite3.Connection, where: str) -> int:
    """For an opening for writing, before it changes anything: the duroxy schema
    version of the file (0: none yet). Raises :class:`ProviderError` for a file duroxy
    cannot keep a store in, :class:`SchemaVersionError` for a newer schema."""
    try:
        current = stored_version(conn)
    except sqlite3.DatabaseError as e:
        if "not a database" in str(e):
            raise ProviderError(f"cannot keep a duroxy store in {where}: it is not a "
                                "SQLite database") from None
        raise
    if current is None:
        raise ProviderError(f"cannot keep a duroxy store in {_foreign(where)}; use "
                            "another file")
    if current > latest_version():
        raise SchemaVersionError(where, current, latest_version())
    return current


def migrate(conn: sqlite3.Connection, busy_timeout: float, where: str) -> int:
    """Apply the migrations this file lacks, all in one ``BEGIN IMMEDIATE`` transaction
    (two processes opening a new file at once: the second waits, then finds the work
    done). Returns the schema version. ``where`` names the file in errors."""
    latest = latest_version()
    current = usable_version(conn, where)  # no write lock needed when nothing is to do
    if current == latest:
        return current
    begin_immediate(conn, busy_timeout)
    try:
        conn.execute(queries()["create_schema_version"])
        current = usable_version(conn, where)  # again, under the write lock
        for mig in migrations():
            if mig.version <= current:
                continue
            for stmt in mig.statements:
                conn.execute(stmt)
            conn.execute(queries()["record_migration"], (mig.version, mig.name, time.time()))
            log.info("applied SQLite migration %s", mig.name)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return latest


def check_schema(conn: sqlite3.Connection, where: str) -> int:
    """For a read-only opening: the schema version of the duroxy store open on ``conn``,
    which must be the one this duroxy reads (a read-only opening cannot migrate).
    Raises :class:`StoreNotFound` for a file that is not a SQLite database or holds no
    duroxy store, :class:`SchemaVersionError` for a store of another version."""
    try:
        version = stored_version(conn)
    except sqlite3.DatabaseError as e:
        if "not a database" in str(e):  # SQLITE_NOTADB: some other kind of file
            raise StoreNotFound(f"not a duroxy store: {where} is not a SQLite database",
                                store=where) from None
        raise
    if version is None:
        raise StoreNotFound(f"not a duroxy store: {_foreign(where)}", store=where)
    if version == 0:
        raise StoreNotFound(f"not a duroxy store: {where} holds no duroxy tables",
                            store=where)
    latest = latest_version()
    if version != latest:
        raise SchemaVersionError(where, version, latest)
    return version

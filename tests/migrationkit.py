"""Stores of an earlier schema for the migration tests: a store made by this release,
with what later migrations added taken away again. Each ``undo_*`` removes one
migration's tables, columns and indexes (restoring what it replaced), newest first; a
test then checks the result against what the earlier migrations alone create."""

from __future__ import annotations

import sqlite3
from typing import Any

__all__ = ["pg_undo_0004", "sqlite_layout", "sqlite_undo_0004"]


def sqlite_layout(conn: sqlite3.Connection) -> dict[str, Any]:
    """Every table's columns and every index's definition."""
    tables = [t for (t,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name")]
    return {
        "columns": {t: [tuple(r[1:]) for r in conn.execute(f"PRAGMA table_info({t})")]
                    for t in tables},
        "indexes": sorted(conn.execute(
            "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index' "
            "AND sql IS NOT NULL").fetchall()),
    }


def sqlite_undo_0004(conn: sqlite3.Connection) -> None:
    """Migration 4 (activity routing) taken away."""
    conn.execute("DROP TABLE sessions")
    for index in ("activity_queue_routed", "activity_queue_routed_time",
                  "activity_queue_visible"):
        conn.execute(f"DROP INDEX {index}")
    conn.execute("CREATE INDEX activity_queue_visible ON activity_queue (visible_at)")
    for column in ("tag", "session_id"):
        conn.execute(f"ALTER TABLE activity_queue DROP COLUMN {column}")


async def pg_undo_0004(conn: Any, schema: str) -> None:
    """Migration 4 (activity routing) taken away, on an autocommit psycopg connection."""
    from psycopg import sql

    s = sql.Identifier(schema)
    await conn.execute(sql.SQL("DROP TABLE {}.sessions").format(s))
    for index in ("activity_queue_routed_idx", "activity_queue_routed_time_idx",
                  "activity_queue_visible_idx"):
        await conn.execute(sql.SQL("DROP INDEX {}.{}").format(s, sql.Identifier(index)))
    await conn.execute(sql.SQL(
        "CREATE INDEX activity_queue_visible_idx ON {}.activity_queue (visible_at, id)"
    ).format(s))
    await conn.execute(sql.SQL(
        "ALTER TABLE {}.activity_queue DROP COLUMN tag, DROP COLUMN session_id, "
        "DROP COLUMN skey").format(s))

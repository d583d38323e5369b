"""How a routed fetch of activity work reads the queue, on SQLite and PostgreSQL: each
part of the claim statement is one index range (never a scan of the queue), a fetch of
untagged work without sessions reads the index it read before routing existed, and
work of tags a worker does not take is never read by its fetch, however much of it waits.

The PostgreSQL plans are the generic plans of the prepared statements (what the provider
runs once a statement has been prepared), with the settings of the provider's
connections; the queue holds thousands of rows and is analyzed first."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from duroxy import TagFilter
from duroxy.providers.base import ActivityRoute, ExcludedWork
from duroxy.providers.sqlite import SqliteProvider
from storekit import DSN

ROUTES: dict[str, ActivityRoute | None] = {
    "plain (no route)": None,
    "DEFAULT_ONLY with sessions": ActivityRoute(TagFilter.DEFAULT_ONLY, "me", 3, 30.0),
    "DEFAULT_ONLY at the session cap": ActivityRoute(TagFilter.DEFAULT_ONLY, "me", 0, 30.0),
    "tags gpu, cpu": ActivityRoute(TagFilter.tags(["gpu", "cpu"]), "me", 1, 30.0),
    "default_and gpu, no sessions": ActivityRoute(TagFilter.default_and(["gpu"])),
    "ANY": ActivityRoute(TagFilter.ANY, "me", 2, 30.0),
}
QUEUE_INDEXES = {"activity_queue_visible", "activity_queue_routed",
                 "activity_queue_routed_time"}


# ====================================================================== SQLite
@pytest.fixture
def sqlite_conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    path = tmp_path / "plans.db"

    async def create() -> None:
        store = SqliteProvider(path)
        await store.get_instance("nobody")  # creates and migrates the file
        await store.close()

    asyncio.run(create())
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("ANALYZE")
        yield conn


def sqlite_plan(conn: sqlite3.Connection, route: ActivityRoute | None,
                exclude: ExcludedWork | None = None) -> list[str]:
    from duroxy.providers.sqlite._routing import Claim

    claim = Claim.of(route, exclude)
    assert claim.sql is not None
    return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + claim.sql,
                                           {**claim.params, "now": 1.0, "limit": 8})]


@pytest.mark.parametrize("name", list(ROUTES))
def test_sqlite_every_part_of_a_claim_is_one_index_range(sqlite_conn: sqlite3.Connection,
                                                          name: str) -> None:
    for exclude in (None, ExcludedWork(activities=frozenset({"old"}))):
        plan = sqlite_plan(sqlite_conn, ROUTES[name], exclude)
        reads = [line for line in plan if re.match(r"(SEARCH|SCAN) (activity_queue|q)\b",
                                                   line)]
        assert reads, plan
        for line in reads:
            m = re.match(r"SEARCH (activity_queue|q) USING INDEX (\w+) \((.*)\)$", line)
            assert m and m.group(2) in QUEUE_INDEXES, line
            assert "visible_at<?" in m.group(3), line
        # a session's holder is one lookup by key per row, never a scan
        for line in plan:
            assert not re.match(r"SCAN (sessions|s)\b", line), line


def test_sqlite_plain_work_is_fetched_as_before_routing(sqlite_conn: sqlite3.Connection
                                                        ) -> None:
    assert sqlite_plan(sqlite_conn, None) == [
        "SEARCH q USING INDEX activity_queue_visible (visible_at<?)"]


# ====================================================================== PostgreSQL
@pytest.fixture
def pg_schema() -> Iterator[tuple[Any, str]]:
    if not DSN:
        pytest.skip("DUROXY_TEST_PG_DSN not set: PostgreSQL tests need a server")
    import psycopg
    from psycopg import sql

    from duroxy.providers.postgres import PostgresProvider
    from duroxy.providers.postgres._sql import session_setup

    schema = f"t_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        store = PostgresProvider(DSN, schema)
        await store.get_instance("nobody")  # creates and migrates the schema
        await store.close()

    asyncio.run(create())
    with psycopg.connect(DSN, autocommit=True) as conn:
        try:
            conn.execute(session_setup(schema))
            # 12,000 rows: a third untagged, a third gpu, a third cpu; one in five of
            # each on one of 50 sessions, which another worker holds (with 4,950 more).
            conn.execute("""
                INSERT INTO activity_queue (ikey, instance_id, execution_id, event_id,
                                            payload, visible_at, name, tag, session_id, skey)
                SELECT sha256(('i' || g)::bytea), 'i' || g, 1, 2, '{}',
                       now() - interval '1 minute', 'act',
                       (ARRAY['', 'gpu', 'cpu'])[g % 3 + 1],
                       CASE WHEN g % 5 = 0 THEN 's' || g % 50 END,
                       CASE WHEN g % 5 = 0 THEN sha256(('s' || g % 50)::bytea) END
                FROM generate_series(1, 12000) AS g""")
            conn.execute("""
                INSERT INTO sessions
                SELECT sha256(('s' || g)::bytea), 's' || g, 'another worker',
                       now() + interval '1 hour'
                FROM generate_series(0, 4999) AS g""")
            conn.execute("ANALYZE")
            conn.execute("SET plan_cache_mode = force_generic_plan")
            yield conn, schema
        finally:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(schema)))


def pg_plan(conn: Any, schema: str, route: ActivityRoute | None, analyze: bool = False
            ) -> list[str]:
    """The generic plan of the fetch statement for ``route`` (run and rolled back with
    ``analyze``)."""
    import psycopg
    from psycopg import sql

    from duroxy.providers.base import PLAIN_ROUTE
    from duroxy.providers.postgres._activities import _route_parts
    from duroxy.providers.postgres._sql import load_statements

    route = route or PLAIN_ROUTE
    parts, tags = _route_parts(route)
    stmt = load_statements(schema).variant("fetch_activities", parts)
    args = stmt.args({"limit": 8, "lock_timeout": 30.0, "skip_activities": None,
                      "tags": tags or None, "owner": route.session_owner,
                      "new_sessions": route.new_sessions, "session_lock": 30.0})
    name = f"plan_{uuid.uuid4().hex[:8]}"
    conn.execute(b"PREPARE " + name.encode() + b" AS " + stmt.raw)
    try:
        literals = sql.SQL(", ").join(sql.Literal(a) for a in args).as_bytes(conn)
        options = b"ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF" if analyze else b"COSTS OFF"
        with contextlib.suppress(psycopg.Rollback), conn.transaction():
            cur = conn.execute(b"EXPLAIN (" + options + b") EXECUTE " + name.encode()
                               + b"(" + literals + b")")
            lines = [line for (line,) in cur.fetchall()]
            raise psycopg.Rollback()
        return lines
    finally:
        conn.execute(b"DEALLOCATE " + name.encode())


@pytest.mark.postgres
@pytest.mark.parametrize("name", list(ROUTES))
def test_postgres_every_part_of_a_claim_is_one_index_range(pg_schema: tuple[Any, str],
                                                            name: str) -> None:
    conn, schema = pg_schema
    plan = pg_plan(conn, schema, ROUTES[name])
    text = "\n".join(plan)
    assert not re.search(r"Seq Scan on activity_queue", text), text
    scans = re.findall(r"Index (?:Only )?Scan using (\w+) on activity_queue (\w+)", text)
    ranges = [index for index, alias in scans if alias != "a"]  # "a": the lease, by id
    assert ranges and set(ranges) <= {f"{i}_idx" for i in QUEUE_INDEXES}, text
    assert "Seq Scan on sessions" not in text, text


@pytest.mark.postgres
def test_postgres_plain_work_is_fetched_through_its_own_index(pg_schema: tuple[Any, str]
                                                              ) -> None:
    """A worker of untagged work reads untagged rows only: the 8,000 tagged rows waiting
    are never read (no row of the plain range is filtered out)."""
    conn, schema = pg_schema
    plan = pg_plan(conn, schema, None, analyze=True)
    text = "\n".join(plan)
    assert "Index Scan using activity_queue_visible_idx on activity_queue q" in text, text
    assert "Rows Removed by Filter" not in text, text
    gpu = pg_plan(conn, schema, ROUTES["tags gpu, cpu"], analyze=True)
    # the gpu and cpu ranges: only their own session rows (held by another worker) are
    # passed over, never an untagged row
    removed = [int(n) for n in re.findall(r"Rows Removed by Filter: (\d+)", "\n".join(gpu))]
    assert sum(removed) <= 12000 // 5, gpu

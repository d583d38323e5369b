"""The PostgreSQL store's warm-up: every pooled connection prepares the hot statements
before it serves (see providers/postgres/_warm.py), and doing so writes nothing.

Needs a server: set ``DUROXY_TEST_PG_DSN``."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from duroxy import ActivityRegistry, Client, OrchestrationRegistry, Runtime
from duroxy.testing.provider_suite.support import (
    HOLD,
    activity_completion,
    commit,
    create,
    fetch_one,
    raised,
    scheduled,
    started,
    work,
)

DSN = os.environ.get("DUROXY_TEST_PG_DSN")

pytestmark = pytest.mark.postgres

if DSN:
    import psycopg
    from psycopg import sql

    from duroxy.providers.postgres import PostgresProvider

TABLES = ("instances", "instance_locks", "history", "orchestrator_queue", "activity_queue")


def names_of(p: PostgresProvider, texts: Iterator[str]) -> list[str]:
    """The statement names of prepared statement texts (``?`` for one not ours), each as
    often as it was prepared (once per pattern of parameter types)."""
    by_text: dict[str, str] = {}
    for name in p._q:
        for st in p._q.variants(name):
            by_text[st.raw.decode()] = name
    return sorted(by_text.get(t, "?") for t in texts)


async def prepared(p: PostgresProvider) -> list[str]:
    """The statements prepared on the (only) pooled connection."""
    async with p._connection() as conn:
        cur = await conn.execute("SELECT statement FROM pg_prepared_statements", prepare=False)
        return [row[0] for row in await cur.fetchall()]


async def snapshot(p: PostgresProvider) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    async with p._connection() as conn:
        for table in TABLES:
            cur = await conn.execute(sql.SQL("SELECT * FROM {}.{} ORDER BY 1, 2").format(
                sql.Identifier(p.schema), sql.Identifier(table)), prepare=False)
            out[table] = await cur.fetchall()
    return out


@pytest.fixture
def warm_failures(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """The warm-up calls that failed (the warm-up logs them and carries on)."""
    caplog.set_level(logging.DEBUG, logger="duroxy.providers.postgres")
    return lambda: [r.getMessage() for r in caplog.records if "warming up" in r.getMessage()]


async def test_a_new_connection_comes_with_the_hot_statements_prepared(
        providers: Callable[..., PostgresProvider], warm_failures: Callable[[], list[str]]
) -> None:
    p = providers(min_size=1, max_size=1)
    assert await p.get_instance("nobody") is None
    assert warm_failures() == []
    names = names_of(p, iter(await prepared(p)))
    for hot in ("fetch_orchestrations", "lock_instance", "fetch_activities", "ack_activity",
                "get_instance", "ack_turn", "commit_turn"):
        assert hot in names, names
    # several variants of the turn statements: with an activity, with a message, neither
    assert names.count("ack_turn") >= 3 and names.count("commit_turn") >= 2
    assert "?" not in names


async def test_with_warm_connections_off_a_new_connection_prepares_nothing_ahead(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers(min_size=1, max_size=1, warm_connections=False)
    assert await p.get_instance("nobody") is None
    names = names_of(p, iter(await prepared(p)))
    assert "ack_turn" not in names and "fetch_activities" not in names, names


async def test_the_turns_of_a_workflow_find_their_statements_prepared(
        providers: Callable[..., PostgresProvider], warm_failures: Callable[[], list[str]]
) -> None:
    """An activity, a timer and the end: after the warm-up, only the starts (which the
    warm-up cannot run without creating an instance) are prepared by real calls."""
    p = providers(min_size=1, max_size=1)
    assert await p.get_instance("nobody") is None
    before = await prepared(p)

    async def echo(ctx: Any, x: int) -> int:
        return x

    async def flow(ctx: Any, x: int) -> int:
        a = await ctx.schedule_activity("Echo", x)
        await ctx.schedule_timer(timedelta(milliseconds=20))
        b = await ctx.schedule_activity("Echo", a + 1)
        return int(b) * 10

    rt = await Runtime.start(p, ActivityRegistry.builder().register("Echo", echo).build(),
                             OrchestrationRegistry.builder().register("Flow", flow).build())
    try:
        client = Client(p)
        for i in range(3):
            await client.start_orchestration(f"flow-{i}", "Flow", i)
            status = await client.wait_for_orchestration(f"flow-{i}", timeout=20)
            assert status.output == (i + 1) * 10
    finally:
        await rt.shutdown(timeout=5)
    after = await prepared(p)
    # A real call whose parameter types differ from its warm-up's prepares the same text
    # once more: counted, not just collected.
    added = Counter(after) - Counter(before)
    assert not Counter(before) - Counter(after)
    assert set(names_of(p, iter(added.elements()))) <= {
        "create_instance", "create_instance_leased"}, names_of(p, iter(added.elements()))
    assert warm_failures() == []


async def test_the_warm_up_writes_nothing(
        dsn: str, providers: Callable[..., PostgresProvider],
        warm_failures: Callable[[], list[str]]) -> None:
    p = providers(min_size=1, max_size=1)
    # a store with something of everything: a leased instance with a waiting message,
    # an instance with a visible message, leased and unleased activity work
    await create(p, "busy")
    item = await fetch_one(p)
    await p.ack_orchestration_item(item.lock_token, commit(
        started(), scheduled(2), scheduled(3),
        activities=[work("busy", event_id=2), work("busy", event_id=3)]))
    leased = await p.fetch_activity_items(HOLD, limit=1)
    assert len(leased) == 1
    await p.enqueue_orchestrator_message(raised("busy"))
    assert await fetch_one(p) is not None  # busy is leased again, with the event
    await create(p, "waiting")
    await p.enqueue_orchestrator_message(activity_completion(work("waiting", event_id=9)))
    before = await snapshot(p)
    assert before["activity_queue"] and before["orchestrator_queue"]
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as listener:
        await listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(p.channel)))
        async with p._connection() as conn:
            await p._warm(conn)
        # Notifications arrive in commit order: any the warm-up sent come before this.
        await listener.execute("SELECT pg_notify(%s, 'marker')", [p.channel])
        heard = [n.payload async for n in listener.notifies(timeout=5, stop_after=1)]
    assert heard == ["marker"]
    assert await snapshot(p) == before
    assert warm_failures() == []

"""One orchestration clock, end to end on every store: ``utcnow()`` around a wait of
``d`` advances by at least ``d``, a timer's turn never runs before its fire time, and
history's times never run backwards; continue-as-new carries at most
``MAX_CARRY_FORWARD_EVENTS`` unread events, warning for each one dropped."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path

import pytest

from duroxy import (
    MAX_CARRY_FORWARD_EVENTS,
    ActivityRegistry,
    Client,
    OrchestrationContext,
    OrchestrationRegistry,
    Runtime,
)
from duroxy.history import TimerCreated, TimerFired
from duroxy.providers.base import Provider
from duroxy.providers.memory import InMemoryProvider
from duroxy.providers.sqlite import SqliteProvider

PG_DSN = os.environ.get("DUROXY_TEST_PG_DSN")


def _postgres(_p: Path) -> Provider:
    if not PG_DSN:
        pytest.skip("DUROXY_TEST_PG_DSN not set: PostgreSQL tests need a server")
    from duroxy.providers.postgres import PostgresProvider

    return PostgresProvider(PG_DSN, schema=f"clock_{uuid.uuid4().hex[:12]}")


STORES: dict[str, Callable[[Path], Provider]] = {
    "memory": lambda _p: InMemoryProvider(),
    "sqlite": lambda p: SqliteProvider(p / "clock.db"),
    "postgres": _postgres,
}


def _us(t: datetime) -> int:
    return round(t.timestamp() * 1_000_000)


async def rounds(ctx: OrchestrationContext, delays: list[float]) -> list[list[int]]:
    seen = []
    for i, delay in enumerate(delays):
        before = await ctx.utcnow()
        if i % 2:
            await ctx.schedule_timer(delay)
        else:
            await asyncio.sleep(delay)
        after = await ctx.utcnow()
        seen.append([_us(before), _us(after)])
    return seen


async def piles_up(ctx: OrchestrationContext, n: int) -> int:
    if n == 0:
        await ctx.schedule_wait("go")  # meanwhile many "x" arrive, never waited for
        ctx.continue_as_new(1)
    got = 0
    while True:
        index, _ = await ctx.select2(ctx.schedule_wait("x"), ctx.schedule_timer(0.05))
        if index == 1:
            return got
        got += 1


@pytest.fixture(params=sorted(STORES))
async def env(request: pytest.FixtureRequest,
              tmp_path: Path) -> AsyncIterator[tuple[Runtime, Client]]:
    store = STORES[request.param](tmp_path)
    orchs = (OrchestrationRegistry.builder().register("rounds", rounds)
             .register("piles_up", piles_up).build())
    rt = await Runtime.start(store, ActivityRegistry.builder().build(), orchs)
    try:
        yield rt, Client(store)
    finally:
        await rt.shutdown(timeout=2)
        await store.close()
        schema = getattr(store, "schema", None)
        if PG_DSN and isinstance(schema, str):
            import psycopg
            from psycopg import sql

            async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as c:
                await c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(schema)))


async def test_utcnow_around_waits_advances_by_at_least_the_wait(
        env: tuple[Runtime, Client]) -> None:
    _rt, client = env
    delays = [0.002, 0.0101, 0.003, 0.0007, 0.02, 0.0049] * 5
    await client.start_orchestration("clock-1", "rounds", delays)
    status = await client.wait_for_orchestration("clock-1", 30)
    assert status.state.value == "COMPLETED", status.error
    short = [(d, after - before) for d, (before, after) in zip(delays, status.output,
                                                                  strict=True)
             if after - before < d * 1_000_000]
    assert short == []
    history = await client.read_history("clock-1")
    created = {e.event_id: e for e in history if isinstance(e, TimerCreated)}
    fired = [e for e in history if isinstance(e, TimerFired)]
    assert len(fired) == len(delays)
    for event in fired:
        assert event.ts >= event.fire_at == created[event.source_event_id].fire_at
    times = [e.ts for e in history]
    assert times == sorted(times)


async def test_continue_as_new_carries_at_most_the_cap(
        env: tuple[Runtime, Client], caplog: pytest.LogCaptureFixture) -> None:
    _rt, client = env
    await client.start_orchestration("pile-1", "piles_up", 0)
    extra = 7
    for i in range(MAX_CARRY_FORWARD_EVENTS + extra):
        await client.raise_event("pile-1", "x", i)
    with caplog.at_level(logging.WARNING, logger="duroxy.orchestration"):
        await client.raise_event("pile-1", "go")
        status = await client.wait_for_orchestration("pile-1", 30)
    assert status.output == MAX_CARRY_FORWARD_EVENTS
    warnings = [r.getMessage() for r in caplog.records if r.name == "duroxy.orchestration"
                and r.levelno == logging.WARNING and "'pile-1'" in r.getMessage()]
    assert len(warnings) == extra
    assert all("'x'" in w and str(MAX_CARRY_FORWARD_EVENTS) in w for w in warnings)

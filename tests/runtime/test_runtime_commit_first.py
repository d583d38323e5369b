"""Commit first, then effects, through the runtime: when the commit of a turn fails, the
activities it scheduled never run with that turn's decisions, so an idempotency key taken
from history (``ctx.new_guid()``) protects the user."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from duroxy import (
    ActivityContext,
    ActivityRegistry,
    Client,
    OrchestrationContext,
    OrchestrationRegistry,
    Runtime,
    RuntimeOptions,
)
from duroxy.history import GuidRecorded
from duroxy.providers.sqlite import SqliteProvider

calls: list[str] = []


async def charge(ctx: ActivityContext, key: str) -> str:
    calls.append(key)  # the side effect: a payment made under this idempotency key
    return key


async def pay(ctx: OrchestrationContext, _: Any) -> str:
    key = await ctx.new_guid()
    return str(await ctx.schedule_activity("charge", key))


async def test_a_turn_whose_commit_fails_runs_no_activity_of_its_decisions(
        tmp_path: Path) -> None:
    calls.clear()
    store = SqliteProvider(tmp_path / "pay.db")
    failed: list[int] = []

    def fail_first_turn_commit() -> None:
        # On the writer thread, inside the transaction about to commit: the turn's
        # history is there, uncommitted. Fail that COMMIT twice, as a full disk would.
        tx = store._writer._tx
        assert tx is not None
        ((n,),) = tx.conn.execute("SELECT count(*) FROM history").fetchall()
        if n and len(failed) < 2:
            failed.append(n)
            raise sqlite3.OperationalError("database or disk is full")

    store._writer.before_commit = fail_first_turn_commit
    acts = ActivityRegistry.builder().register("charge", charge).build()
    orchs = OrchestrationRegistry.builder().register("pay", pay).build()
    async with store, await Runtime.start(store, acts, orchs, RuntimeOptions(max_attempts=5)):
        client = Client(store)
        await client.start_orchestration("pay-1", "pay")
        status = await client.wait_for_orchestration("pay-1", 20)
        history = await client.read_history("pay-1")
    assert len(failed) == 2
    (recorded,) = [e.value for e in history if isinstance(e, GuidRecorded)]
    assert status.output == recorded
    assert calls == [recorded]  # never a key that history does not hold

"""One corrupted history row: broken JSON written straight into the history table of one
instance (as a bad disk, a bad restore or a hand edit would leave it). Only that instance
fails, with an error that names it and says its stored history does not decode; every
other instance keeps running and completes. On SQLite, PostgreSQL and the in-memory
store (whose stored history is its wire text too)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from faultkit import wait_all, wait_until

from duroxy import (
    ActivityContext,
    ActivityRegistry,
    Client,
    OrchestrationContext,
    OrchestrationRegistry,
    OrchestrationState,
    Runtime,
)
from duroxy.errors import PayloadError
from duroxy.providers.base import Provider

BROKEN = '{"v": 1, "k": "ActivityCompleted", "id": 3, '  # cut short: not JSON
INSTANCES = 8
VICTIM = "corrupt-3"


async def add_one(ctx: ActivityContext, n: int) -> int:
    return n + 1


async def flow(ctx: OrchestrationContext, n: int) -> int:
    """An activity, then a wait for ``go``, then another activity: the first part's
    history is read back (replayed) when the event arrives at a fresh runtime."""
    a = await ctx.schedule_activity("add_one", n)
    ctx.set_custom_status("waiting")
    bonus = await ctx.schedule_wait("go")
    return int(await ctx.schedule_activity("add_one", a)) + int(bonus)


REGISTRIES = (ActivityRegistry.builder().register("add_one", add_one).build(),
              OrchestrationRegistry.builder().register("flow", flow).build())


@dataclass
class Store:
    provider: Provider
    #: writes broken JSON into the stored history event ``event_id`` of an instance
    corrupt: Callable[[str, int], None]


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    provider: Any
    if request.param == "memory":
        from duroxy.providers.memory import InMemoryProvider

        provider = InMemoryProvider()

        def corrupt(iid: str, event_id: int) -> None:
            for events in provider._history[iid].values():
                for i, (eid, _text) in enumerate(events):
                    if eid == event_id:
                        events[i] = (eid, BROKEN)

    elif request.param == "sqlite":
        from duroxy.providers.sqlite import SqliteProvider

        db = tmp_path / "c.db"
        provider = SqliteProvider(db)

        def corrupt(iid: str, event_id: int) -> None:
            with contextlib.closing(sqlite3.connect(db)) as conn, conn:
                cur = conn.execute("UPDATE history SET event_json = ? WHERE instance_id = ? "
                                   "AND event_id = ?", (BROKEN, iid, event_id))
                assert cur.rowcount == 1
    else:
        import hashlib

        import psycopg
        from psycopg import sql

        from duroxy.providers.postgres import PostgresProvider

        dsn = request.getfixturevalue("dsn")
        provider = PostgresProvider(dsn, request.getfixturevalue("schemas")())

        def corrupt(iid: str, event_id: int) -> None:
            with psycopg.connect(dsn, autocommit=True) as conn:
                cur = conn.execute(sql.SQL(
                    "UPDATE {}.history SET payload = %s WHERE ikey = %s AND event_id = %s"
                ).format(sql.Identifier(provider.schema)),
                    (BROKEN, hashlib.sha256(iid.encode()).digest(), event_id))
                assert cur.rowcount == 1
    yield Store(provider, corrupt)
    await provider.close()


@pytest.mark.timeout(60)
async def test_a_corrupted_history_row_fails_only_its_instance(store: Store) -> None:
    provider, client = store.provider, Client(store.provider)
    ids = [f"corrupt-{n}" for n in range(INSTANCES)]
    async with await Runtime.start(provider, *REGISTRIES):
        for n, iid in enumerate(ids):
            await client.start_orchestration(iid, "flow", n)

        async def all_waiting() -> bool:
            statuses = [await client.get_orchestration_status(i) for i in ids]
            return all(st.custom_status == "waiting" for st in statuses)

        await wait_until(all_waiting, 20, "every instance to wait for its event")
    # The runtime is gone (a restart): the next turns read their histories back.
    history = await client.read_history(VICTIM)
    completed = next(e for e in history if e.kind == "ActivityCompleted")
    store.corrupt(VICTIM, completed.event_id)

    async with await Runtime.start(provider, *REGISTRIES):
        for iid in ids:
            await client.raise_event(iid, "go", 100)
        statuses = await wait_all(client, ids, 30)
    for n, iid in enumerate(ids):
        st = statuses[iid]
        if iid == VICTIM:
            assert st.state is OrchestrationState.FAILED, st
            assert st.error is not None and st.error.error_type == "PayloadError"
            assert repr(VICTIM) in st.error.message, st.error.message
            assert "stored history" in st.error.message and "does not decode" in \
                st.error.message, st.error.message
        else:
            assert st.state is OrchestrationState.COMPLETED, (iid, st.error)
            assert st.output == n + 2 + 100, iid
    # Reading the broken history names the instance too.
    with pytest.raises(PayloadError, match=f"{VICTIM!r}.*does not decode"):
        await client.read_history(VICTIM)

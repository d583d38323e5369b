"""PostgreSQL cut off under load: every backend of the database terminated
(``pg_terminate_backend``) several times while hundreds of instances run, and the server
restarted once. The runtime must recover by itself: no instance fails, nothing is lost
or done twice in history, activity side effects (counted in a file outside the store) are
what at-least-once allows, and LISTEN/NOTIFY resubscribes, so work committed by another
node is still announced to this one.

These faults would disturb everyone else's tests on the shared server: they run on a
private server of their own (``private_pg`` in tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from faultkit import Effects, retrying, wait_all, wait_until
from pgserver import PrivatePg

from duroxy import (
    ActivityContext,
    ActivityRegistry,
    Client,
    OrchestrationContext,
    OrchestrationRegistry,
    OrchestrationState,
    Runtime,
    RuntimeOptions,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

INSTANCES, STEPS = 300, 4
STEP_S = 0.1
ACT_CONCURRENCY = 16
CUTS = 4
LOCK = 2.0


def chain_app(effects: Effects) -> tuple[ActivityRegistry, OrchestrationRegistry]:
    """``chain``: ``STEPS`` activities in sequence, a durable timer half way."""

    async def step(ctx: ActivityContext, inp: dict[str, int]) -> int:
        effects.record(ctx, inp["k"])
        await asyncio.sleep(STEP_S)
        return inp["v"] * 3 + inp["k"]

    async def chain(ctx: OrchestrationContext, v: int) -> int:
        for k in range(STEPS):
            if k == STEPS // 2:
                await ctx.schedule_timer(0.1)
            v = await ctx.schedule_activity("step", {"v": v, "k": k})
        return v

    acts = ActivityRegistry.builder().register("step", step).build()
    orchs = OrchestrationRegistry.builder().register("chain", chain).build()
    return acts, orchs


def chain_output(v: int) -> int:
    for k in range(STEPS):
        v = v * 3 + k
    return v


@pytest.fixture
async def schema(private_pg: PrivatePg) -> AsyncIterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    import psycopg
    from psycopg import sql

    with psycopg.connect(private_pg.dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.mark.timeout(300)
async def test_backends_terminated_and_server_restarted_under_load(
        private_pg: PrivatePg, schema: str, tmp_path: Path) -> None:
    from duroxy.providers.postgres import PostgresProvider

    effects = Effects(tmp_path / "effects.log")
    acts, orchs = chain_app(effects)
    # The runtime's node and the client are separate provider objects (two nodes): only
    # NOTIFY carries the client's starts to the runtime.
    node = PostgresProvider(private_pg.dsn, schema)
    client_store = PostgresProvider(private_pg.dsn, schema)
    client = Client(client_store)
    opts = RuntimeOptions(orchestration_lock_timeout=LOCK, activity_lock_timeout=LOCK,
                          activity_concurrency=ACT_CONCURRENCY, cancel_check_interval=0.2)
    noted: list[str | None] = []
    try:
        rt = await Runtime.start(node, acts, orchs, opts)
        node.listen("orchestrator", noted.append)
        await node.wait_listening()
        ids = [f"outage-{n}" for n in range(INSTANCES)]
        for n, iid in enumerate(ids):
            await client.start_orchestration(iid, "chain", n)
        total = INSTANCES * STEPS

        # Cut every backend (this node's pool and listening connection, the client's)
        # a few times while the work runs, then restart the server once.
        # Between two faults the runtime must have started more activities than it can
        # hold at once (so it reconnected and fetched again). The steps take long
        # enough that most of the work is still ahead at the restart.
        chunk = 3 * ACT_CONCURRENCY

        async def progress() -> None:
            since = len(effects.read())
            await wait_until(lambda: len(effects.read()) >= since + chunk, 60,
                             "work to progress after a fault")

        terminated = []
        for _ in range(CUTS):
            await progress()
            terminated.append(await asyncio.to_thread(private_pg.terminate_backends))
        await progress()
        running_at_restart = total - len({(r["iid"], r["key"]) for r in effects.read()})
        await asyncio.to_thread(private_pg.restart)
        assert all(terminated), f"a cut found no backend to terminate: {terminated}"
        assert running_at_restart > 0, "everything finished before the restart"

        # The runtime recovers by itself: every instance completes, with its output.
        statuses = await wait_all(client, ids, 150)
        for n, iid in enumerate(ids):
            st = statuses[iid]
            assert st.state is OrchestrationState.COMPLETED, (iid, st.state, st.error)
            assert st.output == chain_output(n), iid
        # Nothing doubled in history: one result per step, one end.
        for iid in ids:
            history = await retrying(client.read_history, iid)
            kinds = Counter(e.kind for e in history)
            assert kinds["ActivityScheduled"] == kinds["ActivityCompleted"] == STEPS, iid
            assert kinds["TimerFired"] == 1 and kinds["OrchestrationCompleted"] == 1, iid
        # Side effects: every step ran; a step ran again only for a fault (an ack or a
        # renewal cut off), and each fault can cost at most the activities in flight.
        runs = Counter((r["iid"], r["key"]) for r in effects.read())
        assert set(runs) == {(iid, k) for iid in ids for k in range(STEPS)}
        faults = CUTS + 1
        extra = sum(runs.values()) - len(runs)
        assert max(runs.values()) <= 1 + faults, runs.most_common(3)
        assert extra <= faults * ACT_CONCURRENCY, (extra, runs.most_common(5))

        # LISTEN resubscribed after the cuts and the restart: the listening connection
        # came back each time, and a start committed by the other node now reaches this
        # node's listeners by NOTIFY (only NOTIFY can: no poll calls a listener) and is
        # run by the runtime.
        await node.wait_listening()
        assert node._notifier.reconnects >= 2
        probe = "outage-after"
        await retrying(client.start_orchestration, probe, "chain", 1)
        await wait_until(lambda: probe in noted, 20, "the NOTIFY of the start after recovery")
        st = await client.wait_for_orchestration(probe, 30)
        assert st.state is OrchestrationState.COMPLETED and st.output == chain_output(1)
        await rt.shutdown(timeout=5)

        # A fetch on this node, parked for 30 s with nothing to do, is woken by the other
        # node's start well before its time is up: work is picked up by notification,
        # not by polling.
        poll = asyncio.ensure_future(node.poll_orchestration_items(LOCK, 1, wait=30.0))
        await asyncio.sleep(0.5)
        assert not poll.done(), "the idle poll returned early"
        started = time.monotonic()
        await client.start_orchestration("outage-woken", "chain", 2)
        items: list[Any] = await asyncio.wait_for(poll, 35)
        waited = time.monotonic() - started
        assert [i.instance_id for i in items] == ["outage-woken"]
        assert waited < 10.0, f"the parked poll took {waited:.1f} s: it was not woken"
        await node.abandon_orchestration_item(items[0].lock_token)
    finally:
        await node.close()
        await client_store.close()


#: Long enough for psycopg_pool's own reconnection delay (1, 2, 4, 8, 16 s ...) to have
#: grown past 10 s by the time the server is back.
OUTAGE_S = 17.0


@pytest.mark.timeout(240)
async def test_after_a_long_outage_work_resumes_as_soon_as_the_server_is_back(
        private_pg: PrivatePg, schema: str, tmp_path: Path) -> None:
    from duroxy.providers.postgres import PostgresProvider
    from duroxy.providers.postgres._pool import RECONNECT_MAX_DELAY_S

    effects = Effects(tmp_path / "effects.log")
    acts, orchs = chain_app(effects)
    node = PostgresProvider(private_pg.dsn, schema)
    client = Client(node)
    opts = RuntimeOptions(orchestration_lock_timeout=LOCK, activity_lock_timeout=LOCK,
                          activity_concurrency=ACT_CONCURRENCY, cancel_check_interval=0.2)
    try:
        async with await Runtime.start(node, acts, orchs, opts):
            ids = [f"long-{n}" for n in range(INSTANCES // 3)]
            for n, iid in enumerate(ids):
                await client.start_orchestration(iid, "chain", n)
            await wait_until(lambda: len(effects.read()) >= 3 * ACT_CONCURRENCY, 60,
                             "work to start")
            await asyncio.to_thread(private_pg.stop)
            await asyncio.sleep(OUTAGE_S)
            await asyncio.to_thread(private_pg.start)
            back, at = len(effects.read()), time.monotonic()
            assert back < len(ids) * STEPS, "everything finished before the outage"
            # More activities start than were in hand at the outage: the pool connected
            # again, and the runtime fetched new work.
            await wait_until(lambda: len(effects.read()) >= back + 2 * ACT_CONCURRENCY, 60,
                             "work to resume after the outage")
            resumed = time.monotonic() - at
            statuses = await wait_all(client, ids, 120)
        for n, iid in enumerate(ids):
            assert statuses[iid].state is OrchestrationState.COMPLETED, statuses[iid]
            assert statuses[iid].output == chain_output(n), iid
        # Generous: the pool tries every RECONNECT_MAX_DELAY_S at least; left to its own
        # doubling it would try next some 10 s after the server's return.
        assert resumed < RECONNECT_MAX_DELAY_S + 3.0, f"work resumed {resumed:.1f} s late"
    finally:
        await node.close()

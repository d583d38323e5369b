"""A worker process frozen (SIGSTOP) past its orchestration and activity lock timeouts
while a second worker takes its work over and finishes it, then thawed (SIGCONT): a
stale worker that wakes up with work in hand.

The promise: every instance completes exactly once with its right output; each step's
side effect runs at least once, and a second time only for work the frozen worker held;
and nothing the stale worker does after it wakes changes any history (its acks find
their locks lost). On SQLite (one file shared by the processes) and on PostgreSQL (the
shared test server is fine: nothing here touches the server itself).

Workers run ``tests/procapp.py``; its ``step`` activity appends a line to a log outside
the store when it starts and when it ends, with the worker's pid.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from faultkit import Effects

import procapp
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
from duroxy.providers.base import Provider
from duroxy.providers.sqlite import SqliteProvider
from workerkit import Workers, wait_until

# Short leases, so that a frozen worker loses its work within a second or two.
ORCH_LOCK, ACT_LOCK = 1.0, 2.0
ACT_CONCURRENCY = ORCH_CONCURRENCY = 4
INSTANCES, STEPS = 12, 4
#: each step sleeps this long: work is in flight whenever the worker is frozen
STEP_S = 0.2


@dataclass
class Cluster:
    workers: Workers
    client: Client
    store: Provider
    #: whether another process could write to the store now (see ``freeze``)
    writable: Callable[[], bool]


def _sqlite_writable(db: Path) -> Callable[[], bool]:
    def writable() -> bool:
        conn = sqlite3.connect(db, timeout=0.2, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                return False
            raise
        finally:
            conn.close()

    return writable


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    store: Provider
    if request.param == "sqlite":
        db = tmp_path / "shared.db"
        store_args: tuple[str, ...] = ("--db", str(db))
        store = SqliteProvider(db)
        drop: Callable[[], None] = lambda: None  # noqa: E731
        writable = _sqlite_writable(db)
    else:
        from duroxy.providers.postgres import PostgresProvider
        from workerkit import drop_schema, store_url

        dsn = request.getfixturevalue("dsn")
        schema = request.getfixturevalue("schemas")()
        store_args = ("--store", store_url(dsn, schema))
        store = PostgresProvider(dsn, schema=schema)

        def drop() -> None:
            drop_schema(dsn, schema)

        def writable() -> bool:  # a frozen client holds no lock between statements
            return True

    workers = Workers(tmp_path, store_args, tmp_path / "effects.log")
    try:
        yield Cluster(workers, Client(store), store, writable)
    finally:
        for w in workers.started:  # a frozen worker cannot die of SIGKILL until thawed
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGCONT)
        workers.stop_all()
        await store.close()
        drop()


def step_key(r: dict[str, Any]) -> tuple[str, int]:
    return r["iid"], int(r["input"]["k"])


def keys(log: list[dict[str, Any]], phase: str, pid: int) -> set[tuple[str, int]]:
    return {step_key(r) for r in log if r["phase"] == phase and r["pid"] == pid}


async def snapshot(client: Client, ids: list[str]) -> dict[str, Any]:
    """Each instance's history and record, as a client reads them."""
    out: dict[str, Any] = {}
    for iid in ids:
        st = await client.get_orchestration_status(iid)
        out[iid] = (st.state, st.output, st.execution_id, await client.read_history(iid))
    return out


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_frozen_worker_resumed_after_its_leases_lapsed_changes_nothing(
        cluster: Cluster) -> None:
    workers, client = cluster.workers, cluster.client
    opts = ["--orch-lock", str(ORCH_LOCK), "--act-lock", str(ACT_LOCK),
            "--act-concurrency", str(ACT_CONCURRENCY),
            "--orch-concurrency", str(ORCH_CONCURRENCY), "--shutdown-timeout", "5"]
    a = workers.spawn("a", *opts)
    await workers.wait_ready(a, timeout=30)
    ids = [f"pause-{n}" for n in range(INSTANCES)]
    for n, iid in enumerate(ids):
        await client.start_orchestration(iid, "chain",
                                         {"start": n, "steps": STEPS, "sleep": STEP_S})

    # Freeze the worker a third of the way in, while it has steps started and not
    # finished (so it holds activity leases, and turns follow them).
    total = INSTANCES * STEPS

    def busy() -> bool:
        log = procapp.read_log(workers.log)
        return (len(keys(log, "end", a.pid)) >= total // 3
                and bool(keys(log, "start", a.pid) - keys(log, "end", a.pid)))

    # A SQLite writer frozen inside its write transaction keeps the file's write lock
    # until it is thawed, which would stop every other process (see the README's
    # "Faults and limits"): freeze it between transactions.
    held: set[tuple[str, int]] = set()
    for _ in range(200):
        await wait_until(busy, 30, "the first worker to be a third through, with work "
                         "in hand", interval=0.005)
        a.proc.send_signal(signal.SIGSTOP)
        at_freeze = procapp.read_log(workers.log)
        held = keys(at_freeze, "start", a.pid) - keys(at_freeze, "end", a.pid)
        if held and cluster.writable():
            break
        a.proc.send_signal(signal.SIGCONT)
    else:
        pytest.fail("the first worker was never frozen outside a write transaction "
                    "with a step in hand")
    frozen_at = time.time()
    assert len(keys(at_freeze, "end", a.pid)) < total

    # A second worker takes over once the leases lapse, and finishes everything.
    b = workers.spawn("b", *opts)
    await workers.wait_ready(b, timeout=30)
    for n, iid in enumerate(ids):
        st = await client.wait_for_orchestration(iid, 40)
        assert st.state is OrchestrationState.COMPLETED, (iid, st.error, b.text())
        assert st.output == procapp.chain_output(n, STEPS), iid
    before = await snapshot(client, ids)
    # The frozen worker slept well past both lock timeouts.
    assert time.time() - frozen_at > max(ORCH_LOCK, ACT_LOCK)

    # Thaw it: its steps in flight finish, their acks and the turns after them find
    # their locks lost. Then stop it cleanly: once it has exited, it can write nothing.
    resumed_at = time.time()
    a.proc.send_signal(signal.SIGCONT)

    def finished_what_it_held() -> bool:
        return held <= keys(procapp.read_log(workers.log), "end", a.pid)

    await wait_until(finished_what_it_held, 20, "the thawed worker to finish its steps")
    a.proc.send_signal(signal.SIGTERM)
    assert a.proc.wait(timeout=30) == 0, a.text()
    after = await snapshot(client, ids)
    assert after == before, "the thawed worker changed a history or a record"
    assert await client.list_instances(state="FAILED") == []

    log = procapp.read_log(workers.log)
    everything = {(iid, k) for iid in ids for k in range(STEPS)}
    ends = Counter(step_key(r) for r in log if r["phase"] == "end")
    assert set(ends) == everything
    # What at-least-once allows, and no more: a step ran twice only when the frozen
    # worker held it and the second worker ran it again; never three times; the second
    # worker never repeated its own work.
    by_b = Counter(step_key(r) for r in log if r["phase"] == "start" and r["pid"] == b.pid)
    assert max(by_b.values()) == 1, [k for k, c in by_b.items() if c > 1]
    twice = {k for k, c in ends.items() if c > 1}
    assert max(ends.values()) <= 2, [k for k, c in ends.items() if c > 2]
    assert twice <= keys(log, "end", a.pid) & set(by_b), sorted(twice)
    # The steps the frozen worker held ran again on the second worker, and only those
    # (the steps it had started, plus the ones its turns had claimed and not yet
    # started), which its activity and orchestration slots bound. Once thawed it may
    # still run the body of a step it had decided to start before the freeze (nothing
    # can stop it in between); a step it had only claimed it renews first and drops,
    # its lease lost (see
    # test_a_claimed_activity_whose_lease_lapsed_while_it_waited_is_not_started).
    rerun = keys(log, "start", a.pid) & set(by_b)
    assert held <= rerun and len(rerun) <= ACT_CONCURRENCY + ORCH_CONCURRENCY, sorted(rerun)
    late = [step_key(r) for r in log
            if r["phase"] == "start" and r["pid"] == a.pid and r["t"] >= resumed_at]
    assert set(late) <= rerun and len(late) <= ACT_CONCURRENCY, late
    # Every step's result in history is the one its input gives (nothing doubled).
    for iid, (_state, _output, _exe, history) in after.items():
        kinds = Counter(e.kind for e in history)
        assert kinds["ActivityScheduled"] == kinds["ActivityCompleted"] == STEPS, iid
        assert kinds["OrchestrationCompleted"] == 1, iid
    b.proc.send_signal(signal.SIGTERM)
    assert b.proc.wait(timeout=30) == 0, b.text()



async def test_a_claimed_activity_whose_lease_lapsed_while_it_waited_is_not_started(
        tmp_path: Path) -> None:
    """A worker whose turns claimed more activities than it had free slots (two turns
    committed at once, each seeing the one free slot) holds the second claim while the
    first activity runs past the lease. Starting it then would run it on a lease that
    is gone: its result would be refused and the activity run once more. It is renewed
    first and, found lost, left to the next fetch: each activity runs once."""
    effects = Effects(tmp_path / "effects.log")
    lease = 0.6

    async def slow(ctx: ActivityContext, n: int) -> int:
        effects.record(ctx, n)
        await asyncio.sleep(2 * lease)  # renewed meanwhile: its own lease holds
        return n

    async def one(ctx: OrchestrationContext, n: int) -> int:
        return int(await ctx.schedule_activity("slow", n)) + 1

    acts = ActivityRegistry.builder().register("slow", slow).build()
    orchs = OrchestrationRegistry.builder().register("one", one).build()
    store = SqliteProvider(tmp_path / "s.db")
    client = Client(store)
    for n in range(2):  # queued before the worker starts: its first fetch takes both
        await client.start_orchestration(f"starved-{n}", "one", n)
    opts = RuntimeOptions(activity_concurrency=1, orchestration_concurrency=2,
                          activity_lock_timeout=lease, cancel_check_interval=0.1)
    async with store, await Runtime.start(store, acts, orchs, opts):
        for n in range(2):
            st = await client.wait_for_orchestration(f"starved-{n}", 20)
            assert st.state is OrchestrationState.COMPLETED and st.output == n + 1
    assert effects.counts() == Counter({("starved-0", "slow", 0): 1,
                                        ("starved-1", "slow", 1): 1})

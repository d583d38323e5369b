"""Runtimes as separate processes (and separate runtimes in one process) on one SQLite file:
crash recovery, determinism across a restart, sharing work, shutdown hand-over, and how
fast cancellation reaches a running activity.

Worker processes run ``tests/procapp.py``; its activities append a line to a side-effect
log before returning, which lets these tests count executions exactly.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

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
from duroxy.providers.sqlite import SqliteProvider
from workerkit import Workers, wait_until


# ====================================================================== helpers
async def wait_until_async(pred: Callable[[], Awaitable[bool]], timeout: float, what: str,
                           interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    ws = Workers(tmp_path, ("--db", str(tmp_path / "shared.db")), tmp_path / "effects.log")
    try:
        yield ws
    finally:
        ws.stop_all()


@pytest.fixture
async def client(workers: Workers) -> AsyncIterator[Client]:
    store = SqliteProvider(workers.tmp / "shared.db")
    try:
        yield Client(store)
    finally:
        await store.close()


def ends(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in log if r["phase"] == "end"]


def step_key(r: dict[str, Any]) -> tuple[str, int]:
    return r["iid"], int(r["input"]["k"])


# ====================================================================== 1. crash recovery
@pytest.mark.slow
async def test_sigkilled_worker_is_taken_over_and_only_in_flight_work_reruns(
        workers: Workers, client: Client) -> None:
    instances, steps, concurrency = 20, 5, 4
    short_locks = ["--orch-lock", "1", "--act-lock", "2"]
    a = workers.spawn("a", *short_locks, "--act-concurrency", str(concurrency))
    await workers.wait_ready(a)
    ids = [f"chain-{n}" for n in range(instances)]
    for n, iid in enumerate(ids):
        await client.start_orchestration(iid, "chain", {"start": n, "steps": steps})

    total = instances * steps
    await wait_until(lambda: len(ends(procapp.read_log(workers.log))) >= total // 4, 15,
                     "a quarter of the activities to finish")
    workers.kill(a)
    at_kill = procapp.read_log(workers.log)
    done_at_kill = len(ends(at_kill))
    assert done_at_kill < total, "the worker finished everything before it was killed"

    b = workers.spawn("b", *short_locks)
    await workers.wait_ready(b)
    for n, iid in enumerate(ids):
        st = await client.wait_for_orchestration(iid, 20)
        assert st.state is OrchestrationState.COMPLETED, (iid, st.error, b.text())
        assert st.output == procapp.chain_output(n, steps), iid

    log = procapp.read_log(workers.log)
    assert {r["pid"] for r in log} == {a.pid, b.pid}
    finished = ends(log)
    pairs = Counter(step_key(r) for r in finished)
    # Every step of every instance ran to its end at least once.
    assert set(pairs) == {(iid, k) for iid in ids for k in range(steps)}
    # Steps the killed worker had started that the new worker ran again: exactly the
    # work it held at the kill, which its activity concurrency bounds.
    started_by_a = {step_key(r) for r in log if r["phase"] == "start" and r["pid"] == a.pid}
    started_by_b = {step_key(r) for r in log if r["phase"] == "start" and r["pid"] == b.pid}
    rerun = started_by_a & started_by_b
    assert len(rerun) <= concurrency, sorted(rerun)
    duplicates = sum(pairs.values()) - len(pairs)
    assert duplicates <= len(rerun) <= concurrency
    # A step finished twice only if the killed worker finished it but had not yet
    # acknowledged it; the new worker never repeats its own work.
    for key, n in pairs.items():
        if n > 1:
            assert n == 2 and key in rerun, key
            first, second = [r for r in finished if step_key(r) == key]
            assert (first["pid"], second["pid"]) == (a.pid, b.pid), key


# ====================================================================== 2. determinism
@pytest.mark.slow
async def test_recorded_time_and_guid_survive_a_killed_worker(
        workers: Workers, client: Client) -> None:
    a = workers.spawn("a")
    await workers.wait_ready(a)
    await client.start_orchestration("clock-1", "clock")

    async def published() -> bool:
        st = await client.get_orchestration_status("clock-1")
        return st.custom_status is not None

    await wait_until_async(published, 10, "the recorded values to be published")
    before = (await client.get_orchestration_status("clock-1")).custom_status
    history = await client.read_history("clock-1")
    workers.kill(a)

    b_started = time.time()
    b = workers.spawn("b")
    await workers.wait_ready(b)
    await client.raise_event("clock-1", "go", {"n": 1})
    st = await client.wait_for_orchestration("clock-1", 15)
    assert st.state is OrchestrationState.COMPLETED, (st.error, b.text())
    assert st.output == {"now": before["now"], "guid": before["guid"], "event": {"n": 1}}

    # ... and they are the values history recorded, taken before the new worker existed.
    now_ev = [e for e in history if e.kind == "UtcNowRecorded"]
    guid_ev = [e for e in history if e.kind == "GuidRecorded"]
    assert len(now_ev) == 1 and len(guid_ev) == 1
    recorded_now = datetime.fromisoformat(st.output["now"])
    assert int(recorded_now.timestamp() * 1_000_000) == now_ev[0].value_us  # type: ignore[attr-defined]
    assert st.output["guid"] == guid_ev[0].value  # type: ignore[attr-defined]
    assert recorded_now.timestamp() < b_started
    final = await client.read_history("clock-1")
    assert [e.kind for e in final].count("UtcNowRecorded") == 1
    assert [e.kind for e in final].count("GuidRecorded") == 1


# ====================================================================== 4. sharing work
@pytest.mark.slow
async def test_three_worker_processes_share_one_store(
        workers: Workers, client: Client) -> None:
    instances, steps = 60, 3
    procs = [workers.spawn(f"w{i}", "--act-concurrency", "4") for i in range(3)]
    await workers.wait_ready(*procs)
    ids = [f"shared-{n}" for n in range(instances)]
    for n, iid in enumerate(ids):
        await client.start_orchestration(iid, "chain",
                                         {"start": n, "steps": steps, "sleep": 0.02})
    for n, iid in enumerate(ids):
        st = await client.wait_for_orchestration(iid, 25)
        detail = "" if st.error is None else st.error.message
        assert "database is locked" not in detail
        assert st.state is OrchestrationState.COMPLETED, (iid, detail)
        assert st.output == procapp.chain_output(n, steps)

    log = procapp.read_log(workers.log)
    finished = ends(log)
    assert len({r["pid"] for r in finished}) >= 2
    assert {r["pid"] for r in finished} <= {p.pid for p in procs}
    # Nobody crashed, so every step ran exactly once.
    pairs = Counter(step_key(r) for r in finished)
    assert pairs == Counter({(iid, k): 1 for iid in ids for k in range(steps)})
    for p in procs:
        assert p.proc.poll() is None, p.text()
        assert "database is locked" not in p.text()
    # A clean stop: SIGTERM shuts each worker down and it exits 0.
    for p in procs:
        p.proc.send_signal(signal.SIGTERM)
    for p in procs:
        assert p.proc.wait(timeout=10) == 0, p.text()


# ====================================================================== in-process runtimes
class Held:
    """Activities that run until told, recording what they saw (one test at a time)."""

    started: dict[str, float] = {}
    told: dict[str, float] = {}
    runs: list[tuple[str, str]] = []
    release: asyncio.Event | None = None

    @classmethod
    def reset(cls) -> None:
        cls.started, cls.told, cls.runs, cls.release = {}, {}, [], None


async def long_sleep(ctx: ActivityContext, _: Any) -> str:
    """On worker "A" it sleeps for a minute (until shutdown cancels it); elsewhere it
    returns at once."""
    Held.runs.append((ctx.worker_id, ctx.instance_id))
    if ctx.worker_id == "A":
        Held.started[ctx.instance_id] = time.time()
        await asyncio.sleep(60)
    return f"done by {ctx.worker_id}"


async def stubborn(ctx: ActivityContext, _: Any) -> str:
    """Runs until told that its result is no longer wanted; records when it was told."""
    Held.started[ctx.instance_id] = time.time()
    try:
        await asyncio.wait_for(ctx.cancelled(), 20)
    except TimeoutError:
        return "never told"
    Held.told[ctx.instance_id] = time.time()
    assert ctx.is_cancelled()
    return "told"


async def hold(ctx: ActivityContext, _: Any) -> str:
    """Occupies an activity slot until the test releases it."""
    Held.started[ctx.instance_id] = time.time()
    assert Held.release is not None
    await Held.release.wait()
    return "released"


async def one_activity(ctx: OrchestrationContext, name: str) -> Any:
    return await ctx.schedule_activity(name)


async def race_timer(ctx: OrchestrationContext, delay: float) -> Any:
    idx, _ = await ctx.select2(ctx.schedule_activity("stubborn"), ctx.schedule_timer(delay))
    return idx


def local_registries() -> tuple[ActivityRegistry, OrchestrationRegistry]:
    acts = (ActivityRegistry.builder().register("long_sleep", long_sleep)
            .register("stubborn", stubborn).register("hold", hold).build())
    orchs = (OrchestrationRegistry.builder().register("one_activity", one_activity)
             .register("race_timer", race_timer).build())
    return acts, orchs


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Callable[[], SqliteProvider]]:
    """Separate provider objects on one file, as separate processes would have."""
    made: list[SqliteProvider] = []
    Held.reset()

    def make() -> SqliteProvider:
        store = SqliteProvider(tmp_path / "local.db")
        made.append(store)
        return store

    try:
        yield make
    finally:
        if Held.release is not None:
            Held.release.set()
        for s in made:
            await s.close()


# ====================================================================== 5. shutdown
async def test_shutdown_releases_a_running_activity_to_another_runtime(
        stores: Callable[[], SqliteProvider]) -> None:
    acts, orchs = local_registries()
    store_a, store_b = stores(), stores()
    client = Client(store_b)
    rt_a = await Runtime.start(store_a, acts, orchs, RuntimeOptions(worker_id="A"))
    rt_b: Runtime | None = None
    try:
        await client.start_orchestration("sd-1", "one_activity", "long_sleep")
        await wait_until(lambda: "sd-1" in Held.started, 10, "the activity to start on A")
        # B is up (and polling) before A lets go; the lock A holds lasts 30 s.
        rt_b = await Runtime.start(store_b, acts, orchs, RuntimeOptions(worker_id="B"))
        await asyncio.sleep(0.1)
        assert Held.runs == [("A", "sd-1")], "B took work that A held"
        await rt_a.shutdown(timeout=0.2)
        released = time.monotonic()
        st = await client.wait_for_orchestration("sd-1", 5)
        assert time.monotonic() - released < 5
        assert (st.state, st.output) == (OrchestrationState.COMPLETED, "done by B")
        assert Held.runs == [("A", "sd-1"), ("B", "sd-1")]
    finally:
        await rt_a.shutdown(timeout=0.2)
        if rt_b is not None:
            await rt_b.shutdown(timeout=1)


# ====================================================================== 6. cancellation
async def test_select_loser_activity_is_told_within_a_second(
        stores: Callable[[], SqliteProvider]) -> None:
    acts, orchs = local_registries()
    store = stores()
    client = Client(store)
    async with await Runtime.start(store, acts, orchs, RuntimeOptions()):
        await client.start_orchestration("sel-1", "race_timer", 0.2)
        st = await client.wait_for_orchestration("sel-1", 10)
        assert (st.state, st.output) == (OrchestrationState.COMPLETED, 1)
        await wait_until(lambda: "sel-1" in Held.told, 3, "the activity to be told")
    fire_at = next(e.fire_at for e in await client.read_history("sel-1")  # type: ignore[attr-defined]
                   if e.kind == "TimerCreated") / 1000
    assert Held.started["sel-1"] < fire_at
    assert fire_at - 0.05 <= Held.told["sel-1"] <= fire_at + 1.0


async def test_cancel_instance_tells_the_running_activity_within_a_second(
        stores: Callable[[], SqliteProvider]) -> None:
    acts, orchs = local_registries()
    store = stores()
    client = Client(store)
    async with await Runtime.start(store, acts, orchs, RuntimeOptions()):
        await client.start_orchestration("cx-1", "one_activity", "stubborn")
        await wait_until(lambda: "cx-1" in Held.started, 10, "the activity to start")
        cancelled_at = time.time()
        await client.cancel_instance("cx-1", "operator")
        st = await client.wait_for_orchestration("cx-1", 10)
        assert st.state is OrchestrationState.CANCELLED
        await wait_until(lambda: "cx-1" in Held.told, 3, "the activity to be told")
    assert cancelled_at <= Held.told["cx-1"] <= cancelled_at + 1.0


@pytest.mark.parametrize("how", ["select", "cancel_instance"])
async def test_cancellation_reaches_an_activity_on_another_runtime(
        stores: Callable[[], SqliteProvider], how: str) -> None:
    """O decides, W runs the activity and learns through the store (lock renewal)."""
    acts, orchs = local_registries()
    store_o, store_w = stores(), stores()
    client = Client(store_o)
    Held.release = asyncio.Event()
    rt_o = await Runtime.start(store_o, acts, orchs, RuntimeOptions(activity_concurrency=1))
    rt_w: Runtime | None = None
    try:
        await client.start_orchestration("holder", "one_activity", "hold")
        await wait_until(lambda: "holder" in Held.started, 10, "the slot holder to start")
        iid = f"split-{how}"
        if how == "select":
            await client.start_orchestration(iid, "race_timer", 1.2)
        else:
            await client.start_orchestration(iid, "one_activity", "stubborn")

        async def running() -> bool:
            st = await client.get_orchestration_status(iid)
            return st.state is OrchestrationState.RUNNING

        await wait_until_async(running, 10, "the first turn on O")
        rt_w = await Runtime.start(store_w, acts, orchs, RuntimeOptions(poll_interval=5.0))
        await wait_until(lambda: iid in Held.started, 5, "the activity to start on W")
        if how == "select":
            st = await client.wait_for_orchestration(iid, 10)
            assert (st.state, st.output) == (OrchestrationState.COMPLETED, 1)
            history = await client.read_history(iid)
            reference = next(e.fire_at for e in history  # type: ignore[attr-defined]
                             if e.kind == "TimerCreated") / 1000
            assert Held.started[iid] < reference
        else:
            reference = time.time()
            await client.cancel_instance(iid)
            st = await client.wait_for_orchestration(iid, 10)
            assert st.state is OrchestrationState.CANCELLED
        await wait_until(lambda: iid in Held.told, 3, "the activity on W to be told")
        assert reference - 0.05 <= Held.told[iid] <= reference + 1.0
    finally:
        Held.release.set()
        await rt_o.shutdown(timeout=1)
        if rt_w is not None:
            await rt_w.shutdown(timeout=1)

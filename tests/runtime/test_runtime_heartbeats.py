"""Worker heartbeats (API.md section 12) and what a runtime leaves to the other live
workers, in one process: the row a runtime writes, keeps fresh and marks stopped, rows
that age out, ``alive``, a failing heartbeat, and work this runtime lacks the code for
(versions, orchestrations, activities) going to the live runtime that has it without
using up an attempt. Multi-process runs of the same are in test_rolling_deploy.py."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

import duroxy
from duroxy import (
    ActivityContext,
    ActivityRegistry,
    Client,
    OrchestrationContext,
    OrchestrationRegistry,
    OrchestrationState,
    ProviderError,
    Runtime,
    RuntimeOptions,
    WorkerInfo,
)
from duroxy.providers.base import Provider, WorkerRecord
from duroxy.providers.memory import InMemoryProvider
from duroxy.providers.sqlite import SqliteProvider
from duroxy.runtime.heartbeat import Heartbeat

FAST = 0.05  # a heartbeat interval that keeps the tests short


async def eventually(check: Callable[[], Awaitable[bool]], what: str,
                     timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


gate: asyncio.Event | None = None


async def greet(ctx: ActivityContext, name: str) -> str:
    return f"hello {name}"


async def held(ctx: ActivityContext, _: Any) -> str:
    assert gate is not None
    await gate.wait()
    return "released"


async def flow_v1(ctx: OrchestrationContext, x: int) -> str:
    return f"v1:{await ctx.schedule_activity('greet', str(x))}"


async def flow_v2(ctx: OrchestrationContext, x: int) -> str:
    return f"v2:{await ctx.schedule_activity('greet', str(x))}"


async def waits_for_held(ctx: OrchestrationContext, _: Any) -> str:
    return str(await ctx.schedule_activity("held"))


ACTS = ActivityRegistry.builder().register("greet", greet).register("held", held).build()
NO_ACTS = ActivityRegistry.builder().build()
V1 = OrchestrationRegistry.builder().register("flow", flow_v1).build()
V1_V2 = (OrchestrationRegistry.builder().register("flow", flow_v1)
         .register_versioned("flow", "2.0.0", flow_v2).build())
OTHER = OrchestrationRegistry.builder().register("waits", waits_for_held).build()
# Any attempt used up fails the work: a count of zero used attempts shows as COMPLETED.
STRICT = RuntimeOptions(max_attempts=1, not_registered_backoff=0.01, heartbeat_interval=FAST)


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Provider]:
    p: Provider = InMemoryProvider() if request.param == "memory" else SqliteProvider.in_memory()
    yield p
    await p.close()


def row(worker_id: str, **kw: Any) -> WorkerRecord:
    """A heartbeat row of a worker that is not a runtime of this test."""
    fields: dict[str, Any] = {
        "worker_id": worker_id, "host": "elsewhere", "pid": 1, "duroxy_version": "0.1.0",
        "started_at": time.time() - 5, "last_seen_at": time.time(),
        "heartbeat_interval": 60.0, "orchestration_concurrency": 32,
        "activity_concurrency": 32, "tag_filter": "DEFAULT_ONLY"}
    fields.update(kw)
    return WorkerRecord(**fields)


# ====================================================================== the row
async def test_a_runtime_writes_its_row_when_it_starts(store: Provider) -> None:
    client = Client(store)
    opts = RuntimeOptions(worker_id="w-1", orchestration_concurrency=3,
                          activity_concurrency=5, heartbeat_interval=30)
    before = datetime.now(UTC)
    async with await Runtime.start(store, ACTS, V1_V2, opts) as rt:
        [w] = await client.list_workers()
        assert isinstance(w, WorkerInfo) and rt.worker_id == "w-1"
        assert dataclasses.asdict(w) == {
            "worker_id": "w-1", "worker_node_id": None, "host": socket.gethostname(),
            "pid": os.getpid(), "duroxy_version": duroxy.__version__,
            "started_at": w.started_at, "last_seen_at": w.last_seen_at, "stopped_at": None,
            "orchestration_concurrency": 3, "activity_concurrency": 5,
            "tag_filter": "DEFAULT_ONLY", "sessions_owned": 0, "active_activities": 0,
            "orchestrations": ("flow@1.0.0", "flow@2.0.0"), "activities": ("greet", "held"),
            "alive": True}
        assert w.started_at.tzinfo is not None and w.last_seen_at.tzinfo is not None
        # the runtime's own clock: started just now, not later than seen
        assert before.timestamp() - 1 <= w.started_at.timestamp() <= \
            w.last_seen_at.timestamp() <= time.time()


async def test_heartbeats_keep_the_row_fresh_and_count_running_activities(
        store: Provider) -> None:
    global gate
    gate = asyncio.Event()
    client = Client(store)
    async with await Runtime.start(store, ACTS, OTHER, RuntimeOptions(
            worker_id="beats", heartbeat_interval=FAST)):
        [first] = await client.list_workers()

        async def seen_again() -> bool:
            [w] = await client.list_workers()
            return w.last_seen_at > first.last_seen_at

        await eventually(seen_again, "a later heartbeat")
        await client.start_orchestration("h1", "waits")

        async def running(n: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                [w] = await client.list_workers()
                return w.active_activities == n
            return check

        await eventually(await running(1), "the running activity in the heartbeat")
        gate.set()
        assert (await client.wait_for_orchestration("h1", 10)).output == "released"
        await eventually(await running(0), "no running activity in the heartbeat")
        [last] = await client.list_workers()
        assert last.started_at == first.started_at and last.alive


async def test_shutdown_marks_the_row_stopped(store: Provider) -> None:
    client = Client(store)
    rt = await Runtime.start(store, ACTS, V1, RuntimeOptions(worker_id="stops"))
    [running] = await client.list_workers()
    await rt.shutdown()
    assert await client.list_workers() == []
    [stopped] = await client.list_workers(include_stopped=True)
    assert stopped.worker_id == "stops" and stopped.stopped_at is not None
    assert not stopped.alive and stopped.active_activities == 0
    assert stopped.started_at == running.started_at
    assert stopped.stopped_at >= running.last_seen_at


async def test_rows_of_workers_not_seen_for_a_day_are_removed_by_a_heartbeat(
        store: Provider) -> None:
    now = time.time()
    await store.record_heartbeat(row("ancient", last_seen_at=now - 25 * 3600))
    await store.record_heartbeat(row("ancient-stopped", last_seen_at=now - 25 * 3600,
                                     stopped_at=now - 25 * 3600))
    await store.record_heartbeat(row("yesterday", last_seen_at=now - 23 * 3600))
    client = Client(store)
    assert len(await client.list_workers(include_stopped=True)) == 3
    async with await Runtime.start(store, ACTS, V1, RuntimeOptions(worker_id="now")):
        listed = await client.list_workers(include_stopped=True)
    assert sorted(w.worker_id for w in listed) == ["now", "yesterday"]


async def test_alive_means_not_stopped_and_seen_within_three_intervals(
        store: Provider) -> None:
    now = time.time()
    await store.record_heartbeat(row("fresh", heartbeat_interval=2.0, last_seen_at=now - 5))
    await store.record_heartbeat(row("silent", heartbeat_interval=2.0, last_seen_at=now - 7))
    await store.record_heartbeat(row("stopped", last_seen_at=now, stopped_at=now))
    alive = {w.worker_id: w.alive for w in await Client(store).list_workers(
        include_stopped=True)}
    assert alive == {"fresh": True, "silent": False, "stopped": False}
    assert [w.worker_id for w in await Client(store).list_workers()] == ["fresh", "silent"]


async def test_runtimes_of_one_process_get_their_own_default_worker_ids(
        store: Provider) -> None:
    base = f"{socket.gethostname()}:{os.getpid()}"
    a = await Runtime.start(store, ACTS, V1)
    b = await Runtime.start(store, ACTS, V1)
    try:
        assert a.worker_id != b.worker_id
        assert a.worker_id.startswith(base) and b.worker_id.startswith(base)
        ids = {w.worker_id for w in await Client(store).list_workers()}
        assert ids == {a.worker_id, b.worker_id}
    finally:
        await b.shutdown()
        await a.shutdown()


async def test_a_failing_heartbeat_is_logged_once_and_the_runtime_carries_on(
        caplog: pytest.LogCaptureFixture) -> None:
    class Flaky(InMemoryProvider):
        failing = True
        failures = 0

        async def record_heartbeat(self, worker: WorkerRecord, *,
                                   forget_before: float | None = None) -> None:
            if self.failing:
                self.failures += 1
                raise ProviderError("the store is away", retryable=True)
            await super().record_heartbeat(worker, forget_before=forget_before)

    caplog.set_level(logging.DEBUG, logger="duroxy.runtime")
    store = Flaky()
    client = Client(store)
    async with await Runtime.start(store, ACTS, V1, RuntimeOptions(
            worker_id="flaky", heartbeat_interval=0.01)):
        await client.start_orchestration("f1", "flow", 1)
        assert (await client.wait_for_orchestration("f1", 10)).output == "v1:hello 1"

        async def failed_often() -> bool:
            return store.failures >= 5

        await eventually(failed_often, "several failed heartbeats")
        assert await client.list_workers() == []
        store.failing = False

        async def listed() -> bool:
            return [w.worker_id for w in await client.list_workers()] == ["flaky"]

        await eventually(listed, "a heartbeat once the store is back")
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and "heartbeat" in r.getMessage()]
    assert len(warnings) == 1 and "the store is away" in warnings[0]
    assert any("written again" in r.getMessage() for r in caplog.records)


async def test_a_shared_worker_id_is_reported(store: Provider,
                                              caplog: pytest.LogCaptureFixture) -> None:
    opts = RuntimeOptions(worker_id="twin", heartbeat_interval=FAST)
    async with await Runtime.start(store, ACTS, V1, opts), \
            await Runtime.start(store, ACTS, V1, opts):
        async def warned() -> bool:
            return "writes its heartbeat as worker 'twin' too" in caplog.text

        await eventually(warned, "the warning about a shared worker id")


# ====================================================================== what others run
async def test_the_view_of_the_others_leaves_to_them_what_only_they_run(
        store: Provider) -> None:
    now = time.time()
    await store.record_heartbeat(row(
        "newer", orchestrations=("flow@1.0.0", "flow@2.0.0", "other@1.0.0", "a@b@1.0.0"),
        activities=("greet", "extra")))
    await store.record_heartbeat(row("dead", orchestrations=("ghost@1.0.0",),
                                     heartbeat_interval=1.0, last_seen_at=now - 10))
    await store.record_heartbeat(row("stopped", orchestrations=("gone@1.0.0",),
                                     activities=("gone",), stopped_at=now))
    hb = Heartbeat(store, "me", RuntimeOptions(), ACTS, V1, lambda: 0)
    assert hb.exclude is None
    await hb.refresh()
    assert hb.exclude is not None
    assert hb.exclude.orchestrations == {"other", "a@b"}
    assert hb.exclude.orchestration_versions == {("flow", "2.0.0")}
    assert hb.exclude.activities == {"extra"}
    assert hb.runs_orchestration("flow", "2.0.0") and hb.runs_orchestration("other", None)
    assert not hb.runs_orchestration("ghost", None) and not hb.runs_orchestration("gone", None)
    assert not hb.runs_orchestration("flow", "3.0.0")
    assert hb.runs_activity("extra") and not hb.runs_activity("gone")


async def test_work_met_without_its_code_rereads_the_workers_at_most_once_a_second(
        ) -> None:
    class Counting(InMemoryProvider):
        reads = 0

        async def list_workers(self, *, include_stopped: bool = False) -> list[WorkerRecord]:
            self.reads += 1
            await asyncio.sleep(0.01)
            return await super().list_workers(include_stopped=include_stopped)

    store = Counting()
    hb = Heartbeat(store, "me", RuntimeOptions(), ACTS, V1, lambda: 0)
    await asyncio.gather(*(hb.refresh_soon() for _ in range(5)))  # one reread, shared
    assert store.reads == 1
    for _ in range(5):
        await hb.refresh_soon()
    assert store.reads == 1
    await hb.refresh()  # the heartbeat's own reread is not limited
    assert store.reads == 2


async def test_hand_backs_stop_after_a_streak_of_three_heartbeat_intervals() -> None:
    hb = Heartbeat(InMemoryProvider(), "me", RuntimeOptions(heartbeat_interval=1.0), ACTS,
                   V1, lambda: 0)
    assert hb.hand_back("k", now=100.0)
    assert hb.hand_back("k", now=102.0)
    assert hb.hand_back("k", now=103.0)  # three seconds of hand-backs
    assert not hb.hand_back("k", now=103.5)  # longer: its attempts count from now on
    assert hb.hand_back("other", now=103.5)
    assert hb.hand_back("k", now=107.0)  # after a pause as long as the horizon: anew


async def test_a_version_only_another_live_runtime_has_is_run_there(store: Provider) -> None:
    client = Client(store)
    async with await Runtime.start(store, ACTS, V1_V2, dataclasses.replace(
            STRICT, worker_id="new")), \
            await Runtime.start(store, ACTS, V1, dataclasses.replace(STRICT, worker_id="old")):
        ids = []
        for n in range(20):
            for version in ("1.0.0", "2.0.0"):
                iid = f"{version}-{n}"
                ids.append((iid, version, n))
                await client.start_orchestration_versioned(iid, "flow", version, n)
        for iid, version, n in ids:
            st = await client.wait_for_orchestration(iid, 10)
            assert st.state is OrchestrationState.COMPLETED, (iid, st.error)
            assert st.output == f"v{version[0]}:hello {n}"


async def test_work_met_before_its_worker_was_known_goes_back_without_an_attempt(
        store: Provider) -> None:
    """The runtime that lacks the code learns of the live worker that has it only when
    it meets the work (its own heartbeat is far off): it hands the work back, unused."""
    client = Client(store)
    lacking = dataclasses.replace(STRICT, heartbeat_interval=3600, worker_id="old")
    async with await Runtime.start(store, NO_ACTS, OTHER, lacking) as old:
        # A worker that has "flow" and "greet" appears; "old" has not read its row.
        await store.record_heartbeat(row("newer", orchestrations=("flow@1.0.0",),
                                         activities=("greet",)))
        assert old._heartbeat.exclude is None
        await client.start_orchestration("met", "flow", 7)

        async def handed_back() -> bool:
            ex = old._heartbeat.exclude
            return ex is not None and "flow" in ex.orchestrations

        await eventually(handed_back, "the old runtime to meet the work and hand it back")
        assert (await client.get_orchestration_status("met")).state is \
            OrchestrationState.PENDING
        async with await Runtime.start(store, ACTS, V1, dataclasses.replace(
                STRICT, worker_id="new")):
            st = await client.wait_for_orchestration("met", 10)
        assert st.state is OrchestrationState.COMPLETED, st.error
        assert st.output == "v1:hello 7"


async def test_an_activity_met_before_its_worker_was_known_goes_back_without_an_attempt(
        store: Provider) -> None:
    client = Client(store)
    lacking = dataclasses.replace(STRICT, heartbeat_interval=3600, worker_id="old")
    # "old" runs the orchestration's turns but has no activity at all.
    async with await Runtime.start(store, NO_ACTS, V1, lacking) as old:
        await store.record_heartbeat(row("newer", activities=("greet",)))
        await client.start_orchestration("act", "flow", 8)

        async def handed_back() -> bool:
            ex = old._heartbeat.exclude
            return ex is not None and "greet" in ex.activities

        await eventually(handed_back, "the old runtime to meet the activity and hand it back")
        assert (await client.get_orchestration_status("act")).state is \
            OrchestrationState.RUNNING
        # An activity-only worker in effect: the orchestration "old" runs is left to it.
        async with await Runtime.start(store, ACTS, OTHER, dataclasses.replace(
                STRICT, worker_id="new")):
            st = await client.wait_for_orchestration("act", 10)
        assert st.state is OrchestrationState.COMPLETED, st.error
        assert st.output == "v1:hello 8"
        history = await client.read_history("act")
        assert [e.kind for e in history] == [
            "OrchestrationStarted", "ActivityScheduled", "ActivityCompleted",
            "OrchestrationCompleted"]


async def test_work_nobody_live_registers_still_fails_not_registered(
        store: Provider) -> None:
    client = Client(store)
    await store.record_heartbeat(row("stopped", orchestrations=("flow@1.0.0",),
                                     stopped_at=time.time()))
    async with await Runtime.start(store, ACTS, OTHER, dataclasses.replace(
            STRICT, worker_id="alone")):
        await client.start_orchestration("nobody", "flow", 1)
        st = await client.wait_for_orchestration("nobody", 10)
    assert st.state is OrchestrationState.FAILED
    assert st.error is not None and st.error.kind == "not_registered"

"""Poison handling: work that keeps crashing its worker ends FAILED with a poison error,
and work nobody here can run fails with NotRegistered past the threshold."""

from __future__ import annotations

import asyncio
from typing import Any

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
from duroxy.providers.memory import InMemoryProvider

CRASH_LOCK = 0.05  # a "crashed" worker holds its lock this long


async def work(ctx: ActivityContext, x: int) -> int:
    return x + 1


async def flow(ctx: OrchestrationContext, x: int) -> int:
    return int(await ctx.schedule_activity("work", x))


def registries(with_activity: bool = True) -> tuple[ActivityRegistry, OrchestrationRegistry]:
    acts = ActivityRegistry.builder()
    if with_activity:
        acts.register("work", work)
    return acts.build(), OrchestrationRegistry.builder().register("flow", flow).build()


async def crash_fetches(fetch: Any, times: int) -> None:
    """Take the work ``times`` and drop it, as workers dying mid-turn would."""
    for _ in range(times):
        items = await fetch(CRASH_LOCK, 10)
        assert len(items) == 1
        await asyncio.sleep(CRASH_LOCK * 1.5)


async def test_orchestration_turn_that_keeps_crashing_is_poison() -> None:
    store = InMemoryProvider()
    client = Client(store)
    await client.start_orchestration("p1", "flow", 1)
    await crash_fetches(store.fetch_orchestration_items, 3)
    acts, orchs = registries()
    async with await Runtime.start(store, acts, orchs, RuntimeOptions(max_attempts=3)):
        st = await client.wait_for_orchestration("p1", 5)
    assert st.state is OrchestrationState.FAILED
    assert st.error is not None and st.error.kind == "poison"
    assert "after 3 attempts" in st.error.message
    kinds = [e.kind for e in await client.read_history("p1")]
    assert kinds == ["OrchestrationStarted", "OrchestrationFailed"]


async def test_activity_that_keeps_crashing_fails_instance_as_poison() -> None:
    store = InMemoryProvider()
    client = Client(store)
    gate = asyncio.Event()

    async def hang(ctx: ActivityContext, x: int) -> int:
        await gate.wait()  # never set: the worker "dies" with the activity in flight
        return x

    hanging = ActivityRegistry.builder().register("work", hang).build()
    _, orchs = registries()
    rt = await Runtime.start(store, hanging, orchs)
    await client.start_orchestration("p2", "flow", 1)
    for _ in range(500):
        if rt._workers.active:  # the activity is in flight
            break
        await asyncio.sleep(0.01)
    await rt.shutdown(timeout=0.05)  # releases the activity: its first attempt
    await crash_fetches(store.fetch_activity_items, 2)
    acts, _ = registries()
    async with await Runtime.start(store, acts, orchs, RuntimeOptions(max_attempts=3)):
        st = await client.wait_for_orchestration("p2", 5)
    assert st.state is OrchestrationState.FAILED
    assert st.error is not None and st.error.kind == "poison"
    assert "'work' did not complete after 3 attempts" in st.error.message
    failed = [e for e in await client.read_history("p2") if e.kind == "ActivityFailed"]
    assert len(failed) == 1 and failed[0].error_kind == "poison"  # type: ignore[attr-defined]


async def test_activity_not_registered_anywhere_fails_with_not_registered() -> None:
    store = InMemoryProvider()
    client = Client(store)
    acts, orchs = registries(with_activity=False)
    opts = RuntimeOptions(max_attempts=3, not_registered_backoff=0.02)
    async with await Runtime.start(store, acts, orchs, opts):
        await client.start_orchestration("p3", "flow", 1)
        st = await client.wait_for_orchestration("p3", 5)
    assert st.state is OrchestrationState.FAILED
    assert st.error is not None and st.error.kind == "not_registered"
    assert "'work' is not registered" in st.error.message


async def test_version_not_registered_backs_off_then_fails() -> None:
    store = InMemoryProvider()
    client = Client(store)
    acts, orchs = registries()
    opts = RuntimeOptions(max_attempts=3, not_registered_backoff=0.02)
    async with await Runtime.start(store, acts, orchs, opts):
        await client.start_orchestration_versioned("p4", "flow", "2.0.0", 1)
        st = await client.wait_for_orchestration("p4", 5)
    assert st.state is OrchestrationState.FAILED
    assert st.error is not None and st.error.kind == "not_registered"
    assert "'2.0.0'" in st.error.message and "1.0.0" in st.error.message

"""One clock, passed in: a store holds its clock (``Provider.clock``), which its runtime
and client read too; a virtual clock moves only when told to, and whoever waits for a
time on it hears of its jumps."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from duroxy import (
    ActivityRegistry,
    Client,
    OrchestrationContext,
    OrchestrationRegistry,
    Runtime,
)
from duroxy._clock import SYSTEM_CLOCK, FunctionClock, VirtualClock, as_clock
from duroxy.history import OrchestrationStarted
from duroxy.providers.base import Provider
from duroxy.providers.memory import InMemoryProvider
from duroxy.providers.pending import PendingWork
from duroxy.providers.sqlite import SqliteProvider
from duroxy.testing.provider_suite.support import (
    HOLD,
    commit,
    create,
    fetch_one,
    raised,
    started,
)

T0 = 1_800_000_000.0


def test_a_virtual_clock_moves_only_forward_and_tells_its_listeners() -> None:
    clock = VirtualClock(T0 + 0.0000004)
    assert clock.time_us() == round(T0 * 1_000_000) and clock.jumps
    heard: list[float] = []
    stop = clock.on_jump(lambda: heard.append(clock.time()))
    assert clock.advance_to(T0 + 10) and clock.time() == T0 + 10
    assert not clock.advance_to(T0 + 5) and clock.time() == T0 + 10  # never back
    stop()
    clock.advance_to(T0 + 20)
    assert heard == [T0 + 10]


def test_the_real_clock_is_every_stores_default() -> None:
    assert not SYSTEM_CLOCK.jumps
    assert abs(SYSTEM_CLOCK.time() - time.time()) < 1
    assert abs(SYSTEM_CLOCK.time_us() / 1e6 - time.time()) < 1
    assert SYSTEM_CLOCK.on_jump(lambda: None)() is None
    assert Provider.clock is SYSTEM_CLOCK
    assert InMemoryProvider().clock is SYSTEM_CLOCK
    assert SqliteProvider.in_memory().clock is SYSTEM_CLOCK
    fake = as_clock(lambda: 42.0)
    assert isinstance(fake, FunctionClock) and fake.time() == 42.0
    assert as_clock(None) is SYSTEM_CLOCK
    with pytest.raises(TypeError, match="clock"):
        as_clock(3)  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Provider]:
    clock = VirtualClock(T0)
    provider: Provider = InMemoryProvider(clock) if request.param == "memory" \
        else SqliteProvider.in_memory(clock=clock)
    yield provider
    await provider.close()


def clock_of(provider: Provider) -> VirtualClock:
    assert isinstance(provider.clock, VirtualClock)
    return provider.clock


async def test_a_store_stamps_records_and_shows_messages_by_its_clock(
        store: Provider) -> None:
    clock = clock_of(store)
    await create(store, "i-1")
    rec = await store.get_instance("i-1")
    assert rec is not None and rec.created_at == T0
    item = await fetch_one(store, HOLD)
    later = raised("i-1", visible_at=T0 + 3600)
    clock.advance_to(T0 + 5)
    await store.ack_orchestration_item(item.lock_token, commit(started(), messages=[later]))
    rec = await store.get_instance("i-1")
    assert rec is not None and rec.updated_at == T0 + 5
    assert await store.fetch_orchestration_items(HOLD, limit=10) == []
    assert isinstance(store, PendingWork)
    report = await store.pending_work()
    assert report.held == 0 and report.due_at == T0 + 3600
    clock.advance_to(T0 + 3600)
    assert [i.instance_id for i in await store.fetch_orchestration_items(HOLD, 10)] == ["i-1"]


async def test_a_parked_fetch_wakes_when_the_clock_jumps() -> None:
    clock = VirtualClock(T0)
    store = SqliteProvider.in_memory(clock=clock)
    try:
        await create(store, "i-1")
        item = await fetch_one(store, HOLD)
        await store.ack_orchestration_item(item.lock_token, commit(
            started(), messages=[raised("i-1", visible_at=T0 + 86400)]))
        await create(store, "i-2")
        item = await fetch_one(store, HOLD)
        await store.abandon_orchestration_item(item.lock_token, delay=7200)  # cool-down
        for due, expected in ((T0 + 7200, "i-2"), (T0 + 86400, "i-1")):
            poll = asyncio.ensure_future(store.poll_orchestration_items(HOLD, 10, wait=30))
            await asyncio.sleep(0.05)
            assert not poll.done()  # parked: a day is not a real day
            clock.advance_to(due)
            items = await asyncio.wait_for(poll, 10)
            assert [i.instance_id for i in items] == [expected]
            for i in items:
                await store.abandon_orchestration_item(i.lock_token, delay=10**6)
    finally:
        await store.close()


async def slept(ctx: OrchestrationContext, _: Any) -> float:
    before = await ctx.utcnow()
    await asyncio.sleep(3600)
    return ((await ctx.utcnow()) - before).total_seconds()


async def test_runtime_and_client_read_the_stores_clock(store: Provider) -> None:
    clock = clock_of(store)
    client = Client(store)
    orchestrations = OrchestrationRegistry.builder().register("slept", slept).build()
    async with await Runtime.start(store, ActivityRegistry.builder().build(),
                                   orchestrations):
        await client.start_orchestration("s-1", "slept")
        while len(await client.read_history("s-1")) < 3:
            await asyncio.sleep(0.005)
        history = await client.read_history("s-1")
        assert isinstance(history[0], OrchestrationStarted)
        assert history[0].ts == round(T0 * 1000)  # the client's stamp
        assert [e.ts for e in history] == [round(T0 * 1000)] * 3
        await asyncio.sleep(0.05)
        assert not (await client.get_orchestration_status("s-1")).is_terminal
        clock.advance_to(T0 + 3600)  # the runtime hears of the jump: no real hour
        status = await client.wait_for_orchestration("s-1", timeout=10)
        assert status.output == 3600.0
        assert (await client.get_instance_info("s-1")).updated_at.timestamp() == T0 + 3600
        # purging by age counts on the store's clock
        assert await client.purge_instances(older_than=60) == 0
        clock.advance_to(T0 + 3600 + 61)
        assert await client.purge_instances(older_than=60) == 1

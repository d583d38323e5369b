"""Per-instance key-value state end to end (API.md section 8) on every store: what
clients read and when they are woken, survival across continue-as-new, removal with the
instance, and a consumer that polls a producer's KV with no activity worker at all."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

import duroxy._waiting
from duroxy import (
    ActivityRegistry,
    Client,
    InstanceNotFound,
    OrchestrationContext,
    OrchestrationRegistry,
    OrchestrationState,
    Runtime,
)
from duroxy.history import KeyValueReadCompleted, KeyValueReadScheduled
from duroxy.providers.base import Provider
from storekit import store

__all__ = ["store"]


@dataclass
class Progress:
    done: int
    note: str


async def producer(ctx: OrchestrationContext, steps: int) -> str:
    for i in range(1, steps + 1):
        await ctx.schedule_wait("tick")
        ctx.set_kv_value("progress", i)
    return "produced"


async def consumer(ctx: OrchestrationContext, target: int) -> list[int]:
    """Polls the producer's KV until it reaches ``target``: before the producer exists,
    and before it set anything, the reads give the default."""
    seen: list[int] = []
    while True:
        value = await ctx.get_kv_value_from_instance("producer-1", "progress", 0)
        if not seen or seen[-1] != value:
            seen.append(value)
        if value >= target:
            return seen
        await ctx.schedule_timer(0.01)


async def rounds(ctx: OrchestrationContext, n: int) -> dict[str, Any]:
    """Keeps a running total in KV across continue-as-new, and its own round in input."""
    total = ctx.get_kv_value("total", 0)
    ctx.set_kv_value("total", total + n)
    ctx.set_kv_value(f"round-{n}", Progress(n, "x" * n))
    if n == 1:
        ctx.clear_kv_value("round-0")
    if n < 3:
        ctx.continue_as_new(n + 1)
    await ctx.schedule_wait("finish")
    return ctx.get_kv_all_values()


async def gated(ctx: OrchestrationContext, _: Any) -> None:
    await ctx.schedule_wait("set")
    ctx.set_kv_value("nothing", None)
    await ctx.schedule_wait("end")


def registries() -> tuple[ActivityRegistry, OrchestrationRegistry]:
    orchs = (OrchestrationRegistry.builder().register("producer", producer)
             .register("consumer", consumer).register("rounds", rounds)
             .register("gated", gated).build())
    return ActivityRegistry.builder().build(), orchs  # no activity at all


async def test_a_consumer_polls_a_producers_kv_without_an_activity_worker(
        store: Provider) -> None:
    client = Client(store)
    async with await Runtime.start(store, *registries()):
        await client.start_orchestration("consumer-1", "consumer", 3)
        # the consumer reads the default while the producer does not exist yet

        async def has_read() -> bool:
            return any(isinstance(e, KeyValueReadCompleted)
                       for e in await client.read_history("consumer-1"))

        while not await has_read():
            await asyncio.sleep(0.01)
        await client.start_orchestration("producer-1", "producer", 3)
        for _ in range(3):
            await client.raise_event("producer-1", "tick")
            await asyncio.sleep(0.02)
        status = await client.wait_for_orchestration("consumer-1", 30)
        assert (await client.wait_for_orchestration("producer-1", 30)).output == "produced"
    assert status.state is OrchestrationState.COMPLETED, status.error
    seen = status.output
    assert seen[0] == 0 and seen[-1] == 3 and seen == sorted(seen)
    # every read is recorded once: a completion per schedule, naming it
    history = await client.read_history("consumer-1")
    reads = [e for e in history if isinstance(e, KeyValueReadScheduled)]
    answers = [e for e in history if isinstance(e, KeyValueReadCompleted)]
    assert [a.source_event_id for a in answers] == [r.event_id for r in reads]
    assert {(r.instance_id, r.key) for r in reads} == {("producer-1", "progress")}
    assert not answers[0].found and answers[-1].found and answers[-1].value == "3"


async def test_kv_survives_continue_as_new_and_clients_read_the_committed_state(
        store: Provider) -> None:
    client = Client(store)
    with pytest.raises(InstanceNotFound):
        await client.get_kv_value("rounds-1", "total")
    with pytest.raises(InstanceNotFound):
        await client.get_kv_all_values("rounds-1")
    async with await Runtime.start(store, *registries()):
        await client.start_orchestration("rounds-1", "rounds", 0)
        assert await client.wait_for_kv_value("rounds-1", "round-3", 30) == {
            "done": 3, "note": "xxx"}
        assert await client.get_kv_value("rounds-1", "total") == 6
        assert await client.get_kv_value("rounds-1", "round-2", output_type=Progress) == \
            Progress(2, "xx")
        assert await client.get_kv_value("rounds-1", "round-0", "gone") == "gone"
        values = await client.get_kv_all_values("rounds-1")
        assert list(values) == ["round-1", "round-2", "round-3", "total"]
        await client.raise_event("rounds-1", "finish")
        status = await client.wait_for_orchestration("rounds-1", 30)
    assert status.output == values
    # readable after the end; removed with the instance
    assert await client.get_kv_all_values("rounds-1") == values
    stats = await client.get_orchestration_stats("rounds-1")
    assert stats is not None and stats.kv_user_key_count == 4
    assert await client.delete_instance("rounds-1") == 1
    with pytest.raises(InstanceNotFound):
        await client.get_kv_all_values("rounds-1")


async def test_wait_for_kv_value_is_woken_by_the_commit_that_sets_the_key(
        store: Provider, monkeypatch: pytest.MonkeyPatch) -> None:
    # With the safety-net poll at a minute, only the commit's news can end the wait soon.
    monkeypatch.setattr(duroxy._waiting, "POLL_S", 60.0)
    client = Client(store)
    async with await Runtime.start(store, *registries()):
        await client.start_orchestration("gated-1", "gated")
        waiter = asyncio.create_task(client.wait_for_kv_value("gated-1", "nothing", 50))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        assert await client.get_kv_value("gated-1", "nothing", "absent") == "absent"
        await client.raise_event("gated-1", "set")
        async with asyncio.timeout(20):
            assert await waiter is None  # a key set to None exists
        assert await client.get_kv_value("gated-1", "nothing", "absent") is None
        with pytest.raises(TimeoutError, match="'never'"):
            await client.wait_for_kv_value("gated-1", "never", 0.05)
        with pytest.raises(InstanceNotFound):
            await client.wait_for_kv_value("nobody", "k", 1)
        await client.cancel_instance("gated-1")
        await client.wait_for_orchestration("gated-1", 30)

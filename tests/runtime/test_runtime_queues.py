"""Event queues end to end (API.md section 7) on every store: a chat that continues as
new fifty times while messages arrive at random moments, thousands of unread messages
across continue-as-new held to the cap, and the client's side of queues."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import pytest

from duroxy import (
    MAX_CARRY_FORWARD_EVENTS,
    ActivityContext,
    ActivityRegistry,
    Client,
    InstanceNotFound,
    OrchestrationContext,
    OrchestrationRegistry,
    OrchestrationState,
    PayloadError,
    Runtime,
)
from duroxy.history import ActivityScheduled, QueueSubscribed
from duroxy.providers.base import Provider
from storekit import store

__all__ = ["store"]

BYE = -1


async def reply(ctx: ActivityContext, msg: dict[str, Any]) -> str:
    return f"re:{msg['n']}"


async def chat(ctx: OrchestrationContext, state: dict[str, Any]) -> dict[str, Any]:
    msg = await ctx.dequeue_event("inbox")
    if msg["n"] == BYE:
        return state
    answer = await ctx.schedule_activity("reply", msg)
    count = state["count"] + 1
    ctx.set_custom_status({"last": answer, "count": count})
    ctx.continue_as_new({"count": count, "handled": [*state["handled"], msg["n"]]})


async def hoard(ctx: OrchestrationContext, n: int) -> dict[str, list[Any]]:
    """Execution 1 takes nothing but ``go``; execution 2 takes what was carried."""
    if n == 0:
        await ctx.dequeue_event("go")
        ctx.continue_as_new(1)
    queued = [await ctx.dequeue_event("q") for _ in range(MAX_CARRY_FORWARD_EVENTS // 2)]
    raised = [await ctx.schedule_wait("e") for _ in range(MAX_CARRY_FORWARD_EVENTS // 2)]
    # anything more carried would be kept already, and would win at once
    more_q = await ctx.select2(ctx.dequeue_event("q"), ctx.schedule_timer(0.05))
    more_e = await ctx.select2(ctx.schedule_wait("e"), ctx.schedule_timer(0.05))
    return {"q": queued, "e": raised, "more": [more_q[0], more_e[0]]}


async def echo_first(ctx: OrchestrationContext, _: Any) -> Any:
    return await ctx.dequeue_event("q")


def registries() -> tuple[ActivityRegistry, OrchestrationRegistry]:
    acts = ActivityRegistry.builder().register("reply", reply).build()
    orchs = (OrchestrationRegistry.builder().register("chat", chat).register("hoard", hoard)
             .register("echo_first", echo_first).build())
    return acts, orchs


async def test_a_chat_continues_as_new_fifty_times_and_handles_every_message_once_in_order(
        store: Provider) -> None:
    client = Client(store)
    rng = random.Random(7)
    messages = 50
    async with await Runtime.start(store, *registries()):
        await client.start_orchestration("chat-1", "chat", {"count": 0, "handled": []})
        for n in range(messages):
            # at random moments: mid-turn, between turns, while a continue-as-new commits
            await asyncio.sleep(rng.choice([0, 0, 0.001, 0.003, 0.01]))
            await client.enqueue_event("chat-1", "inbox", {"n": n})
        await client.enqueue_event("chat-1", "inbox", {"n": BYE})
        status = await client.wait_for_orchestration("chat-1", 60)
    assert status.state is OrchestrationState.COMPLETED, status.error
    assert status.output == {"count": messages, "handled": list(range(messages))}
    assert status.custom_status == {"last": f"re:{messages - 1}", "count": messages}
    assert status.custom_status_version == messages
    # each execution took exactly one message and replied to it once
    executions = await client.list_executions("chat-1")
    assert executions == list(range(1, messages + 2))
    replied: list[int] = []
    for ex in executions:
        history = await client.read_history("chat-1", ex)
        assert sum(isinstance(e, QueueSubscribed) for e in history) == 1
        replied += [e.payload["n"] for e in history if isinstance(e, ActivityScheduled)]
    assert replied == list(range(messages))


async def test_thousands_of_unread_messages_across_continue_as_new_are_held_to_the_cap(
        store: Provider, caplog: pytest.LogCaptureFixture) -> None:
    client = Client(store)
    total = 5_000
    caplog.set_level(logging.WARNING, logger="duroxy.orchestration")
    await client.start_orchestration("hoard-1", "hoard", 0)
    for k in range(total):  # in a known arrival order: queue messages and events alternate
        if k % 2 == 0:
            await client.enqueue_event("hoard-1", "q", k)
        else:
            await client.raise_event("hoard-1", "e", k)
    await client.enqueue_event("hoard-1", "go")
    async with await Runtime.start(store, *registries()):
        status = await client.wait_for_orchestration("hoard-1", 120)
    assert status.state is OrchestrationState.COMPLETED, status.error
    # the oldest MAX_CARRY_FORWARD_EVENTS, both kinds counted together, and nothing more
    assert status.output == {"q": list(range(0, MAX_CARRY_FORWARD_EVENTS, 2)),
                             "e": list(range(1, MAX_CARRY_FORWARD_EVENTS, 2)),
                             "more": [1, 1]}
    dropped = [r.getMessage() for r in caplog.records
               if r.name == "duroxy.orchestration" and "dropped" in r.getMessage()]
    assert len(dropped) == total - MAX_CARRY_FORWARD_EVENTS
    assert all("'hoard-1'" in t and str(MAX_CARRY_FORWARD_EVENTS) in t for t in dropped)
    assert sum("queue 'q'" in t for t in dropped) == (total - MAX_CARRY_FORWARD_EVENTS) // 2
    assert sum("event 'e'" in t for t in dropped) == (total - MAX_CARRY_FORWARD_EVENTS) // 2
    assert await client.list_executions("hoard-1") == [1, 2]


async def test_the_client_side_of_queues(store: Provider) -> None:
    client = Client(store)
    with pytest.raises(InstanceNotFound):
        await client.enqueue_event("nobody", "q", 1)
    await client.start_orchestration("q-1", "echo_first")
    # kept while the instance is PENDING, in order; the typed spelling is the same call
    await client.enqueue_event_typed("q-1", "q", {"first": True})
    await client.enqueue_event("q-1", "q", "second")
    with pytest.raises(PayloadError):
        await client.enqueue_event("q-1", "q", object())
    for bad in ("", "x\x00"):
        with pytest.raises(ValueError):
            await client.enqueue_event("q-1", bad, 1)
    async with await Runtime.start(store, *registries()):
        status = await client.wait_for_orchestration("q-1", 30)
        assert status.output == {"first": True}
        # a message for a finished instance is accepted and discarded
        await client.enqueue_event("q-1", "q", "late")
        await client.raise_event("q-1", "e", "late")

        async def drained() -> bool:
            stats = await client.get_orchestration_stats("q-1")
            return stats is not None and stats.queue_pending_count == 0

        for _ in range(500):
            if await drained():
                break
            await asyncio.sleep(0.01)
    assert await drained()
    assert (await client.get_orchestration_status("q-1")).state is OrchestrationState.COMPLETED
    assert [e.kind for e in await client.read_history("q-1")][-1] == "OrchestrationCompleted"
    assert Client.raise_event_typed is Client.raise_event

"""``ActivityEnvironment``: one activity run as the runtime runs it, with a hand-built
context, the production JSON round trip, and cancellation from outside."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

from duroxy import ActivityContext, ActivityFailed, Client, PayloadError
from duroxy.providers.memory import InMemoryProvider
from duroxy.testing import ActivityEnvironment


@dataclass
class Box:
    name: str
    size: int


seen: list[ActivityContext] = []


async def provision(ctx: ActivityContext, box: Box) -> Box:
    seen.append(ctx)
    assert isinstance(box, Box)  # decoded to the annotation, as in production
    return Box(box.name.upper(), box.size * 2)


def in_a_thread(ctx: ActivityContext, n: int) -> list[Any]:
    return [n, threading.current_thread() is threading.main_thread()]


async def test_the_context_carries_the_environments_values() -> None:
    seen.clear()
    env = ActivityEnvironment(instance_id="i-7", execution_id=3, orchestration_name="o",
                              orchestration_version="2.0.0", attempt=4, worker_id="w",
                              session_id="s-1", tag="gpu")
    out = await env.run(provision, Box("vm", 2))
    assert out == Box("VM", 4)
    (ctx,) = seen
    assert (ctx.instance_id, ctx.execution_id, ctx.orchestration_name,
            ctx.orchestration_version, ctx.activity_name, ctx.attempt, ctx.worker_id,
            ctx.session_id, ctx.tag) == ("i-7", 3, "o", "2.0.0", "provision", 4, "w",
                                         "s-1", "gpu")
    assert not ctx.is_cancelled()
    named = ActivityEnvironment(activity_name="cloud::provision")
    await named.run(provision, Box("a", 1))
    assert seen[-1].activity_name == "cloud::provision" and seen[-1].attempt == 1


async def test_a_plain_def_runs_in_a_thread_and_input_takes_the_json_round_trip() -> None:
    env = ActivityEnvironment()
    assert await env.run(in_a_thread, 5) == [5, False]
    assert await env.run(provision, {"name": "x", "size": 1}) == Box("X", 2)  # JSON form
    with pytest.raises(PayloadError, match="input"):
        await env.run(provision, object())
    with pytest.raises(PayloadError):
        await env.run(provision, {"name": "x"})  # misses a field of Box

    async def unencodable(ctx: ActivityContext, _: Any) -> Any:
        return {1, "a"}  # a set with no order: no JSON form

    with pytest.raises(PayloadError, match="output"):
        await env.run(unencodable)


async def test_exceptions_propagate_as_raised() -> None:
    async def boom(ctx: ActivityContext, _: Any) -> None:
        raise KeyError("nope")

    def exits(ctx: ActivityContext, _: Any) -> None:
        raise SystemExit(3)

    env = ActivityEnvironment()
    with pytest.raises(KeyError, match="nope"):
        await env.run(boom)
    with pytest.raises(SystemExit):
        await env.run(exits)
    assert not issubclass(KeyError, ActivityFailed)


async def test_cancel_before_during_and_from_another_thread() -> None:
    async def waits(ctx: ActivityContext, _: Any) -> str:
        await ctx.cancelled()
        return "stopped"

    def polls(ctx: ActivityContext, _: Any) -> str:
        deadline = time.monotonic() + 5
        while not ctx.is_cancelled() and time.monotonic() < deadline:
            time.sleep(0.005)
        return "stopped" if ctx.is_cancelled() else "timed out"

    before = ActivityEnvironment()
    before.cancel()
    assert await asyncio.wait_for(before.run(waits), 5) == "stopped"

    during = ActivityEnvironment()
    task = asyncio.ensure_future(during.run(waits))
    await asyncio.sleep(0.02)
    assert not task.done()
    during.cancel()
    assert await asyncio.wait_for(task, 5) == "stopped"

    threaded = ActivityEnvironment()
    task = asyncio.ensure_future(threaded.run(polls))
    await asyncio.sleep(0.02)
    threading.Thread(target=threaded.cancel).start()
    assert await asyncio.wait_for(task, 5) == "stopped"


async def test_get_client_is_the_client_given() -> None:
    async def client_of(ctx: ActivityContext, _: Any) -> bool:
        return ctx.get_client() is client

    store = InMemoryProvider()
    client = Client(store)
    assert await ActivityEnvironment(client=client).run(client_of) is True

    async def no_client(ctx: ActivityContext, _: Any) -> None:
        ctx.get_client()

    with pytest.raises(RuntimeError, match="not attached"):
        await ActivityEnvironment().run(no_client)

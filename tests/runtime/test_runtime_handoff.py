"""A sequence of activities runs in the task of the one before: the completion's turn
claims the next activity and hands it to that task, on its slot, instead of a new task
(or, with every slot taken, the activity queue) per step."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from duroxy import ActivityRegistry, Client, OrchestrationRegistry, Runtime, RuntimeOptions
from duroxy.history import ActivityWork
from duroxy.providers.base import ActivityItem, ActivityRoute, ExcludedWork, Provider
from duroxy.providers.memory import InMemoryProvider
from duroxy.providers.sqlite import SqliteProvider

STORES: list[Callable[[], Provider]] = [InMemoryProvider, SqliteProvider.in_memory]


def _fetch_counter(store: Provider) -> list[int]:
    """How many items each activity fetch returned (claims are not fetches)."""
    fetched: list[int] = []
    fetch = store.fetch_activity_items

    async def counting(lock_timeout: float, limit: int = 1,
                       exclude: ExcludedWork | None = None,
                       route: ActivityRoute | None = None) -> list[ActivityItem]:
        items = await fetch(lock_timeout, limit, exclude, route)
        fetched.append(len(items))
        return items

    store.fetch_activity_items = counting  # type: ignore[method-assign]
    return fetched


@pytest.mark.parametrize("make_store", STORES, ids=["memory", "sqlite"])
@pytest.mark.parametrize("slots", [1, 32])
async def test_sequential_activities_run_in_one_task_without_fetches(
        make_store: Callable[[], Provider], slots: int) -> None:
    store = make_store()
    fetched = _fetch_counter(store)
    tasks: list[asyncio.Task[Any] | None] = []

    async def step(ctx: Any, x: int) -> int:
        tasks.append(asyncio.current_task())
        return x * 2

    async def seq(ctx: Any, n: int) -> list[int]:
        return [await ctx.schedule_activity("Step", i) for i in range(n)]

    rt = await Runtime.start(
        store, ActivityRegistry.builder().register("Step", step).build(),
        OrchestrationRegistry.builder().register("Seq", seq).build(),
        RuntimeOptions(activity_concurrency=slots))
    client = Client(store)
    await client.start_orchestration("s", "Seq", 6)
    status = await client.wait_for_orchestration("s", 10)
    await rt.shutdown()
    assert status.output == [0, 2, 4, 6, 8, 10]
    # the first activity comes with the start's turn, the others with each completion's
    # turn, all handed to the same task; even with one slot, nothing goes through a fetch
    assert len(tasks) == 6 and len(set(map(id, tasks))) == 1
    assert sum(fetched) == 0
    assert rt._workers.slots.free == slots  # the slot was given back once, at the end
    kinds = [e.kind for e in await client.read_history("s")]
    assert kinds.count("ActivityScheduled") == 6 and kinds.count("ActivityCompleted") == 6


async def test_a_cancelled_task_gives_back_the_activities_handed_to_it() -> None:
    store: Provider = InMemoryProvider()
    rt = await Runtime.start(store, ActivityRegistry.builder().build(),
                             OrchestrationRegistry.builder().build())
    work = ActivityWork("i", 1, 2, "Step", None, "Seq", None)
    first, handed = ActivityItem(1, "t1", work, 1), ActivityItem(2, "t2", work, 1)
    given_back: list[tuple[str, float]] = []

    async def abandon(lock_token: str, delay: float = 0.0, *, ignore_attempt: bool = False
                      ) -> None:
        given_back.append((lock_token, delay))

    async def run_one(item: ActivityItem, handoff: list[ActivityItem]) -> None:
        assert item is first
        handoff.append(handed)  # the completion's turn claimed the next one ...
        raise asyncio.CancelledError  # ... and then shutdown cancelled the task

    store.abandon_activity = abandon  # type: ignore[method-assign]
    workers = rt._workers
    workers._run_one = run_one  # type: ignore[method-assign]
    size = workers.slots.free
    await workers.slots.acquire()
    with pytest.raises(asyncio.CancelledError):
        await workers.run(first)
    assert given_back == [("t2", 0.0)]
    assert workers.slots.free == size
    await rt.shutdown()

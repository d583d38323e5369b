"""Admin and status calls end to end (API.md section 10) on every store: custom status
versions and ``wait_for_status_change``, executions and pruning (a running eternal
orchestration prunes itself), trees, stats, deleting many, and listing that pages
through thousands of instances while new ones start."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import duroxy._waiting
from duroxy import (
    ActivityContext,
    ActivityRegistry,
    Client,
    DeleteResult,
    InstanceNotFound,
    InstanceTree,
    OrchestrationContext,
    OrchestrationRegistry,
    OrchestrationState,
    PruneResult,
    Runtime,
)
from duroxy.providers.base import Provider
from storekit import store

__all__ = ["store"]


# ====================================================================== the application
async def prune_self(ctx: ActivityContext, _: Any) -> int:
    """An eternal orchestration's housekeeping: prune its own past executions."""
    result = await ctx.get_client().prune_executions(ctx.instance_id, keep_last=1)
    return result.executions_deleted


async def eternal(ctx: OrchestrationContext, n: int) -> dict[str, int]:
    pruned = await ctx.schedule_activity("prune_self", n)
    ctx.set_custom_status({"round": n, "pruned": pruned})
    if n < 10:
        ctx.continue_as_new(n + 1)
    return {"round": n, "pruned": pruned}


async def stepper(ctx: OrchestrationContext, steps: int) -> str:
    for i in range(1, steps + 1):
        ctx.set_custom_status({"step": i})
        await ctx.schedule_wait("next")
    return "done"


async def bursts(ctx: OrchestrationContext, n: int) -> str:
    ctx.set_custom_status("a")
    ctx.set_custom_status("b")  # several in one turn: counted once, the last one wins
    await ctx.schedule_wait("go")
    ctx.reset_custom_status()
    if n == 0:
        ctx.continue_as_new(1)  # the version belongs to the instance: it keeps growing
    await ctx.schedule_wait("go")
    return "ok"


async def parent(ctx: OrchestrationContext, _: Any) -> list[Any]:
    ctx.schedule_orchestration("waiter", f"{ctx.instance_id}-detached")
    kids = [ctx.schedule_sub_orchestration("leaf", i, instance_id=f"{ctx.instance_id}-c{i}")
            for i in range(2)]
    kids.append(ctx.schedule_sub_orchestration("middle", None,
                                               instance_id=f"{ctx.instance_id}-m"))
    return await ctx.join(kids)


async def middle(ctx: OrchestrationContext, _: Any) -> Any:
    return await ctx.schedule_sub_orchestration("leaf", 9, instance_id=f"{ctx.instance_id}-g")


async def leaf(ctx: OrchestrationContext, i: int) -> int:
    await ctx.schedule_wait("done")
    return i


async def waiter(ctx: OrchestrationContext, _: Any) -> None:
    await ctx.schedule_wait("never")


def registries() -> tuple[ActivityRegistry, OrchestrationRegistry]:
    acts = ActivityRegistry.builder().register("prune_self", prune_self).build()
    orchs = OrchestrationRegistry.builder()
    for name, fn in (("eternal", eternal), ("stepper", stepper), ("bursts", bursts),
                     ("parent", parent), ("middle", middle), ("leaf", leaf),
                     ("waiter", waiter)):
        orchs.register(name, fn)
    return acts, orchs.build()


# ====================================================================== status versions
async def test_wait_for_status_change_follows_ten_updates(
        store: Provider, monkeypatch: pytest.MonkeyPatch) -> None:
    # With the safety-net poll at a minute, only the commits' news can end the waits soon.
    monkeypatch.setattr(duroxy._waiting, "POLL_S", 60.0)
    client = Client(store)
    async with await Runtime.start(store, *registries()):
        await client.start_orchestration("steps-1", "stepper", 10)
        version = 0
        seen = []
        async with asyncio.timeout(60):
            status = await client.wait_for_status_change("steps-1", version, 30)
            while not status.is_terminal:
                seen.append((status.custom_status["step"], status.custom_status_version))
                version = status.custom_status_version
                await client.raise_event("steps-1", "next")
                status = await client.wait_for_status_change("steps-1", version, 30)
    assert seen == [(i, i) for i in range(1, 11)]
    assert status.state is OrchestrationState.COMPLETED and status.output == "done"
    info = await client.get_instance_info("steps-1")
    assert info.custom_status_version == 10 and info.custom_status == {"step": 10}
    # a finished instance answers at once, whatever the version asked about
    assert (await client.wait_for_status_change("steps-1", 99, 0.01)).is_terminal


async def test_status_versions_count_turns_and_grow_across_continue_as_new(
        store: Provider) -> None:
    client = Client(store)
    with pytest.raises(InstanceNotFound):
        await client.wait_for_status_change("nobody", 0, 1)
    async with await Runtime.start(store, *registries()):
        await client.start_orchestration("bursts-1", "bursts", 0)
        status = await client.wait_for_status_change("bursts-1", 0, 30)
        assert (status.custom_status, status.custom_status_version) == ("b", 1)
        with pytest.raises(TimeoutError):
            await client.wait_for_status_change("bursts-1", 1, 0.05)
        await client.raise_event("bursts-1", "go")
        status = await client.wait_for_status_change("bursts-1", 1, 30)
        # reset, then the next execution sets "a", "b" again: two more turns
        while status.custom_status_version < 3:
            status = await client.wait_for_status_change(
                "bursts-1", status.custom_status_version, 30)
        assert (status.custom_status, status.custom_status_version) == ("b", 3)
        assert status.execution_id == 2
        await client.raise_event("bursts-1", "go")
        status = await client.wait_for_status_change("bursts-1", 3, 30)
        assert (status.custom_status, status.custom_status_version) == (None, 4)
        await client.raise_event("bursts-1", "go")
        final = await client.wait_for_orchestration("bursts-1", 30)
    assert final.custom_status_version == 4 and final.output == "ok"


# ====================================================================== executions
async def test_a_running_eternal_orchestration_prunes_itself(store: Provider) -> None:
    client = Client(store)
    async with await Runtime.start(store, *registries()):
        await client.start_orchestration("eternal-1", "eternal", 0)
        status = await client.wait_for_orchestration("eternal-1", 60)
    assert status.state is OrchestrationState.COMPLETED, status.error
    # each round pruned the one before it while the instance ran
    assert status.output == {"round": 10, "pruned": 1}
    assert await client.list_executions("eternal-1") == [11]
    assert await client.read_history("eternal-1", 1) == []
    info = await client.get_execution_info("eternal-1", 11)
    assert (info.state, info.output, info.error) == ("COMPLETED", {"round": 10, "pruned": 1},
                                                     None)
    assert info.completed_at is not None and info.started_at <= info.completed_at
    assert info.event_count == len(await client.read_history("eternal-1"))
    with pytest.raises(KeyError):
        await client.get_execution_info("eternal-1", 3)
    with pytest.raises(InstanceNotFound):
        await client.get_execution_info("nobody", 1)


async def test_prune_executions_keeps_the_newest_and_never_the_current(
        store: Provider) -> None:
    client = Client(store)
    async with await Runtime.start(store, *registries()):
        await client.start_orchestration("bursts-2", "bursts", 0)
        await client.wait_for_status_change("bursts-2", 0, 30)
        await client.raise_event("bursts-2", "go")
        status = await client.wait_for_status_change("bursts-2", 2, 30)
        assert status.execution_id == 2
        ex1 = await client.get_execution_info("bursts-2", 1)
        assert ex1.state == "CONTINUED_AS_NEW" and ex1.completed_at is not None
        running = await client.get_execution_info("bursts-2", 2)
        assert running.state == "RUNNING" and running.completed_at is None
        assert await client.prune_executions("bursts-2", keep_last=2) == PruneResult(1, 0, 0)
        # ended too recently for older_than: kept
        assert await client.prune_executions(
            "bursts-2", 0, older_than=timedelta(hours=1)) == PruneResult(1, 0, 0)
        pruned = await client.prune_executions("bursts-2", keep_last=0)
        assert (pruned.executions_deleted, pruned.events_deleted) == (1, ex1.event_count)
        assert await client.list_executions("bursts-2") == [2]
        with pytest.raises(ValueError):
            await client.prune_executions("bursts-2", keep_last=-1)
        with pytest.raises(InstanceNotFound):
            await client.prune_executions("nobody")
        await client.start_orchestration("bursts-3", "bursts", 0)
        await client.wait_for_status_change("bursts-3", 0, 30)
        await client.raise_event("bursts-3", "go")
        await client.wait_for_status_change("bursts-3", 2, 30)
        bulk = await client.prune_executions_bulk(instance_ids=["bursts-2", "bursts-3",
                                                                "nobody"])
        assert bulk == PruneResult(2, 1, bulk.events_deleted) and bulk.events_deleted > 0
        assert await client.prune_executions_bulk(state="RUNNING") == PruneResult(2, 0, 0)
        for iid in ("bursts-2", "bursts-3"):
            await client.cancel_instance(iid)
            await client.wait_for_orchestration(iid, 30)


# ====================================================================== trees, stats, delete
async def test_trees_stats_and_deleting_many(store: Provider) -> None:
    client = Client(store)
    async with await Runtime.start(store, *registries()):
        await client.start_orchestration("p", "parent")

        async def started(iid: str) -> bool:
            return (await client.get_orchestration_status(iid)).state is \
                OrchestrationState.RUNNING

        for iid in ("p-c0", "p-c1", "p-m", "p-m-g", "p-detached"):
            while not await started(iid):
                await asyncio.sleep(0.01)
        tree = await client.get_instance_tree("p")
        assert isinstance(tree, InstanceTree)
        assert tree.root_id == "p" and tree.size == 5
        assert tree.all_ids[0] == "p" and set(tree.all_ids[1:4]) == {"p-c0", "p-c1", "p-m"}
        assert tree.all_ids[4] == "p-m-g"
        assert dict(tree.parent_of) == {"p-c0": "p", "p-c1": "p", "p-m": "p", "p-m-g": "p-m"}
        assert set(tree.children("p")) == {"p-c0", "p-c1", "p-m"}
        assert tree.children("p-m") == ("p-m-g",) and tree.children("p-c0") == ()
        assert (await client.get_instance_tree("p-m")).all_ids == ("p-m", "p-m-g")
        with pytest.raises(InstanceNotFound):
            await client.get_instance_tree("nobody")

        stats = await client.get_orchestration_stats("p-c0")
        assert stats is not None and stats.execution_count == 1
        history = await client.read_history("p-c0")
        assert stats.history_event_count == len(history)
        assert await client.get_orchestration_stats("nobody") is None
        await client.raise_event("p-c0", "other")  # not waited for: pending
        await client.enqueue_event("p-c0", "q", 1)

        async def pending() -> int:
            s = await client.get_orchestration_stats("p-c0")
            assert s is not None
            return s.queue_pending_count

        assert await pending() == 2  # queued, or received and kept: both count
        for _ in range(500):
            if len(await client.read_history("p-c0")) > len(history):
                break
            await asyncio.sleep(0.01)
        assert await pending() == 2

        # running ones are skipped without force; a deleted running child's parent is told
        result = await client.delete_instances(["p-m", "p-detached", "nobody"])
        assert result.skipped == ("p-m", "p-detached") and result.not_found == ("nobody",)
        assert result.instances_deleted == 0
        result = await client.delete_instance_bulk(["p-m", "nobody"], force=True)
        assert isinstance(result, DeleteResult)
        assert (result.instances_deleted, result.not_found) == (2, ("nobody",))
        assert result.executions_deleted == 2 and result.events_deleted > 0
        for iid in ("p-c0", "p-c1"):
            await client.raise_event(iid, "done")
        status = await client.wait_for_orchestration("p", 30)
        assert status.state is OrchestrationState.FAILED  # told its child was deleted
        assert "p-m" in str(status.error)
        result = await client.delete_instances(["p", "p-detached"], force=True)
        assert result.instances_deleted == 4 and result.skipped == ()
    assert await client.list_instances() == []


# ====================================================================== listing
async def test_paging_thousands_of_instances_while_new_ones_start(store: Provider) -> None:
    client = Client(store)
    originals = [f"i-{n:05d}" for n in range(2_500)]
    for at in range(0, len(originals), 100):
        await asyncio.gather(*(client.start_orchestration(iid, "waiter")
                               for iid in originals[at:at + 100]))
    seen: list[str] = []
    token = None
    pages = 0
    started_meanwhile: list[str] = []
    while True:
        page = await client.list_instances_page(limit=100, page_token=token)
        assert len(page.items) <= 100
        seen += [i.instance_id for i in page.items]
        pages += 1
        for n in range(3):  # new instances start while the paging goes on
            iid = f"new-{pages}-{n}"
            await client.start_orchestration(iid, "waiter")
            started_meanwhile.append(iid)
        token = page.next_page_token
        if token is None:
            break
        with pytest.raises(ValueError):  # a token is bound to its filters
            await client.list_instances_page(limit=100, page_token=token, name="waiter")
    assert len(seen) == len(set(seen))  # nothing twice
    assert set(originals) <= set(seen)  # every instance that existed throughout, once
    assert set(seen) - set(originals) <= set(started_meanwhile)
    assert pages >= 25
    everything = await client.list_instances()  # no limit: every match
    assert len(everything) == len(originals) + len(started_meanwhile)
    assert [i.instance_id async for i in client.iter_instances(page_size=333)] == [
        i.instance_id for i in everything]
    assert len(await client.list_instances(limit=10, offset=5)) == 10
    for bad in (0, 1001):
        with pytest.raises(ValueError):
            await client.list_instances_page(limit=bad)
    with pytest.raises(ValueError):
        await client.list_instances_page(page_token="not-a-token")


async def test_listing_filters(store: Provider) -> None:
    client = Client(store)
    await client.start_orchestration("a", "waiter")
    await asyncio.sleep(0.01)
    cut = datetime.now(UTC)
    await asyncio.sleep(0.01)
    await client.start_orchestration("b", "leaf", 1)
    assert [i.instance_id for i in await client.list_instances(created_after=cut)] == ["b"]
    assert [i.instance_id for i in await client.list_instances(created_before=cut)] == ["a"]
    assert [i.instance_id for i in await client.list_instances(name="leaf")] == ["b"]
    assert await client.list_instances(parent_instance_id="a") == []
    page = await client.list_instances_page(state="PENDING", limit=1)
    assert [i.instance_id for i in page.items] == ["a"] and page.next_page_token
    rest = await client.list_instances_page(state="PENDING", limit=1,
                                            page_token=page.next_page_token)
    assert [i.instance_id for i in rest.items] == ["b"] and rest.next_page_token is None
    assert [i.instance_id for i in await client.list_instances(
        created_after=cut.timestamp())] == ["b"]  # epoch seconds too
    with pytest.raises(TypeError):
        await client.list_instances(created_after="2024-01-01")  # type: ignore[arg-type]

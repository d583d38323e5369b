"""runtime.metrics_snapshot(): counters of one runtime that match a known workload, are
in before the client sees a result, survive a failed commit without counting twice, and
the slow-turn warning."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import duroxy
from duroxy import (
    ActivityContext,
    ActivityRegistry,
    BackoffStrategy,
    Client,
    MetricsSnapshot,
    OrchestrationContext,
    OrchestrationRegistry,
    OrchestrationState,
    ProviderError,
    RetryPolicy,
    Runtime,
    RuntimeOptions,
)
from duroxy.providers.base import OrchestrationCommit, Provider
from duroxy.providers.memory import InMemoryProvider
from duroxy.providers.sqlite import SqliteProvider

OPTIONS = RuntimeOptions(max_attempts=2, not_registered_backoff=0.01)
NOISE = duroxy.MAX_CARRY_FORWARD_EVENTS + 3  # three more than continue-as-new carries

flaky_calls: dict[str, int] = {}


async def ok(ctx: ActivityContext, x: int) -> int:
    return x + 1


async def flaky(ctx: ActivityContext, key: str) -> str:
    flaky_calls[key] = flaky_calls.get(key, 0) + 1
    if flaky_calls[key] < 3:
        raise RuntimeError(f"attempt {flaky_calls[key]} fails")
    return "done"


async def child(ctx: OrchestrationContext, x: int) -> int:
    return int(await ctx.schedule_activity("ok", x))


async def parent(ctx: OrchestrationContext, key: str) -> list[Any]:
    a = await ctx.schedule_activity("ok", 1)
    b = await ctx.schedule_activity_with_retry(
        "flaky", key, RetryPolicy(3, BackoffStrategy.Fixed(0)))
    c = await ctx.schedule_sub_orchestration("child", 10)
    return [a, b, c]


async def failing(ctx: OrchestrationContext, _: Any) -> None:
    raise ValueError("this orchestration fails")


async def eternal(ctx: OrchestrationContext, n: int) -> int:
    if n == 0:
        ctx.continue_as_new(1)
    return n


async def dropper(ctx: OrchestrationContext, n: int) -> int:
    if n == 0:
        await ctx.schedule_wait("go")
        ctx.continue_as_new(1)
    return n


async def needs_missing(ctx: OrchestrationContext, _: Any) -> Any:
    return await ctx.schedule_activity("missing", None)


def registries() -> tuple[ActivityRegistry, OrchestrationRegistry]:
    acts = ActivityRegistry.builder().register("ok", ok).register("flaky", flaky).build()
    orchs = (OrchestrationRegistry.builder().register("parent", parent)
             .register("child", child).register("failing", failing)
             .register("eternal", eternal).register("dropper", dropper)
             .register("needs_missing", needs_missing).build())
    return acts, orchs


STORES: dict[str, Callable[[Path], Provider]] = {
    "memory": lambda _p: InMemoryProvider(),
    "sqlite": lambda p: SqliteProvider(p / "metrics.db"),
}


@pytest.fixture(params=sorted(STORES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Provider]:
    provider = STORES[request.param](tmp_path)
    try:
        yield provider
    finally:
        await provider.close()


async def finish(client: Client, iid: str) -> OrchestrationState:
    status = await client.wait_for_orchestration(iid, 10)
    return status.state


async def test_counters_match_a_known_workload(store: Provider) -> None:
    client = Client(store)
    # Poison: a start whose turn "crashed" its worker twice before this runtime runs.
    await client.start_orchestration("poison", "eternal", 5)
    for _ in range(2):
        assert len(await store.fetch_orchestration_items(0.05, 10)) == 1
        await asyncio.sleep(0.08)
    acts, orchs = registries()
    key = f"k{id(store)}"
    async with await Runtime.start(store, acts, orchs, OPTIONS) as rt:
        assert rt.metrics_snapshot() == MetricsSnapshot()  # nothing counted before work
        assert await finish(client, "poison") is OrchestrationState.FAILED

        await client.start_orchestration("parent", "parent", key)
        assert await finish(client, "parent") is OrchestrationState.COMPLETED
        # Counted before the commit returned: seen as soon as the result is.
        seen = rt.metrics_snapshot()
        assert seen.orch_completions == 2 and seen.suborchestration_calls == 1
        assert seen.activity_success == 3 and seen.activity_app_errors == 2

        await client.start_orchestration("failing", "failing")
        await client.start_orchestration("eternal", "eternal", 0)
        await client.start_orchestration("ghost", "not-registered-anywhere")
        await client.start_orchestration("needs-missing", "needs_missing")
        await client.start_orchestration("dropper", "dropper", 0)
        for i in range(NOISE):
            await client.raise_event("dropper", "noise", i)
        await client.raise_event("dropper", "go")
        states = {iid: await finish(client, iid)
                  for iid in ("failing", "eternal", "ghost", "needs-missing", "dropper")}
        assert states == {"failing": OrchestrationState.FAILED,
                          "eternal": OrchestrationState.COMPLETED,
                          "ghost": OrchestrationState.FAILED,
                          "needs-missing": OrchestrationState.FAILED,
                          "dropper": OrchestrationState.COMPLETED}
        snap = rt.metrics_snapshot()
    fetched = (snap.orch_dispatcher_items_fetched, snap.worker_dispatcher_items_fetched)
    assert dataclasses.replace(snap, orch_dispatcher_items_fetched=0,
                               worker_dispatcher_items_fetched=0) == MetricsSnapshot(
        # poison, parent, child, failing, eternal x2, ghost, needs-missing, dropper x2
        orch_starts=10,
        orch_completions=4,  # parent, child, eternal's 2nd execution, dropper's 2nd
        orch_failures=4, orch_application_errors=1,
        orch_configuration_errors=2,  # not registered: the orchestration, the activity
        orch_infrastructure_errors=0, orch_poison=1,
        orch_continue_as_new=2,
        activity_success=3, activity_app_errors=2,
        activity_config_errors=2,  # "missing": both attempts (max_attempts=2)
        activity_infra_errors=0, activity_poison=0,
        suborchestration_calls=1, provider_errors=0,
        carry_forward_dropped=3, slow_turns=0)
    # Every turn and activity came from the store (fetched, locked or claimed); a turn
    # fed an activity's result needs no fetch, so these are lower bounds.
    assert fetched[0] >= 9 and fetched[1] >= 1
    # A snapshot never resets.
    assert rt.metrics_snapshot() == snap


async def test_counters_belong_to_one_runtime(tmp_path: Path) -> None:
    store = InMemoryProvider()
    client = Client(store)
    acts, orchs = registries()
    async with await Runtime.start(store, acts, orchs, OPTIONS) as first:
        await client.start_orchestration("e1", "eternal", 3)
        assert await finish(client, "e1") is OrchestrationState.COMPLETED
    async with await Runtime.start(store, acts, orchs, OPTIONS) as second:
        assert second.metrics_snapshot() == MetricsSnapshot()
        await client.start_orchestration("e2", "eternal", 3)
        assert await finish(client, "e2") is OrchestrationState.COMPLETED
        assert second.metrics_snapshot().orch_completions == 1
    assert first.metrics_snapshot().orch_completions == 1


class FailsOneCommit(InMemoryProvider):
    """An in-memory store whose first commit of a completing turn fails."""

    failed = False

    async def ack_orchestration_item(self, lock_token: str, commit: OrchestrationCommit
                                     ) -> Any:
        if commit.state == "COMPLETED" and not self.failed:
            self.failed = True
            raise ProviderError("the disk is full (injected)", retryable=True)
        return await super().ack_orchestration_item(lock_token, commit)


async def test_a_failed_commit_is_counted_as_a_store_error_not_as_an_outcome() -> None:
    store = FailsOneCommit()
    client = Client(store)
    acts, orchs = registries()
    async with await Runtime.start(store, acts, orchs, OPTIONS) as rt:
        await client.start_orchestration("e", "eternal", 7)
        assert await finish(client, "e") is OrchestrationState.COMPLETED
        snap = rt.metrics_snapshot()
    assert store.failed
    assert snap.orch_completions == 1  # counted, taken back, counted again
    assert snap.orch_starts == 1
    assert snap.provider_errors == 1 and snap.orch_infrastructure_errors == 1


async def blocking(ctx: OrchestrationContext, seconds: float) -> str:
    time.sleep(seconds)  # blocks the runtime's event loop: what the warning is for
    return "woke"


async def test_a_blocking_orchestration_triggers_the_slow_turn_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    store = InMemoryProvider()
    client = Client(store)
    orchs = (OrchestrationRegistry.builder().register("blocking", blocking)
             .register("eternal", eternal).build())
    # (a timedelta is taken too, as for every duration of the options)
    options = RuntimeOptions(slow_turn_threshold=timedelta(milliseconds=100))
    assert options.slow_turn_threshold == 0.1
    caplog.set_level(logging.WARNING, logger="duroxy.runtime")
    async with await Runtime.start(store, ActivityRegistry.builder().build(), orchs,
                                   options) as rt:
        await client.start_orchestration("quick", "eternal", 1)
        assert await finish(client, "quick") is OrchestrationState.COMPLETED
        assert rt.metrics_snapshot().slow_turns == 0
        await client.start_orchestration("sleepy-1", "blocking", 0.3)
        assert await finish(client, "sleepy-1") is OrchestrationState.COMPLETED
        assert rt.metrics_snapshot().slow_turns == 1
    slow = [r for r in caplog.records if "slow orchestration turn" in r.getMessage()]
    assert len(slow) == 1
    assert slow[0].levelno == logging.WARNING and slow[0].name == "duroxy.runtime"
    message = slow[0].getMessage()
    assert "'sleepy-1'" in message and "'blocking'" in message
    took = float(message.split(" took ")[1].split(" s,")[0])
    assert took >= 0.3


@pytest.mark.parametrize("bad", [0, -1, float("nan"), "1", True])
def test_slow_turn_threshold_is_validated(bad: Any) -> None:
    with pytest.raises(ValueError, match="slow_turn_threshold"):
        RuntimeOptions(slow_turn_threshold=bad)
    assert RuntimeOptions().slow_turn_threshold == 1.0


def test_metrics_snapshot_is_public_and_has_duroxides_names() -> None:
    assert duroxy.MetricsSnapshot is MetricsSnapshot
    names = [f.name for f in dataclasses.fields(MetricsSnapshot)]
    assert names[:18] == [
        "orch_starts", "orch_completions", "orch_failures", "orch_application_errors",
        "orch_configuration_errors", "orch_infrastructure_errors", "orch_poison",
        "orch_continue_as_new", "activity_success", "activity_app_errors",
        "activity_config_errors", "activity_infra_errors", "activity_poison",
        "orch_dispatcher_items_fetched", "worker_dispatcher_items_fetched",
        "suborchestration_calls", "provider_errors", "carry_forward_dropped"]


class SlowCommits(InMemoryProvider):
    """An in-memory store whose commits of turns take longer than the lock lasts."""

    delay = 0.0

    async def ack_orchestration_item(self, lock_token: str, commit: OrchestrationCommit
                                     ) -> Any:
        await asyncio.sleep(self.delay)
        return await super().ack_orchestration_item(lock_token, commit)


async def test_a_turn_keeps_its_lock_while_it_waits_for_its_commit() -> None:
    """A turn renews its instance lock while it waits (here for a slow commit), so the
    commit lands under the lock it was fetched with instead of being refused."""
    store = SlowCommits()
    store.delay = 0.7  # more than the lock timeout below
    client = Client(store)
    acts, orchs = registries()
    options = RuntimeOptions(orchestration_lock_timeout=0.4, max_attempts=2)
    async with await Runtime.start(store, acts, orchs, options) as rt:
        await client.start_orchestration("slow", "eternal", 4)
        status = await client.wait_for_orchestration("slow", 10)
        snap = rt.metrics_snapshot()
    assert status.state is OrchestrationState.COMPLETED and status.output == 4
    assert snap.orch_completions == 1 and snap.orch_dispatcher_items_fetched == 1

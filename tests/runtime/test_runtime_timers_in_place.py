"""Timers fired in place: on a store that leaves a worker's own timers to it
(``FastPath.worker_fires_timers``: PostgreSQL), the runtime that committed a timer fires
it at its due time itself, in one lock-free ``commit_turn`` that consumes the timer's
message, with no fetch before it; refused, or with the execution no longer live, by
``lock_instance`` and an ordinary turn.

The runtimes whose alarm is under test poll only every 5 s: a timer that fires within
the 3 s the tests wait was fired by the runtime's own alarm, since the store wakes no
fetch for it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest

from duroxy import (
    ActivityRegistry,
    Client,
    OrchestrationContext,
    OrchestrationRegistry,
    Runtime,
    RuntimeOptions,
)
from duroxy.errors import LockLost, ProviderError
from duroxy.history import OrchestratorMessage, TimerFired
from duroxy.providers.base import ActivityItem, FastPath, OrchestrationCommit
from duroxy.providers.memory import InMemoryProvider
from duroxy.providers.postgres import PostgresProvider
from duroxy.providers.sqlite import SqliteProvider

SLOW_POLL = RuntimeOptions(poll_interval=5.0, max_poll_interval=5.0)


async def nap(ctx: OrchestrationContext, seconds: float) -> str:
    await ctx.schedule_timer(timedelta(seconds=seconds))
    return "ok"


async def two_naps(ctx: OrchestrationContext, seconds: float) -> int:
    await ctx.join([ctx.schedule_timer(timedelta(seconds=seconds)),
                    ctx.schedule_timer(timedelta(seconds=seconds))])
    return 2


async def nap_or_event(ctx: OrchestrationContext, seconds: float) -> str:
    winner, _ = await ctx.select2(ctx.schedule_timer(timedelta(seconds=seconds)),
                                  ctx.schedule_wait("poke"))
    await ctx.schedule_timer(timedelta(seconds=seconds))
    return f"{winner}"


REGISTRY = (OrchestrationRegistry.builder().register("nap", nap)
            .register("two_naps", two_naps).register("nap_or_event", nap_or_event).build())


class _Spy:
    """Records the provider's lock-free commits (with what they consumed) and its
    lock_instance calls; the first ``refuse`` in-place commits raise ``error``
    (``LockLost``: refused), and with another error the first lock_instance too."""

    def __init__(self, provider: PostgresProvider, refuse: int = 0,
                 error: Exception | None = None) -> None:
        self.consumed: list[list[TimerFired]] = []
        self.locked: list[str] = []
        self.refuse = refuse
        self.error = error or LockLost("refused for the test")
        commit_turn, lock_instance = provider.commit_turn, provider.lock_instance

        async def spy_commit(instance_id: str, expected: int, commit: OrchestrationCommit,
                             consume: Sequence[OrchestratorMessage] = ()
                             ) -> list[ActivityItem]:
            if consume and self.refuse:
                self.refuse -= 1
                raise self.error
            if consume:
                self.consumed.append([m.event for m in consume
                                      if isinstance(m.event, TimerFired)])
            return await commit_turn(instance_id, expected, commit, consume)

        async def spy_lock(instance_id: str, lock_timeout: float) -> Any:
            self.locked.append(instance_id)
            if not isinstance(self.error, LockLost) and len(self.locked) == 1:
                raise self.error
            return await lock_instance(instance_id, lock_timeout)

        provider.commit_turn = spy_commit  # type: ignore[method-assign,assignment]
        provider.lock_instance = spy_lock  # type: ignore[method-assign]


async def _run(provider: PostgresProvider, name: str, arg: Any,
               options: RuntimeOptions = SLOW_POLL,
               meanwhile: Callable[[Client, str], Any] | None = None) -> tuple[Any, list[str]]:
    async with await Runtime.start(provider, ActivityRegistry.builder().build(), REGISTRY,
                                   options):
        client = Client(provider)
        await client.start_orchestration("i", name, arg)
        if meanwhile is not None:
            await meanwhile(client, "i")
        status = await client.wait_for_orchestration("i", timeout=3)
        kinds = [e.kind for e in await client.read_history("i")]
    return status.output, kinds


def test_which_stores_leave_timers_to_the_worker() -> None:
    assert PostgresProvider.worker_fires_timers
    assert not SqliteProvider.worker_fires_timers
    assert not InMemoryProvider.worker_fires_timers
    assert isinstance(PostgresProvider("postgresql://nowhere/x"), FastPath)


async def test_a_timer_fires_in_place_in_one_commit(
        providers: Callable[..., PostgresProvider]) -> None:
    provider = providers()
    spy = _Spy(provider)
    output, kinds = await _run(provider, "nap", 0.2)
    assert output == "ok"
    assert kinds == ["OrchestrationStarted", "TimerCreated", "TimerFired",
                     "OrchestrationCompleted"]
    [[fired]] = spy.consumed
    assert fired.source_event_id == 2
    assert spy.locked == []  # no lock, no fetch: the commit consumed the message


async def test_two_timers_due_together_each_fire_once(
        providers: Callable[..., PostgresProvider]) -> None:
    provider = providers()
    spy = _Spy(provider)
    output, kinds = await _run(provider, "two_naps", 0.2)
    assert output == 2
    assert kinds.count("TimerFired") == 2 and kinds[-1] == "OrchestrationCompleted"
    # the second alarm waits for the first one's commit, then fires in place too
    assert sorted(e.source_event_id for c in spy.consumed for e in c) == [2, 3]


@pytest.mark.parametrize("why", ["refused", "no longer cached"])
async def test_a_timer_that_cannot_fire_in_place_fires_after_a_locked_turn(
        providers: Callable[..., PostgresProvider], why: str) -> None:
    provider = providers()
    spy = _Spy(provider, refuse=1 if why == "refused" else 0)
    options = RuntimeOptions(poll_interval=5.0, max_poll_interval=5.0,
                             cache_size=0 if why == "no longer cached" else 1000)
    output, kinds = await _run(provider, "nap", 0.2, options)
    assert output == "ok"
    assert kinds.count("TimerFired") == 1
    assert spy.locked == ["i"] and spy.consumed == []


async def test_a_store_failure_at_the_due_time_leaves_the_timer_to_the_poll(
        providers: Callable[..., PostgresProvider]) -> None:
    """The in-place commit and the lock that would replace it both fail (the connection
    cut at the due time): the message stays queued, and the next poll fires it, once."""
    provider = providers()
    spy = _Spy(provider, refuse=1, error=ProviderError("connection cut for the test"))
    options = RuntimeOptions(poll_interval=0.05, max_poll_interval=0.25)
    output, kinds = await _run(provider, "nap", 0.2, options)
    assert output == "ok"
    assert kinds == ["OrchestrationStarted", "TimerCreated", "TimerFired",
                     "OrchestrationCompleted"]
    assert spy.locked == ["i"] and spy.consumed == []


async def test_a_timer_a_fetched_turn_delivered_is_not_fired_again(
        providers: Callable[..., PostgresProvider]) -> None:
    provider = providers()
    spy = _Spy(provider)

    async def poke_at_the_due_time(client: Client, iid: str) -> None:
        # the event and the first timer reach the store together: whichever way the
        # first timer fires, each timer fires once and the event is consumed
        await asyncio.sleep(0.2)
        await client.raise_event(iid, "poke", None)

    output, kinds = await _run(provider, "nap_or_event", 0.2, meanwhile=poke_at_the_due_time)
    assert output in ("0", "1")
    assert kinds.count("TimerFired") == 2
    assert kinds.count("EventRaised") == 1
    assert kinds[-1] == "OrchestrationCompleted"
    fired = [e.source_event_id for c in spy.consumed for e in c]
    assert len(fired) == len(set(fired))


@pytest.mark.parametrize("store", ["sqlite", "memory"])
async def test_stores_that_wake_their_own_fetches_keep_doing_so(
        store: str, tmp_path: Any) -> None:
    provider = (SqliteProvider(str(tmp_path / "s.db")) if store == "sqlite"
                else InMemoryProvider())
    calls: list[Sequence[OrchestratorMessage]] = []
    commit_turn = provider.commit_turn

    async def spy_commit(instance_id: str, expected: int, commit: OrchestrationCommit,
                         consume: Sequence[OrchestratorMessage] = ()) -> list[ActivityItem]:
        calls.append(consume)
        return await commit_turn(instance_id, expected, commit, consume)

    provider.commit_turn = spy_commit  # type: ignore[method-assign,assignment]
    options = RuntimeOptions(poll_interval=0.05, max_poll_interval=0.25)
    async with await Runtime.start(provider, ActivityRegistry.builder().build(), REGISTRY,
                                   options):
        client = Client(provider)
        await client.start_orchestration("i", "nap", 0.1)
        status = await client.wait_for_orchestration("i", timeout=3)
    assert status.output == "ok"
    assert all(not c for c in calls)  # nothing fired in place
    await provider.close()


async def test_a_timer_whose_worker_stopped_is_fired_by_another(
        providers: Callable[..., PostgresProvider], schemas: Callable[[], str]) -> None:
    """The store sets no alarm for a timer its worker fires itself: when that worker
    stops before the timer falls due, another worker's poll takes it, once."""
    schema = schemas()
    first, second = providers(schema), providers(schema)
    none = ActivityRegistry.builder().build()
    async with await Runtime.start(first, none, REGISTRY, SLOW_POLL):
        client = Client(first)
        await client.start_orchestration("i", "nap", 0.3)
        # its first turn has committed the timer (the history shows it)
        for _ in range(200):
            if "TimerCreated" in [e.kind for e in await client.read_history("i")]:
                break
            await asyncio.sleep(0.01)
    fast_poll = RuntimeOptions(poll_interval=0.05, max_poll_interval=0.25)
    async with await Runtime.start(second, none, REGISTRY, fast_poll):
        status = await Client(second).wait_for_orchestration("i", timeout=5)
        kinds = [e.kind for e in await Client(second).read_history("i")]
    assert status.output == "ok"
    assert kinds == ["OrchestrationStarted", "TimerCreated", "TimerFired",
                     "OrchestrationCompleted"]


async def test_timers_falling_due_together_take_turn_slots(
        providers: Callable[..., PostgresProvider]) -> None:
    """Many instances' timers falling due at once fire as many at a time as there are
    turn slots, as fetched work would, not all at once."""
    provider = providers()
    in_flight, most = 0, 0
    commit_turn = provider.commit_turn

    async def counting(instance_id: str, expected: int, commit: OrchestrationCommit,
                       consume: Sequence[OrchestratorMessage] = ()) -> list[ActivityItem]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            await asyncio.sleep(0.01)  # a slow commit: the next ones would overlap it
            return await commit_turn(instance_id, expected, commit, consume)
        finally:
            in_flight -= 1

    provider.commit_turn = counting  # type: ignore[method-assign,assignment]
    options = RuntimeOptions(poll_interval=5.0, max_poll_interval=5.0,
                             orchestration_concurrency=2)
    async with await Runtime.start(provider, ActivityRegistry.builder().build(), REGISTRY,
                                   options):
        client = Client(provider)
        ids = [f"i{n}" for n in range(12)]
        for iid in ids:
            await client.start_orchestration(iid, "nap", 0.3)
        outputs = [(await client.wait_for_orchestration(iid, timeout=5)).output
                   for iid in ids]
    assert outputs == ["ok"] * 12
    assert most == 2

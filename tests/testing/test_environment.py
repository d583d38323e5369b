"""``OrchestrationEnvironment``: a runtime on a store of its own and a virtual clock that
jumps to the next due time whenever nothing runs (API.md section 11, "Time-skipping
test environment"), on both stores it offers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from duroxy import (
    ActivityContext,
    ActivityRegistry,
    BackoffStrategy,
    OrchestrationContext,
    OrchestrationRegistry,
    OrchestrationState,
    RetryPolicy,
    RuntimeOptions,
)
from duroxy.history import (
    ActivityScheduled,
    KeyValueSet,
    TimerCreated,
    TimerFired,
)
from duroxy.testing import OrchestrationEnvironment

STORES = ["memory", "sqlite"]
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

calls: list[str] = []
gate: dict[str, asyncio.Event] = {}


# ---------------------------------------------------------------- activities
async def send(ctx: ActivityContext, what: str) -> str:
    calls.append(what)
    return f"sent {what}"


async def flaky(ctx: ActivityContext, until: int) -> int:
    calls.append(f"flaky {ctx.attempt}")
    if ctx.attempt < until:
        raise RuntimeError(f"attempt {ctx.attempt} fails")
    return ctx.attempt


async def held(ctx: ActivityContext, name: str) -> str:
    """Runs until the test opens its gate (real time)."""
    calls.append(f"held {name}")
    await gate[name].wait()
    return name


# ---------------------------------------------------------------- orchestrations
async def remind(ctx: OrchestrationContext, inp: dict[str, Any]) -> dict[str, Any]:
    before = await ctx.utcnow()
    await ctx.schedule_timer(timedelta(days=inp["days"]))
    after = await ctx.utcnow()
    ctx.set_kv_value("reminded", True)
    out = await ctx.schedule_activity("send", "reminder")
    return {"out": out, "waited": (after - before).total_seconds()}


async def retried(ctx: OrchestrationContext, until: int) -> int:
    policy = RetryPolicy(5).with_backoff(BackoffStrategy.Exponential(
        base=HOUR, multiplier=2.0, max=DAY))
    return await ctx.schedule_activity_with_retry("flaky", until, policy, output_type=int)


async def race(ctx: OrchestrationContext, _: Any) -> dict[str, Any]:
    before = await ctx.utcnow()
    index, value = await ctx.select2(ctx.schedule_timer(timedelta(hours=2)),
                                     ctx.schedule_wait("approve"))
    after = await ctx.utcnow()
    return {"winner": index, "value": value, "hours": (after - before) / HOUR}


async def two_timers(ctx: OrchestrationContext, _: Any) -> list[str]:
    fired = []
    await asyncio.sleep(3600)  # asyncio.sleep is a durable timer too
    fired.append("1h")
    ctx.set_custom_status(fired)
    await ctx.schedule_timer(timedelta(hours=2))
    fired.append("3h")
    return fired


async def runs_held(ctx: OrchestrationContext, name: str) -> dict[str, Any]:
    before = await ctx.utcnow()
    await ctx.schedule_activity("held", name)
    after = await ctx.utcnow()
    return {"stood_still": before == after}


async def waits(ctx: OrchestrationContext, _: Any) -> Any:
    return await ctx.schedule_wait("never")


async def with_timeouts(ctx: OrchestrationContext, _: Any) -> Any:
    policy = RetryPolicy(3, backoff=BackoffStrategy.Fixed(delay=HOUR),
                         timeout=timedelta(minutes=30))
    return await ctx.schedule_activity_with_retry("unregistered", None, policy)


ACTIVITIES = (ActivityRegistry.builder().register("send", send).register("flaky", flaky)
              .register("held", held).build())
ORCHESTRATIONS = (OrchestrationRegistry.builder()
                  .register("remind", remind).register("retried", retried)
                  .register("race", race).register("two_timers", two_timers)
                  .register("runs_held", runs_held).register("waits", waits)
                  .register("with_timeouts", with_timeouts).build())


def env_of(store: str, **kw: Any) -> OrchestrationEnvironment:
    return OrchestrationEnvironment(ACTIVITIES, ORCHESTRATIONS, store=store, **kw)


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


# ================================================================ skipping time
@pytest.mark.parametrize("store", STORES)
async def test_a_30_day_timer_passes_at_once_on_the_virtual_clock(store: str) -> None:
    calls.clear()
    async with env_of(store, start_time=START) as env:
        assert env.now() == START and env.time_skipping
        await env.client.start_orchestration("r-1", "remind", {"days": 30})
        status = await env.client.wait_for_orchestration("r-1", timeout=5)
        assert status.state is OrchestrationState.COMPLETED, status.error
        assert status.output == {"out": "sent reminder", "waited": 30 * 86400.0}
        assert env.now() == START + timedelta(days=30)
        # history timestamps, the instance's times and KV times follow the clock
        history = await env.client.read_history("r-1")
        created = next(e for e in history if isinstance(e, TimerCreated))
        fired = next(e for e in history if isinstance(e, TimerFired))
        assert at(history[0].ts) == START and at(created.fire_at) == START + timedelta(days=30)
        assert at(fired.ts) == START + timedelta(days=30)
        kv_set = next(e for e in history if isinstance(e, KeyValueSet))
        assert at(kv_set.updated_at) == START + timedelta(days=30)
        info = await env.client.get_instance_info("r-1")
        assert info.created_at == START and info.updated_at == START + timedelta(days=30)
        assert calls == ["reminder"]


@pytest.mark.parametrize("store", STORES)
async def test_retry_backoffs_over_hours_are_skipped(store: str) -> None:
    calls.clear()
    async with env_of(store, start_time=START) as env:
        await env.client.start_orchestration("x-1", "retried", 5)
        status = await env.client.wait_for_orchestration("x-1", timeout=5)
        assert status.output == 5, status.error
        scheduled = [e for e in await env.client.read_history("x-1")
                     if isinstance(e, ActivityScheduled)]
        # attempts 1..5, after backoffs of 1, 2, 4 and 8 hours
        assert [at(e.ts) - START for e in scheduled] == [
            timedelta(0), HOUR, 3 * HOUR, 7 * HOUR, 15 * HOUR]
        assert env.now() == START + 15 * HOUR
        assert calls == [f"flaky {n}" for n in range(1, 6)]


@pytest.mark.parametrize("store", STORES)
async def test_a_timer_wins_a_race_when_no_event_comes(store: str) -> None:
    async with env_of(store, start_time=START) as env:
        await env.client.start_orchestration("race-1", "race")
        status = await env.client.wait_for_orchestration("race-1", timeout=5)
        assert status.output == {"winner": 0, "value": None, "hours": 2.0}
        assert env.now() == START + 2 * HOUR


@pytest.mark.parametrize("store", STORES)
async def test_an_event_wins_a_race_raised_an_hour_in(store: str) -> None:
    async with env_of(store, start_time=START) as env:
        with env.auto_time_skipping_disabled():
            await env.client.start_orchestration("race-2", "race")
            await env.sleep(HOUR)
            assert env.now() == START + HOUR
            await env.client.raise_event("race-2", "approve", "yes")
            status = await env.client.wait_for_orchestration("race-2", timeout=5)
        assert status.output == {"winner": 1, "value": "yes", "hours": 1.0}
        # the losing timer was due for an instance that ended: the clock stays
        await asyncio.sleep(0.05)
        assert env.now() == START + HOUR


@pytest.mark.parametrize("store", STORES)
async def test_sleep_moves_the_clock_and_lets_what_falls_due_run(store: str) -> None:
    async with env_of(store, start_time=START) as env:
        with env.auto_time_skipping_disabled():
            await env.client.start_orchestration("t-1", "two_timers")
            await env.sleep(timedelta(minutes=90))
            assert env.now() == START + timedelta(minutes=90)
            status = await env.client.get_orchestration_status("t-1")
            # the 1 h timer fired and its turn ran before sleep returned; the 3 h one not
            assert status.custom_status == ["1h"] and not status.is_terminal
            # no automatic jump inside the block, however long one waits
            await asyncio.sleep(0.05)
            assert env.now() == START + timedelta(minutes=90)
            await env.sleep(2 * HOUR)
            status = await env.client.get_orchestration_status("t-1")
            assert status.output == ["1h", "3h"]
            assert env.now() == START + timedelta(minutes=210)
        fired = [at(e.ts) - START for e in await env.client.read_history("t-1")
                 if isinstance(e, TimerFired)]
        assert fired == [HOUR, 3 * HOUR]  # each fired at its own time, not at the sleep's end


@pytest.mark.parametrize("store", STORES)
async def test_the_clock_stands_still_while_an_activity_runs(store: str) -> None:
    """Activities run in real time; no jump happens while one holds its lock (here
    longer than its lock timeout: the lock is renewed in real time), so none expires."""
    calls.clear()
    gate["a"] = asyncio.Event()
    options = RuntimeOptions(activity_lock_timeout=0.3)
    async with env_of(store, start_time=START, options=options) as env:
        await env.client.start_orchestration("h-1", "runs_held", "a")
        await env.client.start_orchestration("r-2", "remind", {"days": 30})
        while calls.count("held a") == 0:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.5)  # real time passes; the 30-day timer waits
        assert env.now() == START
        assert (await env.client.get_orchestration_status("r-2")).state is \
            OrchestrationState.RUNNING
        gate["a"].set()
        first = await env.client.wait_for_orchestration("h-1", timeout=5)
        second = await env.client.wait_for_orchestration("r-2", timeout=5)
        assert first.output == {"stood_still": True}
        assert second.state is OrchestrationState.COMPLETED
        assert calls.count("held a") == 1  # the lock never lapsed: it ran once
        assert env.now() == START + timedelta(days=30)


@pytest.mark.parametrize("store", STORES)
async def test_sleep_waits_for_the_activity_running(store: str) -> None:
    calls.clear()
    gate["b"] = asyncio.Event()
    async with env_of(store, start_time=START) as env:
        await env.client.start_orchestration("h-2", "runs_held", "b")
        while calls.count("held b") == 0:
            await asyncio.sleep(0.005)
        sleeping = asyncio.ensure_future(env.sleep(DAY))
        await asyncio.sleep(0.1)
        assert not sleeping.done() and env.now() == START
        gate["b"].set()
        await sleeping
        assert env.now() == START + DAY
        status = await env.client.get_orchestration_status("h-2")
        assert status.output == {"stood_still": True} and calls.count("held b") == 1


@pytest.mark.parametrize("store", STORES)
async def test_client_timeouts_stay_real(store: str) -> None:
    async with env_of(store, start_time=START) as env:
        await env.client.start_orchestration("w-1", "waits")
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            await env.client.wait_for_orchestration("w-1", timeout=0.3)
        assert time.monotonic() - began >= 0.3
        assert env.now() == START  # nothing was scheduled: no jump


@pytest.mark.parametrize("store", STORES)
async def test_not_registered_backoffs_and_attempt_timeouts_are_skipped(store: str) -> None:
    options = RuntimeOptions(not_registered_backoff=2 * 3600.0, max_attempts=10)
    async with env_of(store, start_time=START, options=options) as env:
        # an activity nobody registers: each offer cools down 2 h; each attempt times
        # out after 30 min first, then waits its 1 h backoff
        await env.client.start_orchestration("u-1", "with_timeouts")
        status = await env.client.wait_for_orchestration("u-1", timeout=5)
        assert status.state is OrchestrationState.FAILED
        assert status.error is not None and "TimeoutError" in status.error.message
        scheduled = [at(e.ts) - START for e in await env.client.read_history("u-1")
                     if isinstance(e, ActivityScheduled)]
        minutes = timedelta(minutes=1)
        assert scheduled == [timedelta(0), 90 * minutes, 180 * minutes]
        # an orchestration nobody registers fails not_registered after its backoffs
        await env.client.start_orchestration("u-2", "nobody::registers::this")
        status = await env.client.wait_for_orchestration("u-2", timeout=5)
        assert status.error is not None and status.error.kind == "not_registered"


# ================================================================ no globals
async def test_environments_each_have_their_own_clock_and_patch_nothing() -> None:
    other_start = datetime(2020, 6, 1, tzinfo=UTC)
    before = time.time()
    async with env_of("memory", start_time=START) as one, \
            env_of("sqlite", start_time=other_start) as two:
        await one.client.start_orchestration("r", "remind", {"days": 30})
        await two.client.start_orchestration("r", "remind", {"days": 3})
        a, b = await asyncio.gather(one.client.wait_for_orchestration("r", timeout=5),
                                    two.client.wait_for_orchestration("r", timeout=5))
        assert a.output["waited"] == 30 * 86400 and b.output["waited"] == 3 * 86400
        assert one.now() == START + timedelta(days=30)
        assert two.now() == other_start + timedelta(days=3)
        # nothing global moved
        assert before <= time.time() < before + 60
        assert abs(datetime.now(UTC).timestamp() - time.time()) < 1
        loop = asyncio.get_running_loop()
        assert abs(loop.time() - time.monotonic()) < 1


def test_it_runs_under_anyio_with_no_plugin() -> None:
    async def main() -> Any:
        async with env_of("memory", start_time=START) as env:
            await env.client.start_orchestration("r", "remind", {"days": 2})
            status = await env.client.wait_for_orchestration("r", timeout=5)
            return status.output, env.now()

    output, now = anyio.run(main, backend="asyncio")
    assert output["waited"] == 2 * 86400 and now == START + 2 * DAY


# ================================================================ construction, real time
async def test_start_and_shutdown_spelling_and_defaults() -> None:
    before = datetime.now(UTC)
    env = await OrchestrationEnvironment.start(ACTIVITIES, ORCHESTRATIONS)
    try:
        assert env.time_skipping and env.runtime is not None and env.provider is not None
        # the default start: the real time, to the millisecond
        assert before - timedelta(seconds=1) <= env.now() <= datetime.now(UTC)
        assert env.now().microsecond % 1000 == 0
        await env.client.start_orchestration("r", "remind", {"days": 1})
        status = await env.client.wait_for_orchestration("r", timeout=5)
        assert status.output["waited"] == 86400.0
    finally:
        await env.shutdown()
    await env.shutdown()  # idempotent


async def test_real_time_gives_the_same_object_on_the_real_clock() -> None:
    async with env_of("memory", time_skipping=False) as env:
        assert not env.time_skipping
        assert abs(env.now() - datetime.now(UTC)) < timedelta(seconds=1)
        began = time.monotonic()
        await env.sleep(0.05)
        assert time.monotonic() - began >= 0.05
        with env.auto_time_skipping_disabled():
            pass


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"store": "postgres"}, ValueError),
    ({"start_time": "2030-01-01"}, TypeError),
    ({"time_skipping": False, "start_time": START}, ValueError),
])
def test_bad_arguments_are_refused(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        OrchestrationEnvironment(ACTIVITIES, ORCHESTRATIONS, **kwargs)


async def test_registries_may_be_none() -> None:
    async with OrchestrationEnvironment(None, ORCHESTRATIONS, start_time=START) as env:
        await env.client.start_orchestration("t", "race")
        status = await env.client.wait_for_orchestration("t", timeout=5)
        assert status.output["winner"] == 0


async def test_runtime_needs_a_started_environment() -> None:
    env = env_of("memory")
    with pytest.raises(RuntimeError, match="not started"):
        _ = env.runtime
    check: Callable[[], Any] = env.now  # the clock reads before the start
    assert isinstance(check(), datetime)
    await env.shutdown()

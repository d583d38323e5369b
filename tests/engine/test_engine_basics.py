"""Table-driven engine tests: history shapes of each context call, replay, outcomes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from duroxy import codec
from duroxy._engine import OrchestrationContext
from duroxy.errors import ActivityFailed
from duroxy.history import (
    ActivityCompleted,
    EventRaised,
    OrchestrationStarted,
    TimerCreated,
    TimerFired,
)
from duroxy.options import BackoffStrategy, RetryPolicy
from enginekit import START_US, Driver, kinds

Ctx = OrchestrationContext


async def one_activity(ctx: Ctx, x: Any) -> Any:
    return await ctx.schedule_activity("echo", x)


async def two_sequential(ctx: Ctx, x: int) -> int:
    a = await ctx.schedule_activity("inc", x)
    b = await ctx.schedule_activity("inc", a)
    return int(b)


async def with_timer(ctx: Ctx, _: Any) -> str:
    await ctx.schedule_timer(timedelta(seconds=5))
    return "done"


async def with_sleep(ctx: Ctx, _: Any) -> str:
    await asyncio.sleep(2.5)
    return "slept"


async def wait_event(ctx: Ctx, _: Any) -> Any:
    return await ctx.schedule_wait("approve")


async def values(ctx: Ctx, _: Any) -> list[Any]:
    now = await ctx.utcnow()
    guid = await ctx.new_guid()
    ctx.set_custom_status({"stage": 1})
    return [now.isoformat(), guid, ctx.get_custom_status()]


async def immediate(ctx: Ctx, x: Any) -> Any:
    return {"echo": x}


async def raises(ctx: Ctx, _: Any) -> None:
    raise ValueError("boom")


async def fan_out(ctx: Ctx, n: int) -> int:
    results = await ctx.join([ctx.schedule_activity("inc", i) for i in range(n)])
    return sum(results)


async def sub_orch(ctx: Ctx, x: int) -> Any:
    return await ctx.schedule_sub_orchestration("child", x)


async def detached(ctx: Ctx, _: Any) -> str:
    ctx.schedule_orchestration("bg", "bg-1", {"a": 1})
    return "ok"


ACTS = {"echo": lambda x: x, "inc": lambda x: x + 1}

# (orchestration, input, expected history kinds, expected output)
SHAPES: list[tuple[Callable[[Ctx, Any], Awaitable[Any]], Any, list[str], Any]] = [
    (immediate, 7, ["OrchestrationStarted", "OrchestrationCompleted"], {"echo": 7}),
    (one_activity, "hi", ["OrchestrationStarted", "ActivityScheduled", "ActivityCompleted",
                          "OrchestrationCompleted"], "hi"),
    (two_sequential, 1, ["OrchestrationStarted", "ActivityScheduled", "ActivityCompleted",
                         "ActivityScheduled", "ActivityCompleted", "OrchestrationCompleted"], 3),
    (with_timer, None, ["OrchestrationStarted", "TimerCreated", "TimerFired",
                        "OrchestrationCompleted"], "done"),
    (with_sleep, None, ["OrchestrationStarted", "TimerCreated", "TimerFired",
                        "OrchestrationCompleted"], "slept"),
    (fan_out, 3, ["OrchestrationStarted"] + ["ActivityScheduled"] * 3
     + ["ActivityCompleted"] * 3 + ["OrchestrationCompleted"], 6),
    (sub_orch, 4, ["OrchestrationStarted", "SubOrchestrationScheduled",
                   "SubOrchestrationCompleted", "OrchestrationCompleted"], 40),
    (detached, None, ["OrchestrationStarted", "DetachedOrchestrationScheduled",
                      "OrchestrationCompleted"], "ok"),
    (values, None, ["OrchestrationStarted", "UtcNowRecorded", "GuidRecorded", "CustomStatusSet",
                    "OrchestrationCompleted"],
     [datetime.fromtimestamp(START_US / 1e6, UTC).isoformat(),
      "00000000-0000-4000-8000-000000000001", {"stage": 1}]),
]


@pytest.mark.parametrize(("fn", "inp", "shape", "output"), SHAPES,
                         ids=[s[0].__name__ for s in SHAPES])
@pytest.mark.parametrize("batch", [False, True], ids=["one-per-turn", "batched"])
def test_history_shape(fn: Any, inp: Any, shape: list[str], output: Any, batch: bool) -> None:
    d = Driver(fn, activities=ACTS, children={"child": lambda x: x * 10})
    d.run(inp, batch=batch)
    assert kinds(d.history) == shape
    assert d.output == output
    assert [e.event_id for e in d.history] == list(range(1, len(shape) + 1))


def test_failure_outcome_names_error() -> None:
    d = Driver(raises)
    d.run()
    last = d.history[-1]
    assert last.kind == "OrchestrationFailed"
    assert (last.error_kind, last.error_type, last.message) == ("application", "ValueError", "boom")  # type: ignore[attr-defined]


def test_timer_fire_time_fixed_when_scheduled() -> None:
    d = Driver(with_timer)
    d.start()
    timer = d.history[1]
    assert isinstance(timer, TimerCreated)
    assert timer.fire_at == START_US // 1000 + 5000
    # Replaying a day later keeps the recorded fire time.
    d.execution = None
    r = d.turn([TimerFired(source_event_id=2, fire_at=timer.fire_at)], advance_ms=86_400_000)
    assert r.terminal is not None and r.terminal.kind == "OrchestrationCompleted"


def test_activity_failure_is_catchable_with_attributes() -> None:
    seen: list[Any] = []

    async def orch(ctx: Ctx, _: Any) -> str:
        try:
            await ctx.schedule_activity("bad", 1)
        except ActivityFailed as e:
            seen.append((e.activity_name, e.error_type, e.message, e.attempts))
            return "recovered: " + str(e)
        return "no"

    d = Driver(orch, activities={"bad": lambda x: (_ for _ in ()).throw(KeyError("missing"))})
    d.run()
    assert seen[-1] == ("bad", "KeyError", "'missing'", 1)
    assert "missing" in d.output


def test_event_raised_before_wait_is_kept_in_order() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[Any]:
        await ctx.schedule_timer(1)
        a = await ctx.schedule_wait("e")
        b = await ctx.wait_for_event("e")
        return [a, b]

    d = Driver(orch)
    d.start()
    d.raise_event("e", "first")
    d.raise_event("e", "second")
    assert d.execution is not None
    r = d.turn([TimerFired(source_event_id=2, fire_at=0)], advance_ms=1000)
    assert r.terminal is not None
    assert d.output == ["first", "second"]


def test_wait_for_event_typed_and_unrelated_names_ignored() -> None:
    d = Driver(wait_event)
    d.start()
    d.raise_event("other", 1)
    r = d.raise_event("approve", {"by": "ann"})
    assert r.terminal is not None and d.output == {"by": "ann"}


def test_replay_from_history_reproduces_decisions_exactly() -> None:
    d = Driver(two_sequential, activities=ACTS)
    d.run(10)
    # A cold execution fed the complete history (minus its outcome) decides the outcome again.
    cold = d.new_execution(d.history[:-1])
    r = cold.turn([], START_US)
    assert [e.kind for e in r.new_events] == ["OrchestrationCompleted"]
    assert codec.decode(r.new_events[0].output) == 12  # type: ignore[attr-defined]


def test_duplicate_and_unknown_completions_are_dropped() -> None:
    d = Driver(one_activity, activities=ACTS)
    d.start("x")
    dup = ActivityCompleted(source_event_id=2, result='"x"')
    r = d.turn([ActivityCompleted(source_event_id=99, result="1"), dup, dup])
    assert kinds(r.new_events) == ["ActivityCompleted", "OrchestrationCompleted"]


def test_trace_logged_once_not_on_replay(caplog: pytest.LogCaptureFixture) -> None:
    async def orch(ctx: Ctx, _: Any) -> None:
        ctx.trace_info("starting")
        await ctx.schedule_timer(1)
        ctx.trace_warn("after timer")

    caplog.set_level(logging.DEBUG, logger="duroxy")
    d = Driver(orch, check_cold=False)
    d.start()
    d.execution = None  # force a cold replay on the next turn
    d.turn([TimerFired(source_event_id=2, fire_at=0)], advance_ms=1000)
    messages = [(r.name, r.levelname, r.getMessage(), getattr(r, "instance_id", None))
                for r in caplog.records]
    assert messages == [("duroxy.orchestration", "INFO", "starting", "inst-1"),
                        ("duroxy.orchestration", "WARNING", "after timer", "inst-1")]


def test_continue_as_new_outcome_carries_input_and_version() -> None:
    async def orch(ctx: Ctx, n: int) -> None:
        ctx.set_custom_status({"n": n})
        await ctx.schedule_timer(1)
        ctx.continue_as_new(n + 1, version="2.0.0")

    d = Driver(orch)
    d.run(1)
    last = d.history[-1]
    assert last.kind == "OrchestrationContinuedAsNew"
    assert codec.decode(last.input) == 2 and last.version == "2.0.0"  # type: ignore[attr-defined]
    assert d.results[-1].custom_status == '{"n":1}'


def test_continue_as_new_not_swallowed_by_except_exception() -> None:
    async def orch(ctx: Ctx, n: int) -> str:
        try:
            ctx.continue_as_new(n + 1)
        except Exception:
            return "swallowed"
        return "unreachable"

    d = Driver(orch)
    d.run(0)
    assert d.history[-1].kind == "OrchestrationContinuedAsNew"


def test_new_execution_sees_carried_custom_status() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        return [ctx.get_custom_status(), ctx.execution_id]

    d = Driver(orch)
    d.turn([OrchestrationStarted(name="orch", input="null", execution_id=2,
                                 custom_status='{"n":5}')])
    assert d.output == [{"n": 5}, 2]


def test_context_properties() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        return [ctx.instance_id, ctx.orchestration_name, ctx.orchestration_version,
                ctx.parent_instance_id, ctx.is_replaying]

    d = Driver(orch, version="1.2.3")
    d.start(None, parent_instance_id="p-1")
    assert d.output == ["inst-1", "orch", "1.2.3", "p-1", False]


def test_retry_backoff_waits_are_durable_timers() -> None:
    calls: list[int] = []

    def flaky(x: int) -> int:
        calls.append(x)
        if len(calls) < 3:
            raise ConnectionError(f"try {len(calls)}")
        return x * 2

    async def orch(ctx: Ctx, x: int) -> int:
        policy = RetryPolicy(4).with_backoff(
            BackoffStrategy.Exponential(base=timedelta(seconds=2), multiplier=3.0, max=10))
        return int(await ctx.schedule_activity_with_retry("flaky", x, policy))

    d = Driver(orch, activities={"flaky": flaky})
    d.run(21)
    assert d.output == 42
    assert kinds(d.history)[1:] == [
        "ActivityScheduled", "ActivityFailed", "TimerCreated", "TimerFired",
        "ActivityScheduled", "ActivityFailed", "TimerCreated", "TimerFired",
        "ActivityScheduled", "ActivityCompleted", "OrchestrationCompleted"]
    scheduled = [e for e in d.history if e.kind == "ActivityScheduled"]
    assert [e.attempt for e in scheduled] == [1, 2, 3]  # type: ignore[attr-defined]
    timers = [e for e in d.history if isinstance(e, TimerCreated)]
    # waits: 2 s after attempt 1, 6 s after attempt 2 (exponential, multiplier 3)
    assert [t.fire_at - t.ts for t in timers] == [2000, 6000]


@pytest.mark.parametrize(("backoff", "waits"), [
    (BackoffStrategy.Fixed(delay=3), [3000, 3000, 3000]),
    (BackoffStrategy.Linear(base=timedelta(seconds=1), max=2.5), [1000, 2000, 2500]),
    (BackoffStrategy.Exponential(base=1, multiplier=2.0, max=3), [1000, 2000, 3000]),
])
def test_retry_exhausted_raises_last_error_with_attempts(backoff: Any, waits: list[int]) -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        try:
            await ctx.schedule_activity_with_retry("bad", None, RetryPolicy(4, backoff))
        except ActivityFailed as e:
            return [e.error_type, e.message, e.attempts]
        return None

    n = [0]

    def bad(_: Any) -> None:
        n[0] += 1
        raise RuntimeError(f"fail {n[0]}")

    d = Driver(orch, activities={"bad": bad})
    d.run()
    assert d.output == ["RuntimeError", "fail 4", 4]
    timers = [e for e in d.history if isinstance(e, TimerCreated)]
    assert [t.fire_at - t.ts for t in timers] == waits


def test_retry_timeout_cancels_attempt_and_counts_it() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        policy = RetryPolicy(2, BackoffStrategy.Fixed(delay=1), timeout=timedelta(seconds=10))
        try:
            await ctx.schedule_activity_with_retry("slow", None, policy)
        except ActivityFailed as e:
            return [e.error_type, e.attempts]
        return None

    d = Driver(orch)
    d.start()

    def fire_timers() -> Any:
        r = None
        for e in d.pending():
            if isinstance(e, TimerCreated):
                r = d.turn([TimerFired(source_event_id=e.event_id, fire_at=e.fire_at)],
                           advance_ms=10_000)
        return r

    for _ in range(6):
        r = fire_timers()
        if r is not None and r.terminal is not None:
            break
    assert d.output == ["TimeoutError", 2]
    cancelled = [e for e in d.history if e.kind == "WorkCancelled"]
    scheduled = [e.event_id for e in d.history if e.kind == "ActivityScheduled"]
    assert [c.source_event_id for c in cancelled] == scheduled  # type: ignore[attr-defined]
    assert sum(len(r.cancelled_activities) for r in d.results) == 2


def test_event_ids_and_timestamps_come_from_turn() -> None:
    d = Driver(one_activity, activities=ACTS)
    d.start(1)
    r = d.turn([ActivityCompleted(source_event_id=2, result="1")], advance_ms=250)
    assert [e.event_id for e in r.new_events] == [3, 4]
    assert {e.ts for e in r.new_events} == {START_US // 1000 + 250}


def test_unrelated_external_events_after_end_are_reported_undelivered() -> None:
    async def orch(ctx: Ctx, _: Any) -> None:
        await ctx.schedule_timer(1)
        ctx.continue_as_new(None)

    d = Driver(orch)
    d.start()
    r = d.turn([TimerFired(source_event_id=2, fire_at=0), EventRaised(name="x", data="1")])
    assert r.terminal is not None and r.terminal.kind == "OrchestrationContinuedAsNew"
    assert [e.kind for e in r.undelivered] == ["EventRaised"]


def test_events_never_waited_for_are_carried_over_by_continue_as_new() -> None:
    async def counter(ctx: Ctx, n: int) -> None:
        got = await ctx.schedule_wait("inc")
        await ctx.schedule_timer(1)
        ctx.continue_as_new(n + int(got))

    d = Driver(counter)
    d.start(0)
    d.turn([EventRaised(name="inc", data="1")])
    # Two more arrive while the timer runs, and one of another name: none is waited for.
    d.turn([EventRaised(name="inc", data="2"), EventRaised(name="other", data='"x"'),
            EventRaised(name="inc", data="3")])
    timer = next(e for e in d.history if isinstance(e, TimerCreated))
    r = d.turn([TimerFired(source_event_id=timer.event_id, fire_at=timer.fire_at),
                EventRaised(name="inc", data="4")])
    assert r.terminal is not None and r.terminal.kind == "OrchestrationContinuedAsNew"
    # In arrival order, the ones recorded first, then the one after the decision.
    assert [(e.name, e.data) for e in r.undelivered] == [  # type: ignore[attr-defined]
        ("inc", "2"), ("other", '"x"'), ("inc", "3"), ("inc", "4")]
    assert {e.event_id for e in r.undelivered} == {0}  # numbered by the next execution


def test_events_consumed_before_continue_as_new_are_not_carried_over() -> None:
    async def once(ctx: Ctx, _: Any) -> None:
        await ctx.schedule_wait("go")
        ctx.continue_as_new(None)

    d = Driver(once)
    d.start()
    r = d.turn([EventRaised(name="go", data="1")])
    assert r.terminal is not None and r.terminal.kind == "OrchestrationContinuedAsNew"
    assert r.undelivered == []


def test_start_time_of_request_is_kept_when_in_order() -> None:
    d = Driver(with_timer)
    asked_ms = START_US // 1000 - 40  # the client asked 40 ms before the turn ran
    d.turn([OrchestrationStarted(name="orch", input="null", ts=asked_ms)])
    started, timer = d.history[0], d.history[1]
    assert started.ts == asked_ms
    assert isinstance(timer, TimerCreated) and timer.fire_at == asked_ms + 5000
    # a time from the future (another host's clock) is not trusted
    d2 = Driver(with_timer)
    d2.turn([OrchestrationStarted(name="orch", input="null", ts=START_US // 1000 + 999)])
    assert d2.history[0].ts == START_US // 1000


@pytest.mark.parametrize("call", [
    lambda ctx: ctx.schedule_wait(5),
    lambda ctx: ctx.schedule_wait(""),
    lambda ctx: ctx.schedule_activity(3.5),
    lambda ctx: ctx.schedule_activity("bad\x00name"),
    lambda ctx: ctx.schedule_sub_orchestration(None),
])
def test_a_bad_name_raises_value_error_at_the_call(call: Any) -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        try:
            call(ctx)
        except ValueError as e:
            return ["ValueError", str(e)[:40]]
        return "no error"

    d = Driver(orch)
    d.start()
    out = d.output
    assert out[0] == "ValueError" and out[1], out
    assert "ActivityScheduled" not in kinds(d.history)  # nothing was recorded


@pytest.mark.parametrize("delay", [float("inf"), float("nan"), 1e30, -1])
def test_a_timer_that_could_never_fire_is_refused_at_the_call(delay: float) -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        try:
            ctx.schedule_timer(delay)
        except ValueError as e:
            return str(e)
        return "accepted"

    d = Driver(orch)
    d.start()
    assert "delay" in d.output
    assert "TimerCreated" not in kinds(d.history)


def test_asyncio_sleep_forever_fails_clearly() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        await asyncio.sleep(float("inf"))

    d = Driver(orch)
    d.start()
    last = d.history[-1]
    assert last.kind == "OrchestrationFailed"
    assert "timer delay" in last.message  # type: ignore[attr-defined]


def test_a_plain_def_orchestration_fails_saying_it_must_be_async() -> None:
    def not_async(ctx: Ctx, x: Any) -> str:
        return "value"

    d = Driver(not_async)
    d.start()
    last = d.history[-1]
    assert last.kind == "OrchestrationFailed"
    assert "must be an async def" in last.message  # type: ignore[attr-defined]
    assert "not_async" in last.message  # type: ignore[attr-defined]

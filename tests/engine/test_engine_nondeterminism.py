"""Code that disagrees with its history fails the instance, naming both sides."""

from __future__ import annotations

from typing import Any

import pytest

from duroxy._engine import OrchestrationContext
from duroxy.history import ActivityCompleted, TimerFired
from enginekit import Driver

Ctx = OrchestrationContext


async def original(ctx: Ctx, _: Any) -> Any:
    a = await ctx.schedule_activity("reserve", {"n": 1})
    await ctx.schedule_timer(5)
    return a


async def other_kind(ctx: Ctx, _: Any) -> Any:
    await ctx.schedule_timer(5)
    return None


async def other_name(ctx: Ctx, _: Any) -> Any:
    return await ctx.schedule_activity("create", {"n": 1})


async def other_input(ctx: Ctx, _: Any) -> Any:
    return await ctx.schedule_activity("reserve", {"n": 2})


async def missing_step(ctx: Ctx, _: Any) -> Any:
    return "nothing scheduled"


async def extra_step(ctx: Ctx, _: Any) -> Any:
    # schedules a second activity before the first one's completion was seen
    a = ctx.schedule_activity("reserve", {"n": 1})
    ctx.schedule_activity("audit")
    return await a


async def waits_after(ctx: Ctx, _: Any) -> Any:
    await ctx.schedule_activity("reserve")
    return await ctx.schedule_wait("go")


async def waits_then_extra(ctx: Ctx, _: Any) -> Any:
    r = ctx.schedule_activity("reserve")
    w = ctx.schedule_wait("go")
    ctx.schedule_activity("audit")  # the original never scheduled this before event 3
    await r
    return await w


CASES = [
    (other_kind, "expected activity 'reserve' at event 2, code scheduled timer"),
    (other_name, "expected activity 'reserve' at event 2, code scheduled activity 'create'"),
    (other_input, "expected activity 'reserve' at event 2, code scheduled activity 'reserve' "
                  "with a different input '{\"n\":2}' (history: '{\"n\":1}')"),
    (missing_step, "history has activity 'reserve' at event 2, but the code ended before"),
    (extra_step, "expected timer at event 4, code scheduled activity 'audit'"),
]


@pytest.mark.parametrize(("changed", "needle"), CASES, ids=[c[0].__name__ for c in CASES])
def test_code_change_is_reported_as_nondeterminism(changed: Any, needle: str) -> None:
    d = Driver(original)
    d.start()
    d.turn([ActivityCompleted(source_event_id=2, result='"ok"')])
    # deploy changed code under the running instance: a cold replay detects it
    d.fn = changed
    d.execution = None
    d.check_cold = False
    r = d.turn([TimerFired(source_event_id=4, fire_at=0)])
    last = r.new_events[-1]
    assert last.kind == "OrchestrationFailed"
    assert last.error_kind == "nondeterminism"  # type: ignore[attr-defined]
    assert needle in last.message  # type: ignore[attr-defined]
    assert "code changed" in last.message  # type: ignore[attr-defined]


def test_nondeterminism_not_swallowed_by_except_exception() -> None:
    async def sneaky(ctx: Ctx, _: Any) -> Any:
        try:
            await ctx.schedule_timer(1)
        except Exception:
            return "hidden"
        return "ran"

    d = Driver(original)
    d.start()
    d.fn = sneaky
    d.execution = None
    d.check_cold = False
    r = d.turn([ActivityCompleted(source_event_id=2, result='"ok"')])
    assert r.new_events[-1].kind == "OrchestrationFailed"
    assert r.new_events[-1].error_kind == "nondeterminism"  # type: ignore[attr-defined]


def test_unchanged_code_replays_cleanly_after_restart() -> None:
    d = Driver(original)
    d.start()
    d.turn([ActivityCompleted(source_event_id=2, result='"ok"')])
    d.execution = None  # restart: cold replay of the same code
    r = d.turn([TimerFired(source_event_id=4, fire_at=0)])
    assert r.terminal is not None and r.terminal.kind == "OrchestrationCompleted"


def test_extra_step_before_recorded_completion() -> None:
    d = Driver(waits_after)
    d.start()
    d.turn([ActivityCompleted(source_event_id=2, result="null")])
    d.fn = waits_then_extra
    d.execution = None
    d.check_cold = False
    r = d.raise_event("go", 1)
    last = r.new_events[-1]
    assert last.kind == "OrchestrationFailed"
    assert "code scheduled activity 'audit', which history does not have before event 3" in (
        last.message)  # type: ignore[attr-defined]

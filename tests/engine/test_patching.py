"""Patching code in place (API.md section 11): ``ctx.is_patched`` and
``ctx.deprecate_patch``. New executions take the new branch and record a marker; replays
of executions recorded before the change take the old one; markers are looked up by
id, never matched by position."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from duroxy import (
    ActivityContext,
    ActivityRegistry,
    OrchestrationContext,
    OrchestrationRegistry,
    RuntimeOptions,
)
from duroxy.history import ActivityScheduled, ExecutionHistory, HistoryEvent, PatchRecorded
from duroxy.testing import OrchestrationEnvironment, Replayer
from enginekit import Driver, kinds

answers: list[bool] = []


def activities(history: list[HistoryEvent]) -> list[str]:
    return [e.input.strip('"') for e in history  # type: ignore[union-attr]
            if isinstance(e, ActivityScheduled)]


async def old(ctx: OrchestrationContext, _: Any) -> str:
    await ctx.schedule_activity("reserve", "r")
    await ctx.schedule_wait("go")
    await ctx.schedule_activity("ship", "s")
    return "done"


async def patched(ctx: OrchestrationContext, _: Any) -> str:
    if ctx.is_patched("add-quota-check"):
        await ctx.schedule_activity("check_quota", "q")
    await ctx.schedule_activity("reserve", "r")
    await ctx.schedule_wait("go")
    answers.append(ctx.is_patched("add-quota-check"))  # asked again: the same answer
    await ctx.schedule_activity("ship", "s")
    return "done"


async def deprecated(ctx: OrchestrationContext, _: Any) -> str:
    ctx.deprecate_patch("add-quota-check")
    await ctx.schedule_activity("check_quota", "q")
    await ctx.schedule_activity("reserve", "r")
    await ctx.schedule_wait("go")
    await ctx.schedule_activity("ship", "s")
    return "done"


async def cleaned(ctx: OrchestrationContext, _: Any) -> str:
    await ctx.schedule_activity("check_quota", "q")
    await ctx.schedule_activity("reserve", "r")
    await ctx.schedule_wait("go")
    await ctx.schedule_activity("ship", "s")
    return "done"


async def patched_late(ctx: OrchestrationContext, _: Any) -> str:
    """The patch asked where the code first runs live after an old history's turn."""
    await ctx.schedule_activity("reserve", "r")
    await ctx.schedule_wait("go")
    if ctx.is_patched("late"):
        await ctx.schedule_activity("audit", "a")
    await ctx.schedule_activity("ship", "s")
    return "done"


ACTS = {"reserve": lambda x: x, "ship": lambda x: x, "check_quota": lambda x: x,
        "audit": lambda x: x}


def recorded(fn: Callable[..., Any]) -> Driver:
    """Run ``fn`` up to its wait for "go": the history of an instance still running."""
    d = Driver(fn, activities=dict(ACTS))
    d.start()
    for _ in range(4):
        pend = d.pending()
        if not pend:
            break
        d.turn([d.complete(pend[0])], advance_ms=1)
    return d


def go_on(d: Driver, fn: Callable[..., Any]) -> Driver:
    """The same history, continued by ``fn`` (a new deployment: a cold replay)."""
    later = Driver(fn, activities=dict(ACTS), history=list(d.history), now_us=d.now_us)
    later.raise_event("go")
    for _ in range(4):
        pend = later.pending()
        if not pend:
            break
        later.turn([later.complete(pend[0])], advance_ms=1)
    return later


def test_a_new_execution_takes_the_new_branch_and_records_a_marker() -> None:
    answers.clear()
    d = go_on(recorded(patched), patched)
    assert d.output == "done"
    assert activities(d.history) == ["q", "r", "s"]
    markers = [e for e in d.history if isinstance(e, PatchRecorded)]
    assert len(markers) == 1  # memoised: the second call recorded nothing
    assert (markers[0].change_id, markers[0].deprecated) == ("add-quota-check", False)
    assert not PatchRecorded.is_decision
    assert answers and set(answers) == {True}  # (every run, cold replays included)


def test_an_execution_recorded_before_the_patch_replays_the_old_branch() -> None:
    answers.clear()
    d = go_on(recorded(old), patched)  # (the driver also checks every cold replay)
    assert d.output == "done"
    assert activities(d.history) == ["r", "s"]
    assert not [e for e in d.history if isinstance(e, PatchRecorded)]
    # the first answer holds: asked again once the code runs live, still the old path
    assert answers and set(answers) == {False}


def test_a_patch_first_reached_live_takes_the_new_branch() -> None:
    d = go_on(recorded(old), patched_late)
    assert activities(d.history) == ["r", "a", "s"]
    assert [e.change_id for e in d.history if isinstance(e, PatchRecorded)] == ["late"]


def test_markers_are_not_matched_by_position() -> None:
    # recorded with deprecate_patch: the marker stands first; code without the call,
    # and code asking about it elsewhere, both replay
    history = recorded(deprecated)
    assert kinds(history.history)[:3] == ["OrchestrationStarted", "PatchRecorded",
                                          "ActivityScheduled"]
    assert next(e for e in history.history if isinstance(e, PatchRecorded)).deprecated
    assert go_on(history, cleaned).output == "done"
    assert go_on(history, patched).output == "done"
    # deprecate_patch never fails: on a history without the marker either
    assert go_on(recorded(patched), deprecated).output == "done"


async def test_a_marker_left_behind_is_passed_by() -> None:
    """The code that recorded a marker is gone (``deprecate_patch`` removed): the marker
    stands where no call asks about it, ahead of what the code does next. Replay neither
    waits for it nor counts it as something the code skipped."""
    async def marks_and_ends(ctx: OrchestrationContext, _: Any) -> str:
        ctx.deprecate_patch("gone")
        return "done"

    async def ends(ctx: OrchestrationContext, _: Any) -> str:
        return "done"

    async def marks_then_two(ctx: OrchestrationContext, _: Any) -> Any:
        ctx.deprecate_patch("gone")
        return await ctx.schedule_activity("reserve", "r")

    async def two_at_once(ctx: OrchestrationContext, _: Any) -> Any:
        # past the recorded history (a new decision) while the marker is not reached
        return await ctx.join(ctx.schedule_activity("reserve", "r"),
                              ctx.schedule_activity("audit", "a"))

    ended = Driver(marks_and_ends)
    ended.start()
    assert kinds(ended.history) == ["OrchestrationStarted", "PatchRecorded",
                                    "OrchestrationCompleted"]
    waiting = Driver(marks_then_two, activities=dict(ACTS))
    waiting.start()
    assert kinds(waiting.history) == ["OrchestrationStarted", "PatchRecorded",
                                      "ActivityScheduled"]
    for fn, history in ((ends, ended.history), (two_at_once, waiting.history)):
        replayer = Replayer(OrchestrationRegistry.builder().register("orch", fn).build())
        result = await replayer.replay_history(ExecutionHistory(
            "inst-1", 1, "orch", "1.0.0", tuple(history)), raise_on_failure=False)
        assert result.ok, result.message


def test_old_code_replaying_a_patched_history_fails_on_the_first_difference() -> None:
    d = recorded(patched)
    later = Driver(old, activities=dict(ACTS), history=list(d.history), now_us=d.now_us,
                   check_cold=False)
    result = later.raise_event("go")
    failed = result.new_events[-1]
    assert failed.kind == "OrchestrationFailed"
    message = failed.message  # type: ignore[attr-defined]
    assert "expected activity 'check_quota' at event 3, code scheduled activity " \
           "'reserve'" in message


@pytest.mark.parametrize("bad", ["", "a\x00b", "x" * 1025])
def test_a_bad_change_id_is_refused(bad: str) -> None:
    async def asks(ctx: OrchestrationContext, _: Any) -> Any:
        try:
            ctx.is_patched(bad)
        except ValueError as e:
            first = str(e)
        try:
            ctx.deprecate_patch(bad)
        except ValueError as e:
            return [first, str(e)]
        return None

    d = Driver(asks)
    d.start()
    assert all("change_id" in m for m in d.output)


# ================================================================ end to end
calls: list[str] = []


async def act(ctx: ActivityContext, what: str) -> str:
    calls.append(what)
    return what


async def eternal(ctx: OrchestrationContext, n: int) -> Any:
    await ctx.schedule_activity("act", f"quota {n}" if ctx.is_patched("quota") else f"n {n}")
    if n < 2:
        ctx.continue_as_new(n + 1)
    return n


async def eternal_old(ctx: OrchestrationContext, n: int) -> Any:
    await ctx.schedule_activity("act", f"n {n}")
    if n < 2:
        ctx.continue_as_new(n + 1)
    return n


async def test_patched_code_in_a_runtime_and_in_the_replayer() -> None:
    """Executions recorded by the old code replay with the patched code (the old branch);
    new executions of the same instance take the new one (continue-as-new decides
    anew); every turn replays cold (no cache)."""
    acts = ActivityRegistry.builder().register("act", act).build()
    new_code = OrchestrationRegistry.builder().register("eternal", eternal).build()
    old_code = OrchestrationRegistry.builder().register("eternal", eternal_old).build()
    calls.clear()
    async with OrchestrationEnvironment(acts, old_code) as env:
        await env.client.start_orchestration("e-old", "eternal", 1)
        await env.client.wait_for_orchestration("e-old", timeout=5)
        old_histories = [await env.client.export_history("e-old", x) for x in (1, 2)]
    assert calls == ["n 1", "n 2"]
    report = await Replayer(new_code).replay(old_histories)
    assert report.ok, str(report)
    calls.clear()
    options = RuntimeOptions(cache_size=0)
    async with OrchestrationEnvironment(acts, new_code, options=options) as env:
        await env.client.start_orchestration("e-new", "eternal", 1)
        status = await env.client.wait_for_orchestration("e-new", timeout=5)
        assert status.output == 2
        new_histories = [await env.client.export_history("e-new", x) for x in (1, 2)]
    assert calls == ["quota 1", "quota 2"]
    for h in new_histories:
        assert [e.change_id for e in h.events if isinstance(e, PatchRecorded)] == ["quota"]
    assert (await Replayer(new_code).replay(new_histories)).ok
    # old code cannot replay what the patched code recorded
    report = await Replayer(old_code).replay(new_histories)
    assert [r.kind for r in report.results] == ["nondeterminism", "nondeterminism"]

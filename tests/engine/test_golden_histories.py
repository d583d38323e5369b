"""Golden histories: stored histories that the engine must keep producing, byte for byte.

Each ``tests/golden/*.json`` file names one of the orchestrations below, its instance
id and input, the *message* events fed to it turn by turn (with each turn's time), and
the complete history those turns produced when the file was written. The tests feed
the recorded turns to a fresh execution and compare the history it produces with the
stored one, event by event, as encoded JSON text. So any change to the engine or to the
wire format that would alter what is stored for an existing instance fails here;
stored histories of running instances must keep replaying after an upgrade.

``tests/golden/make_golden.py`` writes the files; run it only for an intentional
change of the history format (and bump ``FORMAT_VERSION`` when old readers could not
read the new form).
"""

from __future__ import annotations

import asyncio
import difflib
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from duroxy import codec
from duroxy._engine import OrchestrationContext, OrchestrationExecution, TurnResult
from duroxy.errors import ActivityFailed, SubOrchestrationFailed
from duroxy.history import (
    FORMAT_VERSION,
    GuidRecorded,
    HistoryEvent,
    OrchestrationStarted,
    decode_event,
    encode_event,
    event_from_json,
    event_to_json,
)
from duroxy.options import BackoffStrategy, RetryPolicy

Ctx = OrchestrationContext
GOLDEN_DIR = Path(__file__).parents[1] / "golden"


# ======================================================================== orchestrations
# Changing any of these changes the histories they produce: regenerate deliberately.
async def activity(ctx: Ctx, inp: dict[str, Any]) -> dict[str, Any]:
    ctx.trace_info(f"provisioning {inp['name']}")
    vm = await ctx.schedule_activity("provision", {"name": inp["name"], "size": 2})
    ip = await ctx.schedule_activity("assign_ip", vm)
    return {"vm": vm, "ip": ip}


async def timer(ctx: Ctx, _: Any) -> str:
    await ctx.schedule_timer(timedelta(seconds=30))
    await asyncio.sleep(1.5)  # a durable timer too
    return "woke"


async def retry(ctx: Ctx, order: int) -> Any:
    policy = RetryPolicy(4).with_backoff(
        BackoffStrategy.Exponential(base=timedelta(seconds=1), multiplier=2.0, max=3))
    return await ctx.schedule_activity_with_retry("charge", {"order": order}, policy)


async def select(ctx: Ctx, _: Any) -> list[Any]:
    # The timer wins both races: the losing activity and child get a WorkCancelled
    # breadcrumb; then an event beats a timer.
    first = await ctx.select2(ctx.schedule_activity("slow", 1), ctx.schedule_timer(10))
    second = await ctx.select2(ctx.schedule_sub_orchestration("child", 2, instance_id="kid"),
                               ctx.schedule_timer(5))
    third = await ctx.select(ctx.schedule_timer(60), ctx.schedule_wait("go"))
    return [list(first), list(second), list(third)]


async def external_event(ctx: Ctx, _: Any) -> list[Any]:
    first = await ctx.schedule_wait("approval")  # raised before the wait: kept
    await ctx.schedule_timer(1)
    second = await ctx.wait_for_event("note")
    third = await ctx.schedule_wait("note")
    return [first, second, third]


async def sub_orchestration(ctx: Ctx, n: int) -> Any:
    ctx.schedule_orchestration("audit", "audit-1", {"n": n})  # detached
    a = ctx.schedule_sub_orchestration("child", n)  # default id derived from the parent's
    b = ctx.schedule_sub_orchestration("child", n + 1, instance_id="child-b", version="1.0.2")
    results = await ctx.join(a, b)
    try:
        await ctx.schedule_sub_orchestration("failing_child", n)
    except SubOrchestrationFailed as e:
        results.append([e.orchestration_name, e.instance_id, e.error_type, e.message])
    return results


async def child(ctx: Ctx, n: int) -> dict[str, Any]:
    return {"n": n * 10, "parent": ctx.parent_instance_id}


async def continue_as_new(ctx: Ctx, n: int) -> Any:
    seen = ctx.get_custom_status()
    ctx.set_custom_status({"round": n, "seen": seen})
    await ctx.schedule_timer(2)
    if n < 1:
        ctx.continue_as_new(n + 1, version="2.0.0")
    return await ctx.schedule_wait("carried")


async def values(ctx: Ctx, _: Any) -> list[Any]:
    t1 = await ctx.utcnow()
    g1 = await ctx.new_guid()
    await ctx.schedule_timer(3)
    t2 = await ctx.utcnow()
    g2 = await ctx.new_guid()
    return [t1.isoformat(), g1, t2.isoformat(), g2, (t2 - t1).total_seconds()]


async def custom_status(ctx: Ctx, _: Any) -> Any:
    ctx.set_custom_status("started")
    await ctx.schedule_activity("step", 1)
    ctx.set_custom_status({"stage": "ünïcode ✓", "big": 2**70, "ratio": 0.1, "list": [1, None]})
    await ctx.schedule_activity("step", 2)
    ctx.set_custom_status(None)
    return ctx.get_custom_status()


async def cancellation(ctx: Ctx, _: Any) -> str:
    await ctx.schedule_activity("reserve", "room-7")
    try:
        await ctx.schedule_activity("long_job", "room-7")
    except asyncio.CancelledError:
        await ctx.schedule_activity("release", "room-7")  # compensation
        raise
    return "not reached"


async def failure(ctx: Ctx, _: Any) -> None:
    try:
        await ctx.schedule_activity("validate", {"id": 42})
    except ActivityFailed as e:
        ctx.set_custom_status({"caught": e.error_type, "attempts": e.attempts})
    await ctx.schedule_activity("submit", {"id": 42})  # fails, uncaught


async def fan_out(ctx: Ctx, n: int) -> list[Any]:
    joined = await ctx.join([ctx.schedule_activity("square", i) for i in range(n)])
    gathered = await asyncio.gather(ctx.schedule_activity("square", 10), asyncio.sleep(1))
    return [joined, gathered]


ORCHESTRATIONS: dict[str, Callable[..., Any]] = {
    fn.__name__: fn for fn in (activity, timer, retry, select, external_event,
                               sub_orchestration, child, continue_as_new, values,
                               custom_status, cancellation, failure, fan_out)
}


# ======================================================================== machinery
def new_execution(orchestration: str, instance_id: str,
                  history: Sequence[HistoryEvent] = ()) -> OrchestrationExecution:
    """An execution with deterministic guids: the k-th guid drawn for an instance's
    execution is number k (replayed calls draw none)."""
    calls = itertools.count(1 + sum(isinstance(e, GuidRecorded) for e in history))
    return OrchestrationExecution(
        ORCHESTRATIONS[orchestration], instance_id=instance_id, history=history,
        new_guid=lambda: f"00000000-0000-4000-8000-{next(calls):012d}")


def compact(obj: Any) -> str:
    """The encoded text of a stored JSON object, as ``encode_event`` writes it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def message_json(event: HistoryEvent) -> dict[str, Any]:
    """A message event as stored in a golden file (no id or time: the turn gives them)."""
    return event_to_json(event)


@dataclass
class Golden:
    path: Path
    orchestration: str
    instance_id: str
    input: Any
    turns: list[tuple[int, list[HistoryEvent]]]  # (now_us, message events)
    history: list[dict[str, Any]]
    data: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> Golden:
        data = json.loads(path.read_text(encoding="utf-8"))
        turns = [(t["now_us"], [event_from_json(e) for e in t["events"]])
                 for t in data["turns"]]
        return cls(path, data["orchestration"], data["instance_id"], data["input"], turns,
                   data["history"], data)

    def encoded_history(self) -> list[str]:
        return [compact(e) for e in self.history]

    def events(self) -> list[HistoryEvent]:
        return [decode_event(text) for text in self.encoded_history()]


def replay_turns(orchestration: str, instance_id: str,
                 turns: Sequence[tuple[int, Sequence[HistoryEvent]]]
                 ) -> tuple[list[HistoryEvent], list[TurnResult]]:
    """Feed ``turns`` to one live execution, checking on every turn that a cold replay
    of the history so far decides the same, and that at every boundary a replay with no
    new events decides nothing."""
    live = new_execution(orchestration, instance_id)
    history: list[HistoryEvent] = []
    results: list[TurnResult] = []
    for now_us, events in turns:
        assert live.finished is False, "turns recorded after the execution ended"
        cold = new_execution(orchestration, instance_id, history).turn(events, now_us)
        result = live.turn(events, now_us)
        assert [encode_event(e) for e in cold.new_events] == [
            encode_event(e) for e in result.new_events], "cold replay decided differently"
        assert cold.cancelled_activities == result.cancelled_activities
        assert cold.cancelled_children == result.cancelled_children
        history.extend(result.new_events)
        results.append(result)
        if result.terminal is None:
            idle = new_execution(orchestration, instance_id, history).turn([], now_us)
            assert idle.new_events == []
    return history, results


def golden_files() -> list[Path]:
    return sorted(GOLDEN_DIR.glob("*.json"))


GOLDEN_IDS = [p.stem for p in golden_files()]


# ======================================================================== tests
def test_every_orchestration_has_a_golden_file() -> None:
    covered = {Golden.load(p).orchestration for p in golden_files()}
    assert covered == set(ORCHESTRATIONS)


@pytest.mark.parametrize("path", golden_files(), ids=GOLDEN_IDS)
def test_golden_file_is_current_format(path: Path) -> None:
    g = Golden.load(path)
    assert g.data["format_version"] == FORMAT_VERSION
    assert g.orchestration in ORCHESTRATIONS
    for obj, text in zip(g.history, g.encoded_history(), strict=True):
        assert obj["v"] == FORMAT_VERSION
        event = decode_event(text)
        assert encode_event(event) == text  # decoding loses nothing
        assert event.kind == obj["k"]
    # The first message starts the execution with the recorded input.
    started = g.turns[0][1][0]
    assert isinstance(started, OrchestrationStarted)
    assert codec.decode(started.input) == g.input
    for _, events in g.turns:
        for event in events:
            assert (event.event_id, event.ts) == (0, 0)  # messages are numbered by turns


@pytest.mark.parametrize("path", golden_files(), ids=GOLDEN_IDS)
def test_recorded_turns_produce_the_golden_history(path: Path) -> None:
    g = Golden.load(path)
    history, _results = replay_turns(g.orchestration, g.instance_id, g.turns)
    produced = [encode_event(e) for e in history]
    expected = g.encoded_history()
    if produced != expected:
        diff = "\n".join(difflib.unified_diff(expected, produced, "golden", "produced",
                                              lineterm=""))
        pytest.fail(f"{path.name}: the engine no longer produces the stored history. If "
                    "the change is intended, regenerate with tests/golden/make_golden.py."
                    f"\n{diff}")
    # The history ends with the execution's outcome.
    assert history[-1].kind in ("OrchestrationCompleted", "OrchestrationFailed",
                                "OrchestrationCancelled", "OrchestrationContinuedAsNew")


@pytest.mark.parametrize("path", golden_files(), ids=GOLDEN_IDS)
def test_cold_replay_of_golden_history_decides_the_rest(path: Path) -> None:
    """A fresh execution fed the stored history up to the last event that unblocked the
    code decides exactly the stored remainder (trailing decisions and the outcome)."""
    g = Golden.load(path)
    events = g.events()
    cut = max(i for i, e in enumerate(events[:-1]) if not e.is_decision) + 1
    now_us = g.turns[-1][0]
    result = new_execution(g.orchestration, g.instance_id, events[:cut]).turn([], now_us)
    assert [encode_event(e) for e in result.new_events] == g.encoded_history()[cut:]


@pytest.mark.parametrize("path", golden_files(), ids=GOLDEN_IDS)
def test_cold_replay_of_whole_golden_history_decides_nothing(path: Path) -> None:
    g = Golden.load(path)
    now_us = g.turns[-1][0]
    result = new_execution(g.orchestration, g.instance_id, g.events()).turn([], now_us)
    assert [e.kind for e in result.new_events] == []

"""The orchestration's clock: ``utcnow()``, ``loop.time()``, ``asyncio.sleep`` and timer
fire times read one time, the time of the event being delivered, which never runs
backwards and never precedes a timer's fire time. Tables of turns, no runtime."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

import pytest

from duroxy import MAX_CARRY_FORWARD_EVENTS, codec
from duroxy._engine import OrchestrationContext
from duroxy.history import EventRaised, OrchestrationStarted, TimerCreated, TimerFired
from enginekit import START_US, Driver

START_MS = START_US // 1000


def _us(t: datetime) -> int:
    return round(t.timestamp() * 1_000_000)


async def around_sleep(ctx: OrchestrationContext, delay: float) -> list[int]:
    before = await ctx.utcnow()
    await asyncio.sleep(delay)
    after = await ctx.utcnow()
    return [_us(before), _us(after)]


async def around_timer(ctx: OrchestrationContext, delay: float) -> list[int]:
    before = await ctx.utcnow()
    await ctx.schedule_timer(delay)
    after = await ctx.utcnow()
    return [_us(before), _us(after)]


def _fire(d: Driver, *, early_ms: int = 0, late_ms: int = 0) -> None:
    """Fire the pending timer, with the turn's clock ``early_ms`` before its fire time
    (a store whose clock runs ahead released it) or ``late_ms`` after."""
    (created,) = [e for e in d.pending() if isinstance(e, TimerCreated)]
    d.now_us = (created.fire_at - early_ms + late_ms) * 1000
    d.turn([TimerFired(source_event_id=created.event_id, fire_at=created.fire_at)])


@pytest.mark.parametrize("fn", [around_sleep, around_timer], ids=["sleep", "timer"])
@pytest.mark.parametrize("early_ms", [0, 1, 30, 500])
@pytest.mark.parametrize("delay", [0.0004, 0.01, 0.1, 0.3, 1.0, 2.5, 7.0 / 3])
def test_utcnow_after_a_wait_is_at_least_the_delay_later(fn: Any, early_ms: int,
                                                          delay: float) -> None:
    # The client asked 50 ms before the first turn ran: the start carries that time.
    d = Driver(fn)
    d.now_us = START_US + 50_000
    d.turn([OrchestrationStarted(name="orch", version="1.0.0", input=codec.encode(delay),
                                 ts=START_MS)])
    _fire(d, early_ms=early_ms)
    before, after = d.output
    assert after - before >= delay * 1_000_000
    # and not more than the rounding up to a whole millisecond, plus what the turn
    # saw when it was released late (none here)
    assert after - before < delay * 1_000_000 + 1000
    (fired,) = [e for e in d.history if isinstance(e, TimerFired)]
    assert fired.ts >= fired.fire_at
    times = [e.ts for e in d.history]
    assert times == sorted(times)


def test_a_timer_released_late_gives_the_turn_time() -> None:
    d = Driver(around_timer)
    d.turn([OrchestrationStarted(name="orch", version="1.0.0", input=codec.encode(1.0))])
    _fire(d, late_ms=40)
    before, after = d.output
    assert after - before == 1_040_000


@pytest.mark.parametrize(("delay", "expected_ms"), [
    (0.0001, 1), (0.0005, 1), (0.001, 1), (0.0011, 2), (0.1, 100), (0.3, 300),
    (1.0, 1000), (7.0 / 3, 2334), (timedelta(milliseconds=1, microseconds=1), 2),
])
def test_fire_times_are_rounded_up_to_the_millisecond(delay: Any, expected_ms: int) -> None:
    async def orch(ctx: OrchestrationContext, _: Any) -> None:
        await ctx.schedule_timer(delay)

    d = Driver(orch)
    d.start()
    (created,) = [e for e in d.history if isinstance(e, TimerCreated)]
    assert created.fire_at - START_MS == expected_ms


def test_loop_time_utcnow_and_timers_share_one_clock() -> None:
    seen: list[tuple[float, int]] = []

    async def orch(ctx: OrchestrationContext, _: Any) -> list[int]:
        loop = asyncio.get_running_loop()
        for _round in range(3):
            now = await ctx.utcnow()
            seen.append((loop.time(), _us(now)))
            # wait_for and timeout compute their deadlines from loop.time()
            try:
                async with asyncio.timeout(0.25):
                    await ctx.schedule_wait("never")
            except TimeoutError:
                pass
        return []

    d = Driver(orch, check_cold=False)
    d.now_us = START_US + 7_000
    d.turn([OrchestrationStarted(name="orch", version="1.0.0", input="null", ts=START_MS)])
    for _round in range(3):
        _fire(d, early_ms=3)
    for loop_time, now_us in seen:
        assert round(loop_time * 1_000_000) == now_us
    fires = [e.fire_at for e in d.history if isinstance(e, TimerCreated)]
    assert [f - START_MS for f in fires] == [250, 500, 750]


# ------------------------------------------------------------------ carry-over cap
async def never_reads(ctx: OrchestrationContext, n: int) -> str:
    if n == 0:
        ctx.continue_as_new(1)
    return "done"


def _carry(raised: int) -> tuple[list[str], list[str]]:
    d = Driver(never_reads, check_cold=False)
    d.now_us = START_US
    events = [EventRaised(name=f"e{i}", data=codec.encode(i)) for i in range(raised)]
    start = OrchestrationStarted(name="orch", version="1.0.0", input=codec.encode(0))
    result = d.turn([*events[: raised // 2], start, *events[raised // 2:]])
    assert result.terminal is not None and result.terminal.kind == "OrchestrationContinuedAsNew"
    return ([e.name for e in result.undelivered],  # type: ignore[attr-defined]
            [e.name for e in result.dropped])  # type: ignore[attr-defined]


@pytest.mark.parametrize("raised", [0, 1, 99, 100, 101, 250])
def test_continue_as_new_carries_the_oldest_unread_events_up_to_the_cap(raised: int) -> None:
    # Half arrived before the start (buffered), half after the execution ended.
    carried, dropped = _carry(raised)
    names = [f"e{i}" for i in range(raised)]
    assert MAX_CARRY_FORWARD_EVENTS == 100
    assert carried == names[:MAX_CARRY_FORWARD_EVENTS]
    assert dropped == names[MAX_CARRY_FORWARD_EVENTS:]


def test_a_finished_execution_drops_nothing_into_the_carry() -> None:
    async def ends(ctx: OrchestrationContext, _: Any) -> str:
        return "done"

    d = Driver(ends)
    events = [EventRaised(name=f"e{i}", data="1") for i in range(150)]
    result = d.turn([OrchestrationStarted(name="orch", version="1.0.0", input="null"),
                     *events])
    assert result.dropped == []  # not a carry: a finished instance discards them


def test_dropped_events_are_logged_one_warning_each(caplog: pytest.LogCaptureFixture) -> None:
    from duroxy.runtime.orchestrations import _report_dropped

    d = Driver(never_reads, check_cold=False)
    events = [EventRaised(name=f"e{i}", data="1") for i in range(103)]
    result = d.turn([OrchestrationStarted(name="orch", version="1.0.0", input="0"), *events])
    with caplog.at_level(logging.WARNING, logger="duroxy.orchestration"):
        _report_dropped("inst-1", result)
    records = [r for r in caplog.records if r.name == "duroxy.orchestration"]
    assert len(records) == 3
    for record, name in zip(records, ["e100", "e101", "e102"], strict=True):
        text = record.getMessage()
        assert "'inst-1'" in text and repr(name) in text and "100" in text

"""Waking the PostgreSQL server before a due time (``_waking.py``): when a wake-up runs,
when none does, and that the store runs one before a timer it committed falls due."""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("psycopg")

from duroxy.providers.postgres._waking import BUSY_S, WAKE_AHEAD_S, Waker
from duroxy.testing.provider_suite.support import commit, create, fetch_one, started, uid


class Wakes:
    """A Waker's statement, recording when it ran, and its store's last statement."""

    def __init__(self) -> None:
        self.at: list[float] = []
        self.last = 0.0
        self.ran = asyncio.Event()

    async def wake(self) -> None:
        self.at.append(time.time())
        self.ran.set()

    def waker(self) -> Waker:
        return Waker(self.wake, lambda: self.last)


async def test_one_wake_up_runs_shortly_before_the_due_time() -> None:
    w = Wakes()
    waker = w.waker()
    due = time.time() + 0.15
    at = due - WAKE_AHEAD_S
    due += math.ceil(at / 0.002) * 0.002 - 0.0002 - at  # just short of a whole 2 ms
    waker.due(due)
    waker.due(due + 0.0005)  # the same moment across that mark: no second wake-up
    assert waker._set == [due - WAKE_AHEAD_S]  # one alarm, set that long before
    await asyncio.wait_for(w.ran.wait(), 5)
    await asyncio.sleep(0.2)
    assert len(w.at) == 1
    assert w.at[0] >= due - WAKE_AHEAD_S  # never early (late only as the loop runs late)
    assert waker._set == []
    waker.close()


async def test_due_times_apart_get_a_wake_up_each() -> None:
    w = Wakes()
    waker = w.waker()
    due = time.time() + 0.1
    waker.due(due)
    waker.due(due + 0.05)
    await asyncio.sleep(0.25)
    assert len(w.at) == 2
    waker.close()


async def test_no_wake_up_when_the_store_is_busy_or_the_due_time_is_near() -> None:
    w = Wakes()
    waker = w.waker()
    waker.due(time.time() + 0.01)  # too near: nothing has gone to sleep
    w.last = time.monotonic() + 1.0  # a statement "ends" through the wake-up's time
    waker.due(time.time() + 0.1)
    await asyncio.sleep(0.2)
    assert w.at == []
    waker.close()


async def test_a_due_time_that_never_comes_sets_no_wake_up() -> None:
    w = Wakes()
    waker = w.waker()
    waker.due(float("inf"))  # (a message visible "never": the store takes it)
    waker.due(time.time() + 0.08)
    await asyncio.wait_for(w.ran.wait(), 5)
    assert len(w.at) == 1
    waker.close()


async def test_a_closed_waker_wakes_nobody() -> None:
    w = Wakes()
    waker = w.waker()
    waker.due(time.time() + 0.08)
    waker.close()
    await asyncio.sleep(0.15)
    assert w.at == []


def test_the_busy_window_is_longer_than_the_lead() -> None:
    # A wake-up's own statement must not count as the store being busy for the turn
    # that follows it by WAKE_AHEAD_S (the commit at the due time is not a wake-up).
    assert BUSY_S > WAKE_AHEAD_S > 0


@pytest.mark.postgres
@pytest.mark.parametrize("switch", [True, False])
async def test_the_store_wakes_before_a_timer_it_committed_falls_due(
        providers: Callable[..., Any], switch: bool) -> None:
    if not os.environ.get("DUROXY_TEST_PG_DSN"):
        pytest.skip("DUROXY_TEST_PG_DSN not set: PostgreSQL tests need a server")
    from duroxy.history import OrchestratorMessage, TimerCreated, TimerFired

    p = providers(wake_before_due=switch)
    iid = uid()
    await create(p, iid)
    item = await fetch_one(p)
    ran: list[tuple[str, float]] = []
    rows = p._rows

    async def recorded(name: Any, params: dict[str, Any]) -> list[Any]:
        ran.append((getattr(name, "name", name), time.time()))
        out: list[Any] = await rows(name, params)
        return out

    p._rows = recorded
    due = time.time() + 0.3
    fired = OrchestratorMessage(iid, TimerFired(ts=0, source_event_id=2, fire_at=int(
        due * 1000)), 1, due)
    await p.ack_orchestration_item(item.lock_token, commit(
        started(), TimerCreated(event_id=2, ts=0, fire_at=int(due * 1000)),
        messages=[fired]))
    if switch:
        assert p._waker is not None and p._waker._set == [due - WAKE_AHEAD_S]
    else:
        assert p._waker is None
    await asyncio.sleep(due - time.time() + 0.05)
    for _ in range(100):  # (a loaded machine runs the alarm late)
        if not switch or any(name == "wake" for name, _ in ran):
            break
        await asyncio.sleep(0.02)
    wakes = [t for name, t in ran if name == "wake"]
    if switch:
        assert len(wakes) == 1 and wakes[0] >= due - WAKE_AHEAD_S
    else:
        assert wakes == []

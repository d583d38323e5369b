"""The dispatchers' wake-up flag: how the safety-net poll backs off while idle."""

from __future__ import annotations

import asyncio

import pytest

from duroxy import RuntimeOptions
from duroxy.providers.memory import InMemoryProvider
from duroxy.providers.postgres import PostgresProvider
from duroxy.providers.sqlite import SqliteProvider
from duroxy.runtime.wake import Wake

OPTS = RuntimeOptions(poll_interval=0.05, max_poll_interval=0.25)


def _recording(wake: Wake) -> list[float]:
    waits: list[float] = []

    async def wait(timeout: float) -> None:
        waits.append(timeout)

    wake.wait = wait  # type: ignore[method-assign]
    return waits


@pytest.mark.parametrize(("slow", "ceiling"), [(1.0, 0.25), (4.0, 1.0)])
async def test_idle_poll_doubles_up_to_its_ceiling(slow: float, ceiling: float) -> None:
    wake = Wake(asyncio.get_running_loop(), slow)
    waits = _recording(wake)
    for _ in range(8):
        await wake.idle(OPTS)
    assert waits[:3] == [0.05, 0.1, 0.2]
    assert max(waits) == ceiling and waits[-1] == ceiling
    wake.busy(OPTS)  # work came: back to the short poll
    await wake.idle(OPTS)
    assert waits[-1] == 0.05


@pytest.mark.parametrize(("slow", "ceiling"), [(1.0, 0.25), (4.0, 1.0)])
async def test_long_poll_wait_doubles_up_to_its_ceiling(slow: float, ceiling: float) -> None:
    wake = Wake(asyncio.get_running_loop(), slow)
    waits = [wake.long_poll(OPTS) for _ in range(8)]
    assert waits[:3] == [0.05, 0.1, 0.2]
    assert max(waits) == ceiling and waits[-1] == ceiling
    wake.busy(OPTS)
    assert wake.long_poll(OPTS) == 0.05


async def test_after_a_timer_falls_due_empty_fetches_are_retried_at_once() -> None:
    wake = Wake(asyncio.get_running_loop())
    waits = _recording(wake)
    for _ in range(4):
        await wake.idle(OPTS)
    wake.timer_due()
    await wake.idle(OPTS)
    await wake.idle(OPTS)
    assert waits[-2:] == [0.001, 0.001]


def test_which_stores_announce_work_to_every_process() -> None:
    assert PostgresProvider.announces_work
    assert not SqliteProvider.announces_work and not InMemoryProvider.announces_work
    assert SqliteProvider.long_poll and PostgresProvider.long_poll
    assert not InMemoryProvider.long_poll

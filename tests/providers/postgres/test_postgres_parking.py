"""Parked polls of the PostgreSQL store (pure asyncio, no server): hand-offs and
cancellation in the same tick, wake-ups, alarms."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("psycopg")

from duroxy.providers.base import OrchestrationItem
from duroxy.providers.postgres._parking import Parking


def discard(_items: list[OrchestrationItem]) -> None:
    """The ``give_back`` of a poll whose test hands it nothing to give back."""


async def test_a_hand_off_resolved_in_the_tick_its_poll_is_cancelled_is_given_back() -> None:
    parking = Parking()
    given_back: list[OrchestrationItem] = []
    waiting = asyncio.ensure_future(parking.wait(5.0, 30.0, given_back.extend))
    await asyncio.sleep(0)  # parked
    p = parking.take("w", None)
    assert p is not None and parking.take("w", None) is None
    await asyncio.sleep(0)  # the poll now waits for the hand-off under way
    item = OrchestrationItem(instance_id="w", lock_token="t", messages=[], instance=None,
                             attempt=1)
    p.fut.set_result([item])
    waiting.cancel()  # before the poll could run again
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert given_back == [item]


async def test_a_poll_cancelled_while_a_hand_off_is_under_way_leaves_it_to_the_start(
        ) -> None:
    parking = Parking()
    given_back: list[OrchestrationItem] = []
    waiting = asyncio.ensure_future(parking.wait(5.0, 30.0, given_back.extend))
    await asyncio.sleep(0)
    p = parking.take("w", None)
    assert p is not None
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert p.fut.cancelled() and given_back == []  # the start sees it and gives back


async def test_wake_resolves_every_parked_poll_and_an_alarm_counts_as_news() -> None:
    parking = Parking()
    polls = [asyncio.ensure_future(parking.wait(5.0, 30.0, discard)) for _ in range(3)]
    await asyncio.sleep(0)
    parking.wake("x")
    assert await asyncio.gather(*polls) == [None, None, None]
    assert parking.take("w", None) is None
    fired = parking.fired
    parking.due_at(0.0)  # long due
    poll = asyncio.ensure_future(parking.wait(5.0, 30.0, discard))
    assert await asyncio.wait_for(poll, 5) is None
    assert parking.fired == fired + 1 and parking.retrying()
    parking.found()
    assert not parking.retrying()


async def test_a_poll_answers_empty_when_its_time_is_up() -> None:
    parking = Parking()
    assert await parking.wait(5.0, 0.01, discard) == []
    assert parking.take("w", None) is None
    parking.close()


async def test_a_start_is_never_handed_to_a_poll_that_leaves_its_orchestration_to_others(
        ) -> None:
    from duroxy.providers.base import ExcludedWork

    parking = Parking()
    skips = ExcludedWork(orchestrations=frozenset({"old"}),
                         orchestration_versions=frozenset({("mixed", "2.0.0")}))
    waiting = asyncio.ensure_future(parking.wait(5.0, 30.0, discard, skips))
    await asyncio.sleep(0)
    assert parking.take("old", "1.0.0") is None
    assert parking.take("mixed", "2.0.0") is None
    p = parking.take("mixed", "1.0.0")
    assert p is not None and p.exclude is skips
    p.fut.set_result([])
    assert await waiting == []

"""Conformance tests for the shortcuts a worker takes with work it holds: feeding an
activity's result straight into the next turn (``lock_instance`` plus
``OrchestrationCommit.acked_activities``), claiming the activities a turn schedules
(``claim_activities``), and firing a timer in place (``commit_turn`` with ``consume``).
A store that offers none skips them."""

from __future__ import annotations

import time

import pytest

from ...errors import LockLost
from ...history import ActivityCompleted, OrchestratorMessage, TimerCreated, TimerFired
from ...providers.base import FastPath, Provider
from .activity import fetch_activity, scheduled_work
from .support import (
    HOLD,
    LOCK,
    TS,
    ConformanceBase,
    activity_completion,
    commit,
    create,
    events_of,
    fetch_one,
    first_turn,
    raised,
    scheduled,
    started,
    uid,
    work,
)

__all__ = ["FastPathTests", "TimerInPlaceTests"]


def _supported(provider: Provider) -> FastPath:
    if not isinstance(provider, FastPath):
        pytest.skip(f"{type(provider).__name__} offers no FastPath")
    return provider


class FastPathTests(ConformanceBase):
    async def test_lock_instance_without_messages(self, provider: Provider) -> None:
        fast = _supported(provider)
        iid = uid()
        await scheduled_work(provider, iid)
        item = await fast.lock_instance(iid, HOLD)
        assert item is not None and item.instance_id == iid and item.messages == []
        assert item.instance is not None and item.instance.history_len == 2
        # held: neither a second lock nor a fetch gets it
        assert await fast.lock_instance(iid, HOLD) is None
        await provider.enqueue_orchestrator_message(raised(iid))
        assert await provider.fetch_orchestration_items(HOLD, limit=10) == []
        await provider.abandon_orchestration_item(item.lock_token)

    async def test_lock_instance_delivers_visible_messages(self, provider: Provider) -> None:
        fast = _supported(provider)
        iid = uid()
        await scheduled_work(provider, iid)
        await provider.enqueue_orchestrator_message(raised(iid, "a"))
        await provider.enqueue_orchestrator_message(raised(iid, "later", visible_at=9e12))
        item = await fast.lock_instance(iid, HOLD)
        assert item is not None
        assert [e.name for e in events_of(item)] == ["a"]  # type: ignore[attr-defined]
        assert item.attempt == 1
        await provider.ack_orchestration_item(item.lock_token, commit(execution_id=1))
        # the consumed message is gone, the invisible one stays
        assert await fast.lock_instance(iid, HOLD) is not None

    async def test_lock_instance_refuses_unknown_and_locked(self, provider: Provider) -> None:
        fast = _supported(provider)
        assert await fast.lock_instance(uid("nobody"), HOLD) is None
        iid = uid()
        await create(provider, iid)
        item = await fetch_one(provider)
        assert await fast.lock_instance(iid, HOLD) is None
        await provider.abandon_orchestration_item(item.lock_token, delay=60)
        assert await fast.lock_instance(iid, HOLD) is None  # cooling down

    async def test_lock_instance_takes_an_expired_lock(self, provider: Provider) -> None:
        fast = _supported(provider)
        iid = uid()
        await create(provider, iid)
        old = await fetch_one(provider, LOCK)
        await self.expire()
        item = await fast.lock_instance(iid, HOLD)
        assert item is not None and item.attempt == 2
        with pytest.raises(LockLost):
            await provider.ack_orchestration_item(old.lock_token, commit(execution_id=1))

    async def test_acked_activities_deleted_with_the_turn(self, provider: Provider) -> None:
        fast = _supported(provider)
        iid = uid()
        [w] = await scheduled_work(provider, iid)
        act = await fetch_activity(provider)
        item = await fast.lock_instance(iid, HOLD)
        assert item is not None
        done = ActivityCompleted(event_id=3, ts=TS, source_event_id=w.event_id, result='"r"')
        nxt = work(iid, 4, name="next")
        c = commit(done, scheduled(4, "next"), activities=[nxt])
        c.acked_activities.append(act.lock_token)
        await provider.ack_orchestration_item(item.lock_token, c)
        kinds = [e.kind for e in await provider.read_history(iid)]
        assert kinds == ["OrchestrationStarted", "ActivityScheduled", "ActivityCompleted",
                         "ActivityScheduled"]
        # no completion message was enqueued; the acked row is gone, the new one is there
        assert await provider.fetch_orchestration_items(HOLD, limit=10) == []
        [only] = await provider.fetch_activity_items(HOLD, limit=10)
        assert only.work == nxt
        with pytest.raises(LockLost):
            await provider.ack_activity(act.lock_token, raised(iid))

    async def test_acked_activity_lost_fails_whole_ack(self, provider: Provider) -> None:
        fast = _supported(provider)
        iid = uid()
        [w] = await scheduled_work(provider, iid)
        act = await fetch_activity(provider, LOCK)
        await self.expire()
        item = await fast.lock_instance(iid, HOLD)
        assert item is not None
        done = ActivityCompleted(event_id=3, ts=TS, source_event_id=w.event_id, result='"r"')
        c = commit(done, scheduled(4, "next"), activities=[work(iid, 4, name="next")])
        c.acked_activities.append(act.lock_token)
        with pytest.raises(LockLost):
            await provider.ack_orchestration_item(item.lock_token, c)
        assert len(await provider.read_history(iid)) == 2  # nothing appended
        [again] = await provider.fetch_activity_items(HOLD, limit=10)
        assert again.work == w and again.attempt == 2  # only the old work, re-offered

    async def test_ack_claims_scheduled_activities(self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        item = await fetch_one(provider)
        works = [work(iid, 2, name="a"), work(iid, 3, name="b"), work(iid, 4, name="c")]
        c = commit(started(), scheduled(2, "a"), scheduled(3, "b"), scheduled(4, "c"),
                   activities=works)
        c.claim_activities, c.claim_lock_timeout = 2, LOCK
        claimed = list(await provider.ack_orchestration_item(item.lock_token, c) or [])
        if not claimed:
            pytest.skip(f"{type(provider).__name__} does not claim activities in an ack")
        assert [a.work for a in claimed] == works[:2]
        assert all(a.attempt == 1 and a.lock_token for a in claimed)
        # only the unclaimed one is fetchable while the claims hold
        [free] = await provider.fetch_activity_items(HOLD, limit=10)
        assert free.work == works[2]
        await provider.ack_activity(claimed[0].lock_token, activity_completion(works[0]))
        # an unacknowledged claim lapses like any lock and the work is offered again
        await self.expire()
        [again] = await provider.fetch_activity_items(HOLD, limit=10)
        assert again.work == works[1] and again.attempt == 2

    async def test_commit_turn_when_nothing_happened(self, provider: Provider) -> None:
        fast = _supported(provider)
        iid = uid()
        [w] = await scheduled_work(provider, iid)
        act = await fetch_activity(provider)
        done = ActivityCompleted(event_id=3, ts=TS, source_event_id=w.event_id, result='"r"')
        c = commit(done, scheduled(4, "next"), activities=[work(iid, 4, name="next")])
        c.acked_activities.append(act.lock_token)
        await fast.commit_turn(iid, 2, c)
        rec = await provider.get_instance(iid)
        assert rec is not None and rec.history_len == 4
        assert [e.kind for e in await provider.read_history(iid)][2:] == [
            "ActivityCompleted", "ActivityScheduled"]
        # the instance is not left locked, and no completion message was enqueued
        assert await provider.fetch_orchestration_items(HOLD, limit=10) == []
        await provider.enqueue_orchestrator_message(raised(iid))
        assert len(await provider.fetch_orchestration_items(HOLD, limit=10)) == 1

    @pytest.mark.parametrize("obstacle", ["moved_on", "locked", "message_waiting"])
    async def test_commit_turn_refuses_when_something_happened(
            self, provider: Provider, obstacle: str) -> None:
        fast = _supported(provider)
        iid = uid()
        [w] = await scheduled_work(provider, iid)
        act = await fetch_activity(provider)
        expected = 2
        if obstacle == "moved_on":
            expected = 1  # this worker's view of the history is stale
        elif obstacle == "locked":
            assert await fast.lock_instance(iid, HOLD) is not None
        else:
            await provider.enqueue_orchestrator_message(raised(iid))
        done = ActivityCompleted(event_id=3, ts=TS, source_event_id=w.event_id, result='"r"')
        c = commit(done)
        c.acked_activities.append(act.lock_token)
        with pytest.raises(LockLost):
            await fast.commit_turn(iid, expected, c)
        assert len(await provider.read_history(iid)) == 2
        # the activity is still held by its worker: its ordinary ack works
        await provider.ack_activity(act.lock_token, activity_completion(w))


async def _timer_turn(provider: Provider, iid: str, visible_at: float) -> OrchestratorMessage:
    """A first turn that starts a timer falling due at ``visible_at``: history 2 events."""
    fire_at = int(visible_at * 1000)
    timer = OrchestratorMessage(iid, TimerFired(source_event_id=2, fire_at=fire_at), 1,
                                visible_at)
    await first_turn(provider, iid, TimerCreated(event_id=2, ts=TS, fire_at=fire_at),
                     messages=[timer])
    return timer


def _fired(timer: OrchestratorMessage) -> TimerFired:
    assert isinstance(timer.event, TimerFired)
    return TimerFired(event_id=3, ts=TS, source_event_id=2, fire_at=timer.event.fire_at)


class TimerInPlaceTests(ConformanceBase):
    @pytest.mark.parametrize("when", ["visible", "not_yet_visible"])
    async def test_commit_turn_consumes_a_timer_fired_in_place(
            self, provider: Provider, when: str) -> None:
        fast = _supported(provider)
        iid = uid()
        # the worker's clock may find a timer due a moment before the store's does
        due = time.time() + (-1.0 if when == "visible" else LOCK)
        timer = await _timer_turn(provider, iid, due)
        await fast.commit_turn(iid, 2, commit(_fired(timer)), consume=[timer])
        assert [e.kind for e in await provider.read_history(iid)][1:] == [
            "TimerCreated", "TimerFired"]
        await self.expire()  # the message would be visible now: it is gone
        assert await provider.fetch_orchestration_items(HOLD, limit=10) == []
        # and the instance is free for the next turn
        await provider.enqueue_orchestrator_message(raised(iid))
        [item] = await provider.fetch_orchestration_items(HOLD, limit=10)
        assert [e.kind for e in events_of(item)] == ["EventRaised"]

    @pytest.mark.parametrize("obstacle", ["delivered", "gone", "other_message", "locked"])
    async def test_commit_turn_refuses_a_timer_it_cannot_consume(
            self, provider: Provider, obstacle: str) -> None:
        fast = _supported(provider)
        iid = uid()
        timer = await _timer_turn(provider, iid, time.time() - 1.0)
        held = None
        if obstacle == "delivered":  # a fetch has it, and the instance
            held = await fetch_one(provider)
        elif obstacle == "locked":
            held = await fast.lock_instance(iid, HOLD)
            assert held is not None
        elif obstacle == "gone":  # another turn consumed it
            item = await fetch_one(provider)
            await provider.ack_orchestration_item(item.lock_token, commit(_fired(timer)))
        else:
            await provider.enqueue_orchestrator_message(raised(iid))
        expected = 3 if obstacle == "gone" else 2
        with pytest.raises(LockLost):
            await fast.commit_turn(iid, expected, commit(_fired(timer)), consume=[timer])
        history = [e.kind for e in await provider.read_history(iid)]
        assert history.count("TimerFired") == (1 if obstacle == "gone" else 0)
        if held is not None:  # the holder's turn still goes through
            await provider.ack_orchestration_item(held.lock_token, commit(_fired(timer)))
            assert [e.kind for e in await provider.read_history(iid)].count("TimerFired") == 1
        elif obstacle == "other_message":  # both messages still wait for a fetch
            item = await fetch_one(provider)
            assert sorted(e.kind for e in events_of(item)) == ["EventRaised", "TimerFired"]

    async def test_commit_turn_consumes_only_the_given_timer(self, provider: Provider
                                                             ) -> None:
        fast = _supported(provider)
        iid = uid()
        now = time.time()
        first = OrchestratorMessage(
            iid, TimerFired(source_event_id=2, fire_at=int(now * 1000) - 1000), 1, now - 1.0)
        second = OrchestratorMessage(
            iid, TimerFired(source_event_id=3, fire_at=int(now * 1000) + 3_600_000), 1,
            now + 3600.0)
        await first_turn(provider, iid, TimerCreated(event_id=2, ts=TS, fire_at=0),
                         TimerCreated(event_id=3, ts=TS, fire_at=0),
                         messages=[first, second])
        fired = TimerFired(event_id=4, ts=TS, source_event_id=2, fire_at=0)
        await fast.commit_turn(iid, 3, commit(fired), consume=[first])
        # the later timer is still queued: a turn may consume it in place in its turn
        fired2 = TimerFired(event_id=5, ts=TS, source_event_id=3, fire_at=0)
        await fast.commit_turn(iid, 4, commit(fired2), consume=[second])
        with pytest.raises(LockLost):  # and only once
            await fast.commit_turn(iid, 5, commit(), consume=[second])
        assert len(await provider.read_history(iid)) == 5

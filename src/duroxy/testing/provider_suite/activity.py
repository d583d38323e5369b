"""Conformance tests for the activity queue: peek-lock, atomic completion, abandon,
renew, attempts and cancellation by deletion."""

from __future__ import annotations

import pytest

from ...errors import LockLost
from ...history import ActivityCompleted, ActivityFailedEvent, ActivityWork, OrchestratorMessage
from ...providers.base import ActivityItem, Provider
from .support import (
    HOLD,
    LOCK,
    TS,
    ConformanceBase,
    activity_completion,
    commit,
    events_of,
    fetch_one,
    first_turn,
    raised,
    scheduled,
    uid,
    work,
)

__all__ = ["ActivityQueueTests"]


async def scheduled_work(provider: Provider, instance_id: str, count: int = 1,
                         execution_id: int = 1) -> list[ActivityWork]:
    """Run a first turn of ``instance_id`` that schedules ``count`` activities (event ids
    2, 3, ...); returns their work items."""
    works = [work(instance_id, 2 + n, name=f"act{n}", execution_id=execution_id)
             for n in range(count)]
    await first_turn(provider, instance_id, *[scheduled(w.event_id, w.name) for w in works],
                     activities=works)
    return works


async def fetch_activity(provider: Provider, lock_timeout: float = HOLD) -> ActivityItem:
    items = await provider.fetch_activity_items(lock_timeout, limit=10)
    assert len(items) == 1, f"expected one activity item, got {len(items)}"
    return items[0]


class ActivityQueueTests(ConformanceBase):
    async def test_activity_fetch_returns_work_with_attempt_1(self, provider: Provider) -> None:
        iid = uid()
        [w] = await scheduled_work(provider, iid)
        item = await fetch_activity(provider)
        assert item.work == w and item.attempt == 1 and item.lock_token

    async def test_activity_queue_empty_returns_nothing(self, provider: Provider) -> None:
        assert await provider.fetch_activity_items(HOLD, limit=10) == []
        assert await provider.fetch_activity_items(HOLD, limit=0) == []

    async def test_activity_lock_is_exclusive(self, provider: Provider) -> None:
        await scheduled_work(provider, uid())
        await fetch_activity(provider)
        assert await provider.fetch_activity_items(HOLD, limit=10) == []

    async def test_activity_lock_expiry_redelivers_with_attempt_2(
            self, provider: Provider) -> None:
        iid = uid()
        [w] = await scheduled_work(provider, iid)
        old = await fetch_activity(provider, LOCK)
        await self.expire(LOCK)
        new = await fetch_activity(provider)
        assert new.work == w and new.attempt == 2 and new.id == old.id
        assert new.lock_token != old.lock_token
        with pytest.raises(LockLost):
            await provider.ack_activity(old.lock_token, activity_completion(w, '"old"'))
        await provider.ack_activity(new.lock_token, activity_completion(w, '"new"'))
        item = await fetch_one(provider)
        assert events_of(item) == [ActivityCompleted(ts=TS, source_event_id=2, result='"new"')]

    async def test_activity_ack_enqueues_completion_and_deletes_work(
            self, provider: Provider) -> None:
        iid = uid()
        [w] = await scheduled_work(provider, iid)
        item = await fetch_activity(provider)
        done = activity_completion(w, '{"vm":"v-1"}')
        await provider.ack_activity(item.lock_token, done)
        orch = await fetch_one(provider)
        assert orch.instance_id == iid
        [qm] = orch.messages
        assert qm.message is not None
        assert (qm.message.event, qm.message.execution_id) == (done.event, 1)
        assert await provider.fetch_activity_items(HOLD, limit=10) == []

    async def test_activity_failure_completion_round_trips(self, provider: Provider) -> None:
        iid = uid()
        [w] = await scheduled_work(provider, iid)
        item = await fetch_activity(provider)
        failed = OrchestratorMessage(iid, ActivityFailedEvent(
            ts=TS, source_event_id=w.event_id, error_type="builtins.ValueError",
            message="bad input ✗"), 1)
        await provider.ack_activity(item.lock_token, failed)
        assert events_of(await fetch_one(provider)) == [failed.event]

    async def test_activity_ack_after_expiry_enqueues_nothing(self, provider: Provider) -> None:
        iid = uid()
        [w] = await scheduled_work(provider, iid)
        item = await fetch_activity(provider, LOCK)
        await self.expire(LOCK)
        with pytest.raises(LockLost):
            await provider.ack_activity(item.lock_token, activity_completion(w))
        assert await provider.fetch_orchestration_items(HOLD, limit=10) == []
        again = await fetch_activity(provider)  # the work row is still there
        assert again.work == w

    async def test_activity_ack_with_bogus_token_raises(self, provider: Provider) -> None:
        iid = uid()
        [w] = await scheduled_work(provider, iid)
        await fetch_activity(provider)
        with pytest.raises(LockLost):
            await provider.ack_activity("no-such-token", activity_completion(w))
        assert await provider.fetch_orchestration_items(HOLD, limit=10) == []

    async def test_duplicate_completion_is_rejected(self, provider: Provider) -> None:
        iid = uid()
        [w] = await scheduled_work(provider, iid)
        item = await fetch_activity(provider)
        await provider.ack_activity(item.lock_token, activity_completion(w, '"first"'))
        with pytest.raises(LockLost):
            await provider.ack_activity(item.lock_token, activity_completion(w, '"second"'))
        orch = await fetch_one(provider)
        assert events_of(orch) == [ActivityCompleted(ts=TS, source_event_id=2,
                                                     result='"first"')]

    async def test_activity_abandon_redelivers_at_once(self, provider: Provider) -> None:
        iid = uid()
        [w] = await scheduled_work(provider, iid)
        item = await fetch_activity(provider)
        await provider.abandon_activity(item.lock_token)
        again = await fetch_activity(provider)
        assert again.work == w and again.attempt == 2
        with pytest.raises(LockLost):
            await provider.ack_activity(item.lock_token, activity_completion(w))

    async def test_activity_abandon_with_delay(self, provider: Provider) -> None:
        iid = uid()
        [w] = await scheduled_work(provider, iid)
        item = await fetch_activity(provider)
        await provider.abandon_activity(item.lock_token, delay=LOCK)
        assert await provider.fetch_activity_items(HOLD, limit=10) == []
        await self.expire(LOCK)
        again = await fetch_activity(provider)
        assert again.work == w and again.attempt == 2

    async def test_activity_abandon_with_stale_token_raises(self, provider: Provider) -> None:
        with pytest.raises(LockLost):
            await provider.abandon_activity("no-such-token")
        await scheduled_work(provider, uid())
        item = await fetch_activity(provider, LOCK)
        await self.expire(LOCK)
        with pytest.raises(LockLost):
            await provider.abandon_activity(item.lock_token)

    async def test_activity_attempts_keep_growing(self, provider: Provider) -> None:
        await scheduled_work(provider, uid())
        attempts = []
        for _ in range(3):
            item = await fetch_activity(provider)
            attempts.append(item.attempt)
            await provider.abandon_activity(item.lock_token)
        item = await fetch_activity(provider, LOCK)
        attempts.append(item.attempt)
        await self.expire(LOCK)
        attempts.append((await fetch_activity(provider)).attempt)
        assert attempts == [1, 2, 3, 4, 5]

    async def test_activity_renew_extends_the_lock(self, provider: Provider) -> None:
        iid = uid()
        [w] = await scheduled_work(provider, iid)
        item = await fetch_activity(provider, LOCK)
        await provider.renew_activity_lock(item.lock_token, HOLD)
        await self.expire(LOCK)
        assert await provider.fetch_activity_items(HOLD, limit=10) == []
        await provider.ack_activity(item.lock_token, activity_completion(w))
        assert len((await fetch_one(provider)).messages) == 1

    async def test_activity_renew_after_expiry_raises(self, provider: Provider) -> None:
        await scheduled_work(provider, uid())
        item = await fetch_activity(provider, LOCK)
        await self.expire(LOCK)
        with pytest.raises(LockLost):
            await provider.renew_activity_lock(item.lock_token, HOLD)
        with pytest.raises(LockLost):
            await provider.renew_activity_lock("no-such-token", HOLD)

    async def test_activity_fetch_respects_limit_and_fifo(self, provider: Provider) -> None:
        a, b = uid("a"), uid("b")
        works = await scheduled_work(provider, a, 3)
        works += await scheduled_work(provider, b, 2)
        first = await provider.fetch_activity_items(HOLD, limit=2)
        second = await provider.fetch_activity_items(HOLD, limit=2)
        third = await provider.fetch_activity_items(HOLD, limit=2)
        assert [len(first), len(second), len(third)] == [2, 2, 1]
        assert [i.work for i in first + second + third] == works
        ids = [i.id for i in first + second + third]
        assert ids == sorted(ids) and len(set(ids)) == 5
        assert await provider.fetch_activity_items(HOLD, limit=2) == []

    async def test_activity_fetch_batch_has_distinct_tokens(self, provider: Provider) -> None:
        await scheduled_work(provider, uid(), 3)
        items = await provider.fetch_activity_items(HOLD, limit=10)
        assert len(items) == 3 and len({i.lock_token for i in items}) == 3
        for item in items:  # each token acks its own row
            await provider.ack_activity(item.lock_token, activity_completion(item.work))
        orch = await fetch_one(provider)
        done = [e.source_event_id for e in events_of(orch) if isinstance(e, ActivityCompleted)]
        assert sorted(done) == [2, 3, 4]

    async def test_completion_while_instance_locked_waits_for_release(
            self, provider: Provider) -> None:
        iid = uid()
        [w] = await scheduled_work(provider, iid)
        act = await fetch_activity(provider)
        await provider.enqueue_orchestrator_message(raised(iid))
        turn = await fetch_one(provider)
        await provider.ack_activity(act.lock_token, activity_completion(w))
        assert await provider.fetch_orchestration_items(HOLD, limit=10) == []
        await provider.ack_orchestration_item(turn.lock_token, commit())
        nxt = await fetch_one(provider)
        assert [e.kind for e in events_of(nxt)] == ["ActivityCompleted"]

    async def test_cancelled_activity_renew_raises(self, provider: Provider) -> None:
        iid = uid()
        [w] = await scheduled_work(provider, iid)
        act = await fetch_activity(provider)
        await cancel(provider, iid, w)
        with pytest.raises(LockLost):
            await provider.renew_activity_lock(act.lock_token, HOLD)

    async def test_cancelled_activity_ack_raises_and_enqueues_nothing(
            self, provider: Provider) -> None:
        iid = uid()
        [w] = await scheduled_work(provider, iid)
        act = await fetch_activity(provider)
        await cancel(provider, iid, w)
        with pytest.raises(LockLost):
            await provider.ack_activity(act.lock_token, activity_completion(w))
        assert await provider.fetch_orchestration_items(HOLD, limit=10) == []
        assert await provider.fetch_activity_items(HOLD, limit=10) == []

    async def test_cancelled_activity_not_yet_fetched_is_never_delivered(
            self, provider: Provider) -> None:
        iid = uid()
        [w] = await scheduled_work(provider, iid)
        await cancel(provider, iid, w)
        assert await provider.fetch_activity_items(HOLD, limit=10) == []

    async def test_cancel_deletes_only_the_named_rows(self, provider: Provider) -> None:
        a, b = uid("a"), uid("b")
        wa = await scheduled_work(provider, a, 3)
        wb = await scheduled_work(provider, b, 1)  # same event id 2 as wa[0]
        await provider.enqueue_orchestrator_message(raised(a))
        turn = await fetch_one(provider)
        await provider.ack_orchestration_item(turn.lock_token, commit(
            cancel_activities=[(a, 1, wa[0].event_id), (a, 2, wa[1].event_id),
                               (a, 1, 99)]))
        left = await provider.fetch_activity_items(HOLD, limit=10)
        assert [i.work for i in left] == [wa[1], wa[2], wb[0]]

    async def test_cancel_and_schedule_in_one_turn(self, provider: Provider) -> None:
        iid = uid()
        [w] = await scheduled_work(provider, iid)
        await provider.enqueue_orchestrator_message(raised(iid))
        turn = await fetch_one(provider)
        fresh = work(iid, 4, name="replacement")
        await provider.ack_orchestration_item(turn.lock_token, commit(
            scheduled(4, "replacement"), activities=[fresh],
            cancel_activities=[(iid, 1, w.event_id)]))
        assert (await fetch_activity(provider)).work == fresh

    async def test_activity_work_round_trips_exactly(self, provider: Provider) -> None:
        iid = uid("ünï-'\"")
        w = ActivityWork(instance_id=iid, execution_id=3, event_id=17,
                         name="pkg::activity::Größe ✓", input='{"n":123456789012345678901234}',
                         orchestration_name="pkg::orchestration::x", orchestration_version=None,
                         attempt=4)
        await first_turn(provider, iid, activities=[w])
        assert (await fetch_activity(provider)).work == w


async def cancel(provider: Provider, instance_id: str, w: ActivityWork) -> None:
    """Run a turn of ``instance_id`` that cancels ``w`` (the instance must be idle)."""
    await provider.enqueue_orchestrator_message(raised(instance_id))
    turn = await fetch_one(provider)
    await provider.ack_orchestration_item(turn.lock_token, commit(
        cancel_activities=[(w.instance_id, w.execution_id, w.event_id)]))

"""Conformance tests for instance creation and the orchestration queue: fetch batching,
instance locks, atomic acks, renew, abandon, attempts and multiple executions."""

from __future__ import annotations

import asyncio
import time

import pytest

from ...errors import (
    ErrorDetails,
    InstanceAlreadyExists,
    InstanceNotFound,
    LockLost,
    ProviderError,
)
from ...history import (
    EventRaised,
    OrchestrationCompleted,
    OrchestrationContinuedAsNew,
    OrchestrationFailed,
    OrchestratorMessage,
    TimerCreated,
    TimerFired,
)
from ...providers.base import FastPath, Provider
from .support import (
    HOLD,
    LOCK,
    NAME,
    TS,
    VERSION,
    ConformanceBase,
    commit,
    create,
    events_of,
    fetch_first,
    fetch_one,
    first_turn,
    raised,
    scheduled,
    start_message,
    started,
    uid,
    work,
)

__all__ = ["OrchestrationQueueTests"]


class OrchestrationQueueTests(ConformanceBase):
    # ------------------------------------------------------------ create / start
    async def test_create_instance_makes_pending_record(self, provider: Provider) -> None:
        iid = uid()
        before = time.time()
        await create(provider, iid)
        rec = await provider.get_instance(iid)
        assert rec is not None
        assert (rec.instance_id, rec.name, rec.version, rec.state) == (iid, NAME, VERSION,
                                                                        "PENDING")
        assert rec.execution_id == 1
        assert rec.history_len == 0
        assert rec.output is None and rec.error is None and rec.parent_instance_id is None
        assert rec.created_at > before - 60 and rec.updated_at >= rec.created_at

    async def test_create_instance_enqueues_start_message(self, provider: Provider) -> None:
        iid = uid()
        msg = await create(provider, iid)
        item = await fetch_one(provider)
        assert item.instance_id == iid
        assert item.attempt == 1
        assert events_of(item) == [msg.event]
        qm = item.messages[0].message
        assert qm is not None and qm.execution_id == 1
        assert item.instance is not None and item.instance.state == "PENDING"
        assert item.instance == await provider.get_instance(iid)

    async def test_create_instance_twice_raises_already_exists(self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        with pytest.raises(InstanceAlreadyExists):
            await create(provider, iid, "other::name", version="9.9.9")
        rec = await provider.get_instance(iid)
        assert rec is not None and rec.name == NAME and rec.version == VERSION
        item = await fetch_one(provider)
        assert len(item.messages) == 1  # the failed create queued nothing

    async def test_create_instance_records_parent(self, provider: Provider) -> None:
        iid, parent = uid("child"), uid("parent")
        await create(provider, iid, parent_instance_id=parent)
        rec = await provider.get_instance(iid)
        assert rec is not None and rec.parent_instance_id == parent

    async def test_create_instance_keeps_null_version(self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid, version=None)
        rec = await provider.get_instance(iid)
        assert rec is not None and rec.version is None

    async def test_enqueue_to_unknown_instance_raises_not_found(self, provider: Provider) -> None:
        iid = uid()
        with pytest.raises(InstanceNotFound):
            await provider.enqueue_orchestrator_message(raised(iid))
        assert await provider.fetch_orchestration_items(HOLD, limit=10) == []
        assert await provider.get_instance(iid) is None

    async def test_enqueue_keeps_message_fields(self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        ev = raised(iid, "approval", '{"ok":true}', execution_id=None)
        pinned = raised(iid, "pinned", "2", execution_id=1)
        await provider.enqueue_orchestrator_message(ev)
        await provider.enqueue_orchestrator_message(pinned)
        item = await fetch_one(provider)
        got = [qm.message for qm in item.messages[1:]]
        assert [(m.instance_id, m.event, m.execution_id) for m in got if m is not None] == [
            (iid, ev.event, None), (iid, pinned.event, 1)]

    async def test_enqueue_to_terminal_instance_is_delivered(self, provider: Provider) -> None:
        iid = uid()
        await first_turn(provider, iid, OrchestrationCompleted(event_id=2, ts=TS, output="1"),
                         state="COMPLETED", output="1")
        await provider.enqueue_orchestrator_message(raised(iid, "late"))
        item = await fetch_one(provider)
        assert [e.kind for e in events_of(item)] == ["EventRaised"]
        assert item.instance is not None and item.instance.state == "COMPLETED"

    # ------------------------------------------------------------ fetch batching
    async def test_fetch_on_empty_store_returns_nothing(self, provider: Provider) -> None:
        assert await provider.fetch_orchestration_items(HOLD, limit=5) == []

    async def test_fetch_limit_zero_returns_nothing(self, provider: Provider) -> None:
        await create(provider, uid())
        assert await provider.fetch_orchestration_items(HOLD, limit=0) == []
        assert len(await provider.fetch_orchestration_items(HOLD, limit=1)) == 1

    async def test_fetch_batches_all_visible_messages_in_fifo_order(
            self, provider: Provider) -> None:
        iid = uid()
        start = await create(provider, iid)
        for n in range(3):
            await provider.enqueue_orchestrator_message(raised(iid, f"e{n}", str(n)))
        item = await fetch_one(provider)
        assert events_of(item) == [start.event] + [
            EventRaised(ts=TS, name=f"e{n}", data=str(n)) for n in range(3)]
        ids = [qm.id for qm in item.messages]
        assert ids == sorted(ids) and len(set(ids)) == 4

    async def test_fetch_returns_one_item_per_instance(self, provider: Provider) -> None:
        a, b = uid("a"), uid("b")
        await create(provider, a)
        await create(provider, b)
        await provider.enqueue_orchestrator_message(raised(a))
        await provider.enqueue_orchestrator_message(raised(b))
        items = await provider.fetch_orchestration_items(HOLD, limit=10)
        assert sorted(i.instance_id for i in items) == sorted([a, b])
        assert all(len(i.messages) == 2 for i in items)
        assert len({i.lock_token for i in items}) == 2

    async def test_fetch_respects_limit(self, provider: Provider) -> None:
        ids = [uid(f"n{k}") for k in range(3)]
        for iid in ids:
            await create(provider, iid)
        first = await provider.fetch_orchestration_items(HOLD, limit=2)
        second = await provider.fetch_orchestration_items(HOLD, limit=2)
        third = await provider.fetch_orchestration_items(HOLD, limit=2)
        assert (len(first), len(second), third) == (2, 1, [])
        assert sorted(i.instance_id for i in first + second) == sorted(ids)

    async def test_fetch_oldest_message_first_across_instances(self, provider: Provider) -> None:
        # ids deliberately not in creation order, so ordering by id would be caught
        ids = [uid("c"), uid("a"), uid("b")]
        for iid in ids:
            await create(provider, iid)
        got = [(await fetch_first(provider)).instance_id for _ in ids]
        assert got == ids

    async def test_fetch_order_follows_oldest_visible_message(self, provider: Provider) -> None:
        a, b = uid("a"), uid("b")
        await create(provider, a)
        await create(provider, b)
        first = await fetch_first(provider)
        await provider.ack_orchestration_item(first.lock_token, commit(started()))
        second = await fetch_first(provider)
        await provider.ack_orchestration_item(second.lock_token, commit(started()))
        # b gets a message first, then a: b's message is the oldest now
        await provider.enqueue_orchestrator_message(raised(b))
        await provider.enqueue_orchestrator_message(raised(a))
        await provider.enqueue_orchestrator_message(raised(b, "again"))
        items = await provider.fetch_orchestration_items(HOLD, limit=10)
        assert [i.instance_id for i in items] == [b, a]
        assert [len(i.messages) for i in items] == [2, 1]

    async def test_message_ids_are_unique_and_ascending(self, provider: Provider) -> None:
        a, b = uid("a"), uid("b")
        await create(provider, a)
        await create(provider, b)
        await provider.enqueue_orchestrator_message(raised(a))
        await provider.enqueue_orchestrator_message(raised(b))
        items = await provider.fetch_orchestration_items(HOLD, limit=10)
        by_id = {i.instance_id: [qm.id for qm in i.messages] for i in items}
        assert by_id[a][0] < by_id[b][0] < by_id[a][1] < by_id[b][1]

    async def test_delayed_message_waits_for_visible_at(self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        await provider.enqueue_orchestrator_message(
            raised(iid, "later", visible_at=time.time() + LOCK))
        item = await fetch_one(provider)
        assert [e.kind for e in events_of(item)] == ["OrchestrationStarted"]
        await provider.ack_orchestration_item(item.lock_token, commit(started()))
        assert await provider.fetch_orchestration_items(HOLD, limit=10) == []
        await self.expire(LOCK)
        item = await fetch_one(provider)
        assert [e.kind for e in events_of(item)] == ["EventRaised"]

    async def test_instance_with_only_invisible_messages_is_not_fetched(
            self, provider: Provider) -> None:
        iid, other = uid(), uid("other")
        await first_turn(provider, iid)
        await provider.enqueue_orchestrator_message(
            raised(iid, visible_at=time.time() + HOLD))
        await create(provider, other)
        items = await provider.fetch_orchestration_items(HOLD, limit=10)
        assert [i.instance_id for i in items] == [other]

    async def test_visible_at_in_the_past_is_delivered_at_once(self, provider: Provider) -> None:
        iid = uid()
        await first_turn(provider, iid)
        await provider.enqueue_orchestrator_message(raised(iid, visible_at=time.time() - 3600))
        item = await fetch_one(provider)
        assert [e.kind for e in events_of(item)] == ["EventRaised"]

    # ------------------------------------------------------------ long polling
    async def test_poll_returns_visible_work_at_once(self, provider: Provider) -> None:
        if not isinstance(provider, FastPath):
            pytest.skip(f"{type(provider).__name__} does not poll (no FastPath)")
        iid = uid()
        await create(provider, iid)
        t0 = time.monotonic()
        items = await provider.poll_orchestration_items(LOCK, 5, wait=10)
        assert [i.instance_id for i in items] == [iid]
        assert time.monotonic() - t0 < 5

    async def test_poll_waits_for_work_only_if_the_provider_long_polls(
            self, provider: Provider) -> None:
        if not isinstance(provider, FastPath):
            pytest.skip(f"{type(provider).__name__} does not poll (no FastPath)")
        assert await provider.fetch_orchestration_items(LOCK) == []  # open, and empty
        t0 = time.monotonic()
        poll = asyncio.ensure_future(provider.poll_orchestration_items(LOCK, 5, wait=10))
        if not provider.long_poll:
            assert await asyncio.wait_for(poll, 9) == []
            assert time.monotonic() - t0 < 5  # the default answers at once
            return
        await asyncio.sleep(0.05)
        assert not poll.done()
        iid = uid()
        t0 = time.monotonic()
        await create(provider, iid)
        items = await asyncio.wait_for(poll, 9)
        assert [i.instance_id for i in items] == [iid]
        assert time.monotonic() - t0 < 5  # woken by the start, not by the deadline
        assert await provider.fetch_orchestration_items(LOCK) == []  # it holds the lock

    async def test_an_acknowledged_turn_is_visible_at_once(self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        item = await fetch_one(provider)
        await provider.ack_orchestration_item(item.lock_token, commit(started()))
        rec = await provider.get_instance(iid)
        assert rec is not None and rec.state == "RUNNING" and rec.history_len == 1

    # ------------------------------------------------------------ instance locks
    async def test_locked_instance_is_not_fetched_again(self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        await fetch_one(provider)
        await provider.enqueue_orchestrator_message(raised(iid))
        assert await provider.fetch_orchestration_items(HOLD, limit=10) == []

    async def test_lock_is_per_instance(self, provider: Provider) -> None:
        a, b = uid("a"), uid("b")
        await create(provider, a)
        held = await fetch_one(provider)
        await create(provider, b)
        other = await fetch_one(provider)
        assert (held.instance_id, other.instance_id) == (a, b)
        assert held.lock_token != other.lock_token

    async def test_expired_lock_is_fetched_again_with_attempt_2(self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        first = await fetch_one(provider, LOCK)
        await self.expire(LOCK)
        second = await fetch_one(provider)
        assert second.instance_id == iid
        assert second.attempt == 2
        assert second.lock_token != first.lock_token
        assert [qm.id for qm in second.messages] == [qm.id for qm in first.messages]

    async def test_expired_lock_ack_raises_even_if_not_taken_over(
            self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        item = await fetch_one(provider, LOCK)
        await self.expire(LOCK)
        with pytest.raises(LockLost):
            await provider.ack_orchestration_item(item.lock_token, commit(started()))
        assert await provider.read_history(iid) == []
        again = await fetch_one(provider)
        assert again.instance_id == iid and len(again.messages) == 1

    async def test_taken_over_lock_cannot_ack_but_new_one_can(self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        old = await fetch_one(provider, LOCK)
        await self.expire(LOCK)
        new = await fetch_one(provider)
        with pytest.raises(LockLost):
            await provider.ack_orchestration_item(old.lock_token, commit(started()))
        await provider.ack_orchestration_item(new.lock_token, commit(started()))
        assert await provider.read_history(iid) == [started()]

    async def test_messages_arriving_during_a_turn_stay_for_the_next_fetch(
            self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        item = await fetch_one(provider)
        await provider.enqueue_orchestrator_message(raised(iid, "during"))
        assert await provider.fetch_orchestration_items(HOLD, limit=10) == []
        await provider.ack_orchestration_item(item.lock_token, commit(started()))
        nxt = await fetch_one(provider)
        assert [e.kind for e in events_of(nxt)] == ["EventRaised"]
        assert nxt.attempt == 1
        assert nxt.instance is not None and nxt.instance.history_len == 1

    async def test_takeover_delivers_messages_that_arrived_meanwhile(
            self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        await fetch_one(provider, LOCK)
        await provider.enqueue_orchestrator_message(raised(iid, "meanwhile"))
        await self.expire(LOCK)
        item = await fetch_one(provider)
        assert [e.kind for e in events_of(item)] == ["OrchestrationStarted", "EventRaised"]
        assert item.attempt == 2  # the highest count among the delivered messages

    # ------------------------------------------------------------ ack
    async def test_ack_appends_history_and_updates_record(self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        before = await provider.get_instance(iid)
        item = await fetch_one(provider)
        hist = [started(), scheduled(2), TimerCreated(event_id=3, ts=TS, fire_at=TS + 5000)]
        await provider.ack_orchestration_item(item.lock_token, commit(*hist))
        assert await provider.read_history(iid) == hist
        rec = await provider.get_instance(iid)
        assert before is not None and rec is not None
        assert rec.state == "RUNNING" and rec.history_len == 3 and rec.execution_id == 1
        assert rec.created_at == before.created_at
        assert rec.updated_at >= before.updated_at

    async def test_ack_consumes_the_delivered_messages(self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        await provider.enqueue_orchestrator_message(raised(iid))
        item = await fetch_one(provider)
        await provider.ack_orchestration_item(item.lock_token, commit(started()))
        assert await provider.fetch_orchestration_items(HOLD, limit=10) == []

    async def test_history_accumulates_over_turns(self, provider: Provider) -> None:
        iid = uid()
        await first_turn(provider, iid, scheduled(2))
        await provider.enqueue_orchestrator_message(raised(iid))
        item = await fetch_one(provider)
        assert item.instance is not None and item.instance.history_len == 2
        more = [EventRaised(event_id=3, ts=TS, name="go", data="1"), scheduled(4, "second")]
        await provider.ack_orchestration_item(item.lock_token, commit(*more))
        assert await provider.read_history(iid) == [started(), scheduled(2), *more]
        rec = await provider.get_instance(iid)
        assert rec is not None and rec.history_len == 4

    async def test_ack_enqueues_activities(self, provider: Provider) -> None:
        iid = uid()
        w1, w2 = work(iid, 2, name="one"), work(iid, 3, name="two", input=None)
        await first_turn(provider, iid, scheduled(2, "one"), scheduled(3, "two", None),
                         activities=[w1, w2])
        items = await provider.fetch_activity_items(HOLD, limit=10)
        assert [i.work for i in items] == [w1, w2]

    async def test_ack_enqueues_messages_for_other_instances(self, provider: Provider) -> None:
        a, b = uid("a"), uid("b")
        await first_turn(provider, b)
        note = raised(b, "from-a", '"hi"')
        await first_turn(provider, a, messages=[note])
        item = await fetch_one(provider)
        assert item.instance_id == b and events_of(item) == [note.event]

    async def test_ack_child_start_creates_child_record(self, provider: Provider) -> None:
        parent, child = uid("parent"), uid("child")
        start = start_message(child, "child::orch", version="2.0.0", input='"x"',
                              parent_instance_id=parent)
        await first_turn(provider, parent, messages=[start])
        rec = await provider.get_instance(child)
        assert rec is not None
        assert (rec.name, rec.version, rec.state, rec.parent_instance_id) == (
            "child::orch", "2.0.0", "PENDING", parent)
        assert rec.execution_id == 1 and rec.history_len == 0
        item = await fetch_one(provider)
        assert item.instance_id == child and events_of(item) == [start.event]
        assert item.instance == rec

    async def test_ack_start_for_existing_instance_keeps_its_record(
            self, provider: Provider) -> None:
        a, b = uid("a"), uid("b")
        await first_turn(provider, b)
        before = await provider.get_instance(b)
        dup = start_message(b, "something::else", version="5.0.0", parent_instance_id=a)
        await first_turn(provider, a, messages=[dup])
        assert await provider.get_instance(b) == before
        item = await fetch_one(provider)  # the message itself is still delivered
        assert item.instance_id == b and events_of(item) == [dup.event]

    async def test_ack_timer_message_is_invisible_until_visible_at(
            self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        item = await fetch_one(provider)
        # The due time is taken once the store is in use: a store's first operation
        # may take longer than LOCK (a new PostgreSQL schema is created and migrated).
        fire = OrchestratorMessage(iid, TimerFired(ts=TS, source_event_id=2, fire_at=TS), 1,
                                   time.time() + LOCK)
        await provider.ack_orchestration_item(item.lock_token, commit(
            started(), TimerCreated(event_id=2, ts=TS, fire_at=TS), messages=[fire]))
        assert await provider.fetch_orchestration_items(HOLD, limit=10) == []
        await self.expire(LOCK)
        item = await fetch_one(provider)
        assert events_of(item) == [fire.event]

    async def test_ack_stores_output_and_terminal_state(self, provider: Provider) -> None:
        iid = uid()
        await first_turn(provider, iid, OrchestrationCompleted(event_id=2, ts=TS, output='[1]'),
                         state="COMPLETED", output="[1]", custom_status='"final"')
        rec = await provider.get_instance(iid)
        assert rec is not None
        assert (rec.state, rec.output, rec.error, rec.custom_status) == (
            "COMPLETED", "[1]", None, '"final"')

    async def test_ack_stores_error_details(self, provider: Provider) -> None:
        iid = uid()
        err = ErrorDetails("nondeterminism", "NondeterminismError", "expected 'a', got 'b'")
        await first_turn(provider, iid, OrchestrationFailed(
            event_id=2, ts=TS, error_kind=err.kind, error_type=err.error_type,
            message=err.message), state="FAILED", error=err)
        rec = await provider.get_instance(iid)
        assert rec is not None and rec.state == "FAILED" and rec.error == err

    async def test_record_fields_take_the_commit_values_as_given(
            self, provider: Provider) -> None:
        iid = uid()
        await first_turn(provider, iid, custom_status='"s1"')
        await provider.enqueue_orchestrator_message(raised(iid))
        item = await fetch_one(provider)
        await provider.ack_orchestration_item(item.lock_token, commit(
            EventRaised(event_id=2, ts=TS, name="go", data="1"),
            name="renamed", version="3.1.4", custom_status=None))
        rec = await provider.get_instance(iid)
        assert rec is not None
        assert (rec.name, rec.version, rec.custom_status) == ("renamed", "3.1.4", None)

    async def test_ack_releases_the_lock(self, provider: Provider) -> None:
        iid = uid()
        await first_turn(provider, iid)
        await provider.enqueue_orchestrator_message(raised(iid))
        item = await fetch_one(provider)
        assert item.instance_id == iid

    async def test_ack_with_bogus_token_raises_and_changes_nothing(
            self, provider: Provider) -> None:
        iid, child = uid(), uid("child")
        await create(provider, iid)
        item = await fetch_one(provider)
        with pytest.raises(LockLost):
            await provider.ack_orchestration_item("no-such-token", commit(
                started(), scheduled(2), activities=[work(iid)],
                messages=[start_message(child, parent_instance_id=iid)]))
        assert await provider.read_history(iid) == []
        assert await provider.get_instance(child) is None
        assert await provider.fetch_activity_items(HOLD, limit=10) == []
        rec = await provider.get_instance(iid)
        assert rec is not None and rec.state == "PENDING"
        await provider.ack_orchestration_item(item.lock_token, commit(started()))  # still held

    async def test_ack_after_expiry_changes_nothing(self, provider: Provider) -> None:
        iid, child = uid(), uid("child")
        await create(provider, iid)
        item = await fetch_one(provider, LOCK)
        await self.expire(LOCK)
        with pytest.raises(LockLost):
            await provider.ack_orchestration_item(item.lock_token, commit(
                started(), scheduled(2), state="COMPLETED", output="1",
                activities=[work(iid)], messages=[start_message(child)]))
        rec = await provider.get_instance(iid)
        assert rec is not None and (rec.state, rec.output, rec.history_len) == (
            "PENDING", None, 0)
        assert await provider.get_instance(child) is None
        assert await provider.fetch_activity_items(HOLD, limit=10) == []
        again = await fetch_one(provider)
        assert again.instance_id == iid and len(again.messages) == 1

    async def test_second_ack_with_same_token_raises(self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        item = await fetch_one(provider)
        await provider.ack_orchestration_item(item.lock_token, commit(started()))
        with pytest.raises(LockLost):
            await provider.ack_orchestration_item(item.lock_token, commit(
                scheduled(2), activities=[work(iid)]))
        assert await provider.read_history(iid) == [started()]
        assert await provider.fetch_activity_items(HOLD, limit=10) == []

    async def test_ack_with_duplicate_event_id_fails_atomically(
            self, provider: Provider) -> None:
        iid = uid()
        await first_turn(provider, iid, scheduled(2))
        await provider.enqueue_orchestrator_message(raised(iid))
        item = await fetch_one(provider)
        with pytest.raises(ProviderError):
            await provider.ack_orchestration_item(item.lock_token, commit(
                EventRaised(event_id=3, ts=TS, name="go", data="1"), scheduled(2, "again"),
                activities=[work(iid, 2)], state="COMPLETED"))
        assert await provider.read_history(iid) == [started(), scheduled(2)]
        assert await provider.fetch_activity_items(HOLD, limit=10) == []
        rec = await provider.get_instance(iid)
        assert rec is not None and rec.state == "RUNNING"
        # the failed ack kept the lock: the turn can still be committed correctly
        await provider.ack_orchestration_item(item.lock_token, commit(
            EventRaised(event_id=3, ts=TS, name="go", data="1")))
        assert len(await provider.read_history(iid)) == 3

    # ------------------------------------------------------------ renew
    async def test_renew_extends_the_lock(self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        item = await fetch_one(provider, LOCK)
        await provider.renew_orchestration_lock(item.lock_token, HOLD)
        await self.expire(LOCK)
        assert await provider.fetch_orchestration_items(HOLD, limit=10) == []
        await provider.ack_orchestration_item(item.lock_token, commit(started()))
        assert await provider.read_history(iid) == [started()]

    async def test_renew_after_expiry_raises(self, provider: Provider) -> None:
        await create(provider, uid())
        item = await fetch_one(provider, LOCK)
        await self.expire(LOCK)
        with pytest.raises(LockLost):
            await provider.renew_orchestration_lock(item.lock_token, HOLD)

    async def test_renew_with_unknown_or_released_token_raises(self, provider: Provider) -> None:
        with pytest.raises(LockLost):
            await provider.renew_orchestration_lock("no-such-token", HOLD)
        await create(provider, uid())
        item = await fetch_one(provider)
        await provider.ack_orchestration_item(item.lock_token, commit(started()))
        with pytest.raises(LockLost):
            await provider.renew_orchestration_lock(item.lock_token, HOLD)

    # ------------------------------------------------------------ abandon and attempts
    async def test_abandon_makes_messages_fetchable_again(self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        item = await fetch_one(provider)
        await provider.abandon_orchestration_item(item.lock_token)
        again = await fetch_one(provider)
        assert again.instance_id == iid and again.attempt == 2
        assert [qm.id for qm in again.messages] == [qm.id for qm in item.messages]
        assert await provider.read_history(iid) == []

    async def test_abandon_with_delay_hides_the_instance(self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        item = await fetch_one(provider)
        await provider.abandon_orchestration_item(item.lock_token, delay=LOCK)
        assert await provider.fetch_orchestration_items(HOLD, limit=10) == []
        # a message arriving during the delay waits too: delivery stays in FIFO order
        await provider.enqueue_orchestrator_message(raised(iid, "meanwhile"))
        assert await provider.fetch_orchestration_items(HOLD, limit=10) == []
        await self.expire(LOCK)
        again = await fetch_one(provider)
        assert [e.kind for e in events_of(again)] == ["OrchestrationStarted", "EventRaised"]
        assert again.attempt == 2

    async def test_attempt_keeps_growing_across_abandons(self, provider: Provider) -> None:
        await create(provider, uid())
        attempts = []
        for _ in range(4):
            item = await fetch_one(provider)
            attempts.append(item.attempt)
            await provider.abandon_orchestration_item(item.lock_token)
        assert attempts == [1, 2, 3, 4]

    async def test_attempt_is_highest_count_among_delivered_messages(
            self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        for _ in range(2):
            item = await fetch_one(provider)
            await provider.abandon_orchestration_item(item.lock_token)
        await provider.enqueue_orchestrator_message(raised(iid))
        item = await fetch_one(provider)
        assert len(item.messages) == 2 and item.attempt == 3

    async def test_attempt_starts_at_1_for_new_messages_after_ack(
            self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        item = await fetch_one(provider)
        await provider.abandon_orchestration_item(item.lock_token)
        item = await fetch_one(provider)
        assert item.attempt == 2
        await provider.ack_orchestration_item(item.lock_token, commit(started()))
        await provider.enqueue_orchestrator_message(raised(iid))
        assert (await fetch_one(provider)).attempt == 1

    async def test_abandon_with_stale_token_raises(self, provider: Provider) -> None:
        with pytest.raises(LockLost):
            await provider.abandon_orchestration_item("no-such-token")
        await create(provider, uid())
        item = await fetch_one(provider, LOCK)
        await self.expire(LOCK)
        with pytest.raises(LockLost):
            await provider.abandon_orchestration_item(item.lock_token)

    async def test_abandoned_token_can_no_longer_ack(self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        item = await fetch_one(provider)
        await provider.abandon_orchestration_item(item.lock_token)
        with pytest.raises(LockLost):
            await provider.ack_orchestration_item(item.lock_token, commit(started()))
        assert await provider.read_history(iid) == []

    # ------------------------------------------------------------ executions
    async def test_continue_as_new_keeps_history_per_execution(
            self, provider: Provider) -> None:
        iid = uid()
        exec1 = [started(), OrchestrationContinuedAsNew(event_id=2, ts=TS, input='"next"')]
        restart = start_message(iid, input='"next"', execution_id=2)
        await first_turn(provider, iid, exec1[1], messages=[restart])
        item = await fetch_one(provider)
        assert events_of(item) == [restart.event]
        assert item.instance is not None and item.instance.execution_id == 1
        exec2 = [started(input='"next"', execution_id=2), scheduled(2)]
        await provider.ack_orchestration_item(item.lock_token,
                                              commit(*exec2, execution_id=2))
        assert await provider.read_history(iid) == exec2
        assert await provider.read_history(iid, 2) == exec2
        assert await provider.read_history(iid, 1) == exec1
        assert await provider.list_executions(iid) == [1, 2]
        rec = await provider.get_instance(iid)
        assert rec is not None and rec.execution_id == 2 and rec.history_len == 2

    async def test_history_len_counts_the_current_execution_only(
            self, provider: Provider) -> None:
        iid = uid()
        await first_turn(provider, iid, scheduled(2), scheduled(3),
                         OrchestrationContinuedAsNew(event_id=4, ts=TS),
                         messages=[start_message(iid, execution_id=2)])
        rec = await provider.get_instance(iid)
        assert rec is not None and rec.history_len == 4
        item = await fetch_one(provider)
        await provider.ack_orchestration_item(
            item.lock_token, commit(started(execution_id=2), execution_id=2))
        rec = await provider.get_instance(iid)
        assert rec is not None and rec.history_len == 1

    async def test_read_history_of_unknown_execution_or_instance_is_empty(
            self, provider: Provider) -> None:
        iid = uid()
        await first_turn(provider, iid)
        assert await provider.read_history(iid, 7) == []
        assert await provider.read_history(uid("unknown")) == []
        assert await provider.list_executions(uid("unknown")) == []
        assert await provider.list_executions(iid) == [1]

    async def test_pending_instance_has_no_executions(self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        assert await provider.list_executions(iid) == []
        assert await provider.read_history(iid) == []


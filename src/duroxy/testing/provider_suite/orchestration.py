"""Conformance tests for instance creation and the orchestration queue: starts, fetch
batching, long polling and instance locks (what a turn's commit does: ``commits``)."""

from __future__ import annotations

import asyncio
import time

import pytest

from ...errors import (
    InstanceAlreadyExists,
    InstanceNotFound,
    LockLost,
)
from ...history import (
    EventRaised,
    OrchestrationCompleted,
)
from ...providers.base import FastPath, Provider
from .commits import TurnCommitTests
from .support import (
    HOLD,
    LOCK,
    NAME,
    TS,
    VERSION,
    commit,
    create,
    events_of,
    fetch_first,
    fetch_one,
    first_turn,
    raised,
    started,
    uid,
)

__all__ = ["OrchestrationQueueTests"]


class OrchestrationQueueTests(TurnCommitTests):
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

"""Conformance tests of a turn's commit: what an ack stores and sends, lock renewal,
abandoning with and without a delay (and what counts as an attempt), and executions."""


from __future__ import annotations

import time

import pytest

from ...errors import (
    ErrorDetails,
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
from ...providers.base import Provider
from .support import (
    HOLD,
    LOCK,
    TS,
    ConformanceBase,
    commit,
    create,
    events_of,
    fetch_one,
    first_turn,
    raised,
    scheduled,
    start_message,
    started,
    uid,
    work,
)

__all__ = ["TurnCommitTests"]


class TurnCommitTests(ConformanceBase):
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

    async def test_ack_with_an_event_id_already_stored_or_repeated_fails(
            self, provider: Provider) -> None:
        iid = uid()
        await first_turn(provider, iid, scheduled(2))
        for events in ([scheduled(2, "again")],  # the last stored id, alone
                       [scheduled(3), scheduled(3, "twin")]):  # twice in one commit
            await provider.enqueue_orchestrator_message(raised(iid))
            item = await fetch_one(provider)
            with pytest.raises(ProviderError):
                await provider.ack_orchestration_item(item.lock_token, commit(*events))
            assert await provider.read_history(iid) == [started(), scheduled(2)]
            await provider.abandon_orchestration_item(item.lock_token)

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

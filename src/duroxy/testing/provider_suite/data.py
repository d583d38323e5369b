"""Conformance tests for stored data and side channels: exact round trips of ids,
names, payloads and every event kind; undecodable stored data; listeners; messages for
instances without a record; closing."""

from __future__ import annotations

import uuid

import pytest

from ...errors import ErrorDetails, LockLost, PayloadError
from ...history import (
    ActivityCompleted,
    ActivityFailedEvent,
    ActivityScheduled,
    CancellationRequested,
    CustomStatusSet,
    DetachedOrchestrationScheduled,
    EventRaised,
    EventSubscribed,
    GuidRecorded,
    HistoryEvent,
    OrchestrationCancelled,
    OrchestrationCompleted,
    OrchestrationContinuedAsNew,
    OrchestrationFailed,
    OrchestrationStarted,
    OrchestratorMessage,
    SubOrchestrationCompleted,
    SubOrchestrationFailedEvent,
    SubOrchestrationScheduled,
    TimerCreated,
    TimerFired,
    UtcNowRecorded,
    WorkCancelled,
)
from ...providers.base import Provider
from .support import (
    HOLD,
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
    start_message,
    started,
    uid,
    work,
)

__all__ = ["DataTests"]

#: Identifier shapes that trip up stores: ``{u}`` becomes a unique token.
ID_SHAPES: dict[str, str] = {
    "unicode": "ünïcødé ✓ 日本語 🚀 {u}",
    "quotes": "it's \"quoted\" `{u}`",
    "sql": "'; drop table x; -- {u}",
    "wildcards": "100%_done\\*?[{u}]",
    "whitespace": "  {u}\t\n  ",
    "separators": "pkg::orchestration::{u}/a.b",
    "long": "{u}" + "✓ж" * 600,  # cut to exactly 1024 characters
}

#: JSON texts that must come back byte for byte.
PAYLOADS: dict[str, str] = {
    "big_ints": '{"big":123456789012345678901234567890,"neg":-98765432109876543210}',
    "floats": "[0.1,1e308,-0.0,3.141592653589793,5e-324]",
    "unicode": '"ünïcødé ✓ 日本語 🚀 \\u0000 \\n \\" \\\\ \'"',
    "nested": '{"nested":{"a":[{"b":[[],{}]}],"t":true,"f":false,"n":null}}',
    "sql": '"\'; drop table x; --"',
    "whitespace": '  { "spaced" : [ 1 , 2 ] , "b" : 1 , "a" : 2 }  ',
    "large": '"' + "x" * 200_000 + '"',
}


def shaped_id(shape: str) -> str:
    return ID_SHAPES[shape].replace("{u}", uuid.uuid4().hex)[:1024]


def other_last(text: str) -> str:
    """``text`` with its last character changed (same length, never equal)."""
    return text[:-1] + ("y" if text[-1] != "y" else "z")


def every_event_kind() -> list[HistoryEvent]:
    """One event of every kind, with every field set away from its default."""
    return [
        OrchestrationStarted(event_id=1, ts=TS, name="n", version="1.2.3", input='{"a":[1]}',
                             execution_id=4, parent_instance_id="p ✓", parent_execution_id=2,
                             parent_event_id=9, custom_status='"carried"'),
        CustomStatusSet(event_id=2, ts=TS + 1, status='{"step":2}'),
        UtcNowRecorded(event_id=3, ts=TS + 2, value_us=1_700_000_000_123_456),
        GuidRecorded(event_id=4, ts=TS, value=str(uuid.UUID(int=7))),
        ActivityScheduled(event_id=5, ts=TS, name="act", input='"x"', attempt=2),
        ActivityCompleted(event_id=6, ts=TS, source_event_id=5, result="null"),
        ActivityFailedEvent(event_id=7, ts=TS, source_event_id=5, error_type="mod.E",
                            message="boom ✗", error_kind="poison"),
        TimerCreated(event_id=8, ts=TS, fire_at=TS + 1000),
        TimerFired(event_id=9, ts=TS, source_event_id=8, fire_at=TS + 1000),
        EventSubscribed(event_id=10, ts=TS, name="approve"),
        EventRaised(event_id=11, ts=TS, name="approve", data=None),
        SubOrchestrationScheduled(event_id=12, ts=TS, name="child", instance_id="c",
                                  input=None, version="2.0.0"),
        SubOrchestrationCompleted(event_id=13, ts=TS, source_event_id=12, result="1"),
        SubOrchestrationFailedEvent(event_id=14, ts=TS, source_event_id=12, error_type="T",
                                    message="m"),
        DetachedOrchestrationScheduled(event_id=15, ts=TS, name="d", instance_id="d-1",
                                       input='"i"', version=None),
        WorkCancelled(event_id=16, ts=TS, source_event_id=5),
        CancellationRequested(event_id=17, ts=TS, reason="stop"),
        OrchestrationCancelled(event_id=18, ts=TS, reason="stop"),
        OrchestrationContinuedAsNew(event_id=19, ts=TS, input="[]", version="9.0.0"),
        OrchestrationFailed(event_id=20, ts=TS, error_kind="nondeterminism", error_type="N",
                            message="code changed"),
        OrchestrationCompleted(event_id=21, ts=TS, output='{"done":true}'),
    ]


class DataTests(ConformanceBase):
    # ------------------------------------------------------------ round trips
    @pytest.mark.parametrize("shape", sorted(ID_SHAPES))
    async def test_ids_and_names_round_trip_exactly(self, provider: Provider,
                                                    shape: str) -> None:
        iid, name, child = shaped_id(shape), shaped_id(shape), shaped_id(shape)
        if shape == "long":
            assert len(iid) == 1024
        # neighbours a pattern match or a case/trim folding store would confuse with ours
        lookalike = iid.replace("%", "abc").replace("_", "Q")
        neighbour = lookalike if lookalike != iid else other_last(iid)
        await create(provider, neighbour, other_last(name))
        await create(provider, iid, name)
        rec = await provider.get_instance(iid)
        assert rec is not None and (rec.instance_id, rec.name) == (iid, name)
        await provider.enqueue_orchestrator_message(raised(iid, name, '"d"'))
        items = await provider.fetch_orchestration_items(HOLD, limit=10)
        [item] = [i for i in items if i.instance_id == iid]
        assert events_of(item)[1] == EventRaised(ts=TS, name=name, data='"d"')
        w = work(iid, 2, name=name)
        hist = [started(name), ActivityScheduled(event_id=2, ts=TS, name=name, input='"in"')]
        await provider.ack_orchestration_item(item.lock_token, commit(
            *hist, name=name, activities=[w],
            messages=[start_message(child, "child::orch", parent_instance_id=iid)]))
        assert await provider.read_history(iid) == hist
        assert [r.instance_id for r in await provider.list_instances(name=name)] == [iid]
        assert [r.instance_id for r in await provider.list_instances(
            parent_instance_id=iid)] == [child]
        [act] = await provider.fetch_activity_items(HOLD, limit=10)
        assert act.work == w
        await provider.ack_activity(act.lock_token, activity_completion(w))
        assert await provider.delete_instance(iid) == 2
        assert await provider.get_instance(iid) is None
        kept = await provider.get_instance(neighbour)
        assert kept is not None and kept.name == other_last(name)

    @pytest.mark.parametrize("kind", sorted(PAYLOADS))
    async def test_payloads_round_trip_exactly(self, provider: Provider, kind: str) -> None:
        payload = PAYLOADS[kind]
        iid = uid()
        msg = await create(provider, iid, input=payload)
        await provider.enqueue_orchestrator_message(raised(iid, "data", payload))
        item = await fetch_one(provider)
        assert events_of(item) == [msg.event, EventRaised(ts=TS, name="data", data=payload)]
        w = work(iid, 3, input=payload)
        hist = [started(input=payload), EventRaised(event_id=2, ts=TS, name="data", data=payload),
                scheduled(3, input=payload)]
        await provider.ack_orchestration_item(item.lock_token, commit(
            *hist, custom_status=payload, activities=[w]))
        assert await provider.read_history(iid) == hist
        rec = await provider.get_instance(iid)
        assert rec is not None and rec.custom_status == payload
        [act] = await provider.fetch_activity_items(HOLD, limit=10)
        assert act.work.input == payload
        await provider.ack_activity(act.lock_token, activity_completion(w, payload))
        item = await fetch_one(provider)
        assert events_of(item) == [ActivityCompleted(ts=TS, source_event_id=3, result=payload)]
        await provider.ack_orchestration_item(item.lock_token, commit(
            OrchestrationCompleted(event_id=4, ts=TS, output=payload),
            state="COMPLETED", output=payload, custom_status=payload))
        rec = await provider.get_instance(iid)
        assert rec is not None and (rec.output, rec.custom_status) == (payload, payload)

    async def test_every_event_kind_round_trips_in_history(self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        item = await fetch_one(provider)
        hist = every_event_kind()
        await provider.ack_orchestration_item(item.lock_token, commit(*hist))
        assert await provider.read_history(iid) == hist
        rec = await provider.get_instance(iid)
        assert rec is not None and rec.history_len == len(hist)

    async def test_every_event_kind_round_trips_as_message(self, provider: Provider) -> None:
        iid = uid()
        start = await create(provider, iid)
        sent = [OrchestratorMessage(iid, e, n % 3 or None) for n, e in
                enumerate(every_event_kind())]
        for m in sent:
            await provider.enqueue_orchestrator_message(m)
        item = await fetch_one(provider)
        got = [qm.message for qm in item.messages]
        assert got[0] is not None and got[0].event == start.event
        assert [(m.event, m.execution_id) for m in got[1:] if m is not None] == [
            (m.event, m.execution_id) for m in sent]

    async def test_error_details_round_trip(self, provider: Provider) -> None:
        iid = uid()
        err = ErrorDetails("poison", "duroxy.errors.Poison ✗", "gave up after 5 tries: "
                           "'; drop table x; --\n" + "é" * 5000)
        await first_turn(provider, iid, state="FAILED", error=err)
        rec = await provider.get_instance(iid)
        assert rec is not None and rec.error == err and rec.output is None

    async def test_custom_status_survives_completion_and_can_change(
            self, provider: Provider) -> None:
        iid = uid()
        await first_turn(provider, iid, CustomStatusSet(event_id=2, ts=TS, status='{"p":1}'),
                         custom_status='{"p":1}')
        rec = await provider.get_instance(iid)
        assert rec is not None and rec.custom_status == '{"p":1}'
        await provider.enqueue_orchestrator_message(raised(iid))
        item = await fetch_one(provider)
        assert item.instance is not None and item.instance.custom_status == '{"p":1}'
        await provider.ack_orchestration_item(item.lock_token, commit(
            OrchestrationCompleted(event_id=3, ts=TS), state="COMPLETED",
            custom_status='{"p":2}'))
        rec = await provider.get_instance(iid)
        assert rec is not None and rec.custom_status == '{"p":2}'
        listed = [r for r in await provider.list_instances(state="COMPLETED", limit=1000)
                  if r.instance_id == iid]
        assert [r.custom_status for r in listed] == ['{"p":2}']

    # ------------------------------------------------------------ undecodable data
    async def test_undecodable_history_fails_reads_of_that_instance_only(
            self, provider: Provider) -> None:
        bad, good = uid("bad"), uid("good")
        await first_turn(provider, bad, scheduled(2))
        await first_turn(provider, good, scheduled(2))
        await self.corrupt_history(provider, bad)
        with pytest.raises(PayloadError):
            await provider.read_history(bad)
        assert await provider.read_history(good) == [started(), scheduled(2)]
        rec = await provider.get_instance(bad)
        assert rec is not None and rec.state == "RUNNING"

    async def test_undecodable_history_does_not_block_the_queues(
            self, provider: Provider) -> None:
        bad, good = uid("bad"), uid("good")
        await first_turn(provider, bad)
        await first_turn(provider, good)
        await self.corrupt_history(provider, bad)
        await provider.enqueue_orchestrator_message(raised(bad))
        await provider.enqueue_orchestrator_message(raised(good))
        items = await provider.fetch_orchestration_items(HOLD, limit=10)
        assert sorted(i.instance_id for i in items) == sorted([bad, good])
        for item in items:
            await provider.ack_orchestration_item(item.lock_token, commit(
                EventRaised(event_id=2, ts=TS, name="go", data="1"),
                state="FAILED" if item.instance_id == bad else "RUNNING",
                error=ErrorDetails("poison", "PayloadError", "history does not decode")
                if item.instance_id == bad else None))
        assert len(await provider.read_history(good)) == 2
        rec = await provider.get_instance(bad)
        assert rec is not None and rec.state == "FAILED"

    async def test_undecodable_message_is_delivered_with_decode_error(
            self, provider: Provider) -> None:
        bad, good = uid("bad"), uid("good")
        await create(provider, bad)
        await provider.enqueue_orchestrator_message(raised(bad))
        await self.corrupt_messages(provider, bad)
        good_start = await create(provider, good)
        items = {i.instance_id: i for i in
                 await provider.fetch_orchestration_items(HOLD, limit=10)}
        assert sorted(items) == sorted([bad, good])
        broken = items[bad]
        assert len(broken.messages) == 2
        for qm in broken.messages:
            assert qm.message is None
            assert isinstance(qm.decode_error, str) and qm.decode_error
        assert broken.instance is not None and broken.instance.name
        assert events_of(items[good]) == [good_start.event]
        await provider.ack_orchestration_item(broken.lock_token, commit(
            state="FAILED", error=ErrorDetails("poison", "PayloadError", "undecodable")))
        await provider.ack_orchestration_item(items[good].lock_token, commit(started()))
        assert await provider.fetch_orchestration_items(HOLD, limit=10) == []
        rec = await provider.get_instance(bad)
        assert rec is not None and rec.state == "FAILED"

    async def test_messages_after_corruption_decode(self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        await self.corrupt_messages(provider, iid)
        later = raised(iid, "later")
        await provider.enqueue_orchestrator_message(later)
        item = await fetch_one(provider)
        assert [qm.message is None for qm in item.messages] == [True, False]
        assert item.messages[1].message is not None
        assert item.messages[1].message.event == later.event

    # ------------------------------------------------------------ listeners
    async def test_orchestrator_listener_on_create(self, provider: Provider) -> None:
        calls = self.subscribe(provider, "orchestrator")
        iid = uid()
        await create(provider, iid)
        await calls.wait_for(iid)

    async def test_orchestrator_listener_on_enqueue(self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        calls = self.subscribe(provider, "orchestrator")
        await provider.enqueue_orchestrator_message(raised(iid))
        await calls.wait_for(iid)

    async def test_orchestrator_listener_on_ack_with_messages(self, provider: Provider) -> None:
        a, b = uid("a"), uid("b")
        await create(provider, a)
        item = await fetch_one(provider)
        calls = self.subscribe(provider, "orchestrator")
        await provider.ack_orchestration_item(item.lock_token, commit(
            started(), messages=[start_message(b, parent_instance_id=a)]))
        await calls.wait_for(b)

    async def test_activity_listener_on_ack_with_activities(self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        item = await fetch_one(provider)
        calls = self.subscribe(provider, "activity")
        await provider.ack_orchestration_item(item.lock_token, commit(
            started(), scheduled(2), activities=[work(iid)]))
        await calls.wait_for(iid)

    async def test_orchestrator_listener_on_activity_ack(self, provider: Provider) -> None:
        iid = uid()
        w = work(iid)
        await first_turn(provider, iid, scheduled(2), activities=[w])
        [act] = await provider.fetch_activity_items(HOLD, limit=10)
        calls = self.subscribe(provider, "orchestrator")
        await provider.ack_activity(act.lock_token, activity_completion(w))
        await calls.wait_for(iid)

    async def test_terminal_listener_names_the_instance(self, provider: Provider) -> None:
        running, done = uid("running"), uid("done")
        calls = self.subscribe(provider, "terminal")
        await first_turn(provider, running)
        await first_turn(provider, done, OrchestrationCompleted(event_id=2, ts=TS),
                         state="COMPLETED")
        await calls.wait_exact(done)
        assert running not in calls.seen()

    @pytest.mark.parametrize("state", ["FAILED", "CANCELLED"])
    async def test_terminal_listener_on_failure_and_cancel(self, provider: Provider,
                                                            state: str) -> None:
        iid = uid()
        calls = self.subscribe(provider, "terminal")
        await first_turn(provider, iid, state=state,
                         error=ErrorDetails("cancelled" if state == "CANCELLED" else
                                            "application", "E", "m"))
        await calls.wait_exact(iid)

    async def test_unsubscribed_listener_is_not_called(self, provider: Provider) -> None:
        gone = self.subscribe(provider, "orchestrator")
        kept = self.subscribe(provider, "orchestrator")
        gone.unsubscribe()
        gone.unsubscribe()  # unsubscribing twice is harmless
        iid = uid()
        await create(provider, iid)
        await kept.wait_for(iid)
        assert gone.seen() == []

    async def test_several_listeners_on_one_channel(self, provider: Provider) -> None:
        first = self.subscribe(provider, "orchestrator")
        second = self.subscribe(provider, "orchestrator")
        iid = uid()
        await create(provider, iid)
        await first.wait_for(iid)
        await second.wait_for(iid)

    # ------------------------------------------------------------ messages without a record
    async def test_message_for_unknown_instance_is_delivered_without_record(
            self, provider: Provider) -> None:
        sender, ghost = uid("sender"), uid("ghost")
        note = raised(ghost, "reply", '"late"')
        await first_turn(provider, sender, messages=[note])
        item = await fetch_one(provider)
        assert item.instance_id == ghost and item.instance is None
        assert events_of(item) == [note.event]
        await provider.ack_orchestration_item(item.lock_token, commit())
        assert await provider.fetch_orchestration_items(HOLD, limit=10) == []
        assert await provider.get_instance(ghost) is None
        assert await provider.list_executions(ghost) == []

    async def test_messages_without_record_do_not_block_others(
            self, provider: Provider) -> None:
        sender, ghost, other = uid("sender"), uid("ghost"), uid("other")
        await first_turn(provider, sender, messages=[raised(ghost)])
        await create(provider, other)
        items = await provider.fetch_orchestration_items(HOLD, limit=10)
        assert sorted(i.instance_id for i in items) == sorted([ghost, other])
        by_id = {i.instance_id: i for i in items}
        assert by_id[other].instance is not None and by_id[ghost].instance is None

    async def test_ack_away_leaves_a_record_created_meanwhile_alone(
            self, provider: Provider) -> None:
        sender, ghost = uid("sender"), uid("ghost")
        await first_turn(provider, sender, messages=[raised(ghost)])
        item = await fetch_one(provider)
        assert item.instance_id == ghost and item.instance is None
        await create(provider, ghost, "created::meanwhile")
        # the turn was for an id without a record: its commit must not touch the new one
        await provider.ack_orchestration_item(item.lock_token, commit(
            state="COMPLETED", name="junk", output="0"))
        rec = await provider.get_instance(ghost)
        assert rec is not None
        assert (rec.name, rec.state, rec.output) == ("created::meanwhile", "PENDING", None)
        nxt = await fetch_one(provider)
        assert [e.kind for e in events_of(nxt)] == ["OrchestrationStarted"]

    async def test_completion_for_deleted_instance_is_ackable(
            self, provider: Provider) -> None:
        iid = uid()
        await first_turn(provider, iid)
        await provider.delete_instance(iid)
        # a completion routed by another node's late commit, after the delete
        sender = uid("sender")
        late = OrchestratorMessage(iid, ActivityCompleted(ts=TS, source_event_id=2), 1)
        await first_turn(provider, sender, messages=[late])
        item = await fetch_one(provider)
        assert item.instance_id == iid and item.instance is None and item.attempt == 1
        await provider.ack_orchestration_item(item.lock_token, commit())
        assert await provider.get_instance(iid) is None

    # ------------------------------------------------------------ lifecycle
    async def test_close_is_idempotent(self, provider: Provider) -> None:
        await provider.close()
        await provider.close()

    async def test_async_with_closes(self, provider: Provider) -> None:
        async with provider as p:
            assert p is provider
        await provider.close()

    async def test_lock_tokens_are_unique_strings(self, provider: Provider) -> None:
        iids = [uid() for _ in range(3)]
        for iid in iids:
            await create(provider, iid)
        items = await provider.fetch_orchestration_items(HOLD, limit=10)
        tokens = [i.lock_token for i in items]
        assert all(isinstance(t, str) and t for t in tokens) and len(set(tokens)) == 3
        with pytest.raises(LockLost):
            await provider.ack_orchestration_item(tokens[0] + "x", commit())

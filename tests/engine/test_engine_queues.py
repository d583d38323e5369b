"""Event queues in the replay engine (API.md section 7): ``ctx.dequeue_event`` against
``QueueEventDelivered`` messages, driven without a runtime. Every turn is also replayed
cold from the persisted history (``enginekit.Driver``), which must decide the same."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import pytest

from duroxy import MAX_CARRY_FORWARD_EVENTS, OrchestrationContext, PayloadError, codec
from duroxy.history import (
    EventRaised,
    OrchestrationStarted,
    QueueEventDelivered,
    QueueSubscribed,
    TimerCreated,
    TimerFired,
)
from enginekit import Driver, kinds

Ctx = OrchestrationContext


def q(name: str, data: Any) -> QueueEventDelivered:
    return QueueEventDelivered(name=name, data=codec.encode(data))


def fire(d: Driver) -> None:
    """Fire the pending timer."""
    [timer] = [e for e in d.pending() if isinstance(e, TimerCreated)]
    d.turn([TimerFired(source_event_id=timer.event_id, fire_at=timer.fire_at)], advance_ms=1)


def test_dequeues_take_messages_first_in_first_out_per_queue() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[Any]:
        got = []
        for _ in range(3):
            got.append(await ctx.dequeue_event("a"))
        got.append(await ctx.dequeue_event("b"))
        return got

    d = Driver(orch)
    d.start()
    d.turn([q("b", "b1"), q("a", 1)])
    d.enqueue("a", 2)
    r = d.turn([q("a", 3), q("a", 4)])
    assert r.terminal is not None and d.output == [1, 2, 3, "b1"]
    assert kinds(d.history).count("QueueSubscribed") == 4
    # "a"/4 arrived in the last turn and was never taken: it is counted unread, not lost
    # (a finished execution discards it)
    assert r.unread == 0


def test_a_message_kept_before_the_dequeue_resolves_it_in_the_same_turn() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        await ctx.schedule_timer(1)
        return await ctx.dequeue_event("inbox")

    d = Driver(orch)
    d.start()
    r = d.enqueue("inbox", {"text": "hi"})
    assert r.terminal is None and r.unread == 1
    fire(d)
    assert d.output == {"text": "hi"}
    assert kinds(d.history)[-3:] == ["TimerFired", "QueueSubscribed", "OrchestrationCompleted"]


def test_queues_and_events_never_meet() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[Any]:
        return [await ctx.schedule_wait("X"), await ctx.dequeue_event("X")]

    d = Driver(orch)
    d.start()
    r = d.enqueue("X", "queued")  # not for the wait
    assert r.terminal is None
    r = d.raise_event("X", "raised")
    assert r.terminal is not None and d.output == ["raised", "queued"]

    async def other_way(ctx: Ctx, _: Any) -> list[Any]:
        return [await ctx.dequeue_event("X"), await ctx.schedule_wait("X")]

    d = Driver(other_way)
    d.start()
    d.raise_event("X", "raised")
    r = d.turn([q("X", "queued")])
    assert d.output == ["queued", "raised"]


def test_a_dequeue_that_loses_a_select_takes_nothing() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[Any]:
        index, _value = await ctx.select2(ctx.dequeue_event("q"), ctx.schedule_timer(1))
        assert index == 1
        return [await ctx.dequeue_event("q")]

    d = Driver(orch)
    d.start()
    fire(d)  # the timer wins while the queue is empty
    d.enqueue("q", "later")  # goes to the next dequeue, not the abandoned one
    assert d.output == ["later"]


def test_a_dequeue_that_took_a_message_and_lost_a_select_gives_it_back() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[Any]:
        await ctx.schedule_timer(1)
        # both take a message at once; the one first in history wins, the other loser
        # gives its message back, in its place, for the next dequeue of its queue
        index, value = await ctx.select(ctx.dequeue_event("q"), ctx.dequeue_event("q"))
        rest = [await ctx.dequeue_event("q"), await ctx.dequeue_event("q")]
        return [index, value, *rest]

    d = Driver(orch)
    d.start()
    d.turn([q("q", 1), q("q", 2), q("q", 3)])
    fire(d)
    assert d.output == [0, 1, 2, 3]


def test_a_dequeue_in_a_cancelled_task_takes_nothing() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[Any]:
        async def reader() -> Any:
            return await ctx.dequeue_event("q")

        task = asyncio.ensure_future(reader())
        await ctx.schedule_timer(1)
        task.cancel()
        return [await ctx.dequeue_event("q")]

    d = Driver(orch)
    d.start()
    fire(d)
    d.enqueue("q", "only")
    assert d.output == ["only"]


def test_a_dequeue_with_an_activity_in_a_select_is_decided_by_history_order() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[Any]:
        act = ctx.schedule_activity("work", 1)
        index, value = await ctx.select2(ctx.dequeue_event("q"), act)
        return [index, value, await ctx.dequeue_event("q")]

    d = Driver(orch, activities={"work": lambda x: x * 10})
    d.start()
    [scheduled] = d.pending()
    # the activity completes first; the message after it goes to the later dequeue
    d.turn([d.complete(scheduled), q("q", "m")])
    assert d.output == [1, 10, "m"]


def test_each_message_reaches_the_code_once_under_replay() -> None:
    seen: list[Any] = []

    async def orch(ctx: Ctx, _: Any) -> int:
        total = 0
        for _ in range(5):
            v = await ctx.dequeue_event("n", output_type=int)
            if not ctx.is_replaying:
                seen.append(v)
            total += v
        return total

    d = Driver(orch, check_cold=False)
    d.start()
    for n in range(5):
        d.enqueue("n", n)
    assert d.output == 10
    assert seen == [0, 1, 2, 3, 4]
    # a replay of the whole history hands each message to the code again, replaying
    replayed = d.new_execution(d.history).turn([], d.now_us)
    assert replayed.new_events == [] and seen == [0, 1, 2, 3, 4]


@dataclass
class Message:
    text: str


def test_output_type_decodes_and_a_mismatch_fails_with_payload_error() -> None:
    async def orch(ctx: Ctx, _: Any) -> str:
        msg = await ctx.dequeue_event_typed("inbox", Message)
        assert isinstance(msg, Message)
        try:
            await ctx.dequeue_event("inbox", output_type=Message)
        except PayloadError as e:
            return f"refused: {type(e).__name__}"
        return "accepted"

    d = Driver(orch)
    d.start()
    d.enqueue("inbox", {"text": "hi"})
    d.enqueue("inbox", [1, 2])
    assert d.output == "refused: PayloadError"


def test_wait_for_event_typed_is_schedule_wait() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        msg = await ctx.wait_for_event_typed("e", Message)
        assert isinstance(msg, Message)
        return msg

    d = Driver(orch)
    d.start()
    d.raise_event("e", {"text": "x"})
    assert d.output == {"text": "x"}


def test_dequeuing_another_queue_than_history_is_nondeterminism() -> None:
    async def v1(ctx: Ctx, _: Any) -> Any:
        return await ctx.dequeue_event("a")

    async def v2(ctx: Ctx, _: Any) -> Any:
        return await ctx.dequeue_event("b")

    d = Driver(v1)
    d.start()
    history = list(d.history)
    assert isinstance(history[-1], QueueSubscribed) and history[-1].name == "a"
    replay = Driver(v2, history=history, check_cold=False)
    r = replay.turn([q("a", 1)])
    failed = r.terminal
    assert failed is not None and failed.kind == "OrchestrationFailed"
    assert failed.error_kind == "nondeterminism"  # type: ignore[attr-defined]
    assert "dequeue from queue 'a'" in failed.message  # type: ignore[attr-defined]
    assert "dequeue from queue 'b'" in failed.message  # type: ignore[attr-defined]


@pytest.mark.parametrize("bad", ["", "x\x00y", "z" * 1025, 5])
def test_a_bad_queue_name_is_a_value_error(bad: Any) -> None:
    async def orch(ctx: Ctx, _: Any) -> str:
        try:
            ctx.dequeue_event(bad)
        except ValueError as e:
            return str(e)
        return "accepted"

    d = Driver(orch)
    d.start()
    assert d.output.startswith("queue name")


# ------------------------------------------------------------------ continue-as-new
def test_unread_messages_of_both_mailboxes_are_carried_in_arrival_order() -> None:
    async def orch(ctx: Ctx, _: Any) -> None:
        await ctx.dequeue_event("first")
        await ctx.schedule_timer(1)
        ctx.continue_as_new(None)

    d = Driver(orch)
    d.start()
    d.turn([q("first", 0), q("q", 1), EventRaised(name="e", data="2"), q("other", 3)])
    [timer] = [e for e in d.pending() if isinstance(e, TimerCreated)]
    r = d.turn([TimerFired(source_event_id=timer.event_id, fire_at=timer.fire_at),
                q("q", 4), EventRaised(name="e", data="5")])
    assert r.terminal is not None and r.terminal.kind == "OrchestrationContinuedAsNew"
    assert [(e.kind, e.data) for e in r.undelivered] == [  # type: ignore[attr-defined]
        ("QueueEventDelivered", "1"), ("EventRaised", "2"), ("QueueEventDelivered", "3"),
        ("QueueEventDelivered", "4"), ("EventRaised", "5")]
    assert r.dropped == [] and r.unread == 0


async def hoards(ctx: Ctx, n: int) -> str:
    if n == 0:
        await ctx.dequeue_event("go")
        ctx.continue_as_new(1)
    return "done"


@pytest.mark.parametrize("total", [99, 100, 101, 300])
def test_the_cap_counts_queue_messages_and_events_together(total: int) -> None:
    d = Driver(hoards, check_cold=False)
    d.turn([OrchestrationStarted(name="orch", version="1.0.0", input="0")])
    mail = [q("q", k) if k % 2 == 0 else EventRaised(name="e", data=codec.encode(k))
            for k in range(total)]
    d.turn(mail[: total // 3])
    r = d.turn([*mail[total // 3:], q("go", None)])
    assert r.terminal is not None and r.terminal.kind == "OrchestrationContinuedAsNew"
    kept = [int(e.data) for e in r.undelivered]  # type: ignore[attr-defined]
    dropped = [int(e.data) for e in r.dropped]  # type: ignore[attr-defined]
    assert kept == list(range(min(total, MAX_CARRY_FORWARD_EVENTS)))
    assert dropped == list(range(MAX_CARRY_FORWARD_EVENTS, total))


def test_dropped_queue_messages_and_events_are_warned_about_by_name(
        caplog: pytest.LogCaptureFixture) -> None:
    from duroxy.runtime.orchestrations import _report_dropped

    d = Driver(hoards, check_cold=False)
    d.turn([OrchestrationStarted(name="orch", version="1.0.0", input="0")])
    mail = [q("inbox", k) for k in range(MAX_CARRY_FORWARD_EVENTS)]
    r = d.turn([*mail, q("late", 1), EventRaised(name="signal", data="2"), q("go", None)])
    with caplog.at_level(logging.WARNING, logger="duroxy.orchestration"):
        _report_dropped("inst-1", r)
    texts = [rec.getMessage() for rec in caplog.records if rec.name == "duroxy.orchestration"]
    assert len(texts) == 2
    assert "queue message of queue 'late'" in texts[0] and "'inst-1'" in texts[0]
    assert "event 'signal'" in texts[1] and str(MAX_CARRY_FORWARD_EVENTS) in texts[1]


# ------------------------------------------------------------------ events behave alike
def ev(name: str, data: Any) -> EventRaised:
    return EventRaised(name=name, data=codec.encode(data))


def test_a_wait_that_loses_a_select_takes_no_event() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[Any]:
        index, _value = await ctx.select2(ctx.schedule_wait("go"), ctx.schedule_timer(1))
        assert index == 1
        return [await ctx.schedule_wait("go")]

    d = Driver(orch)
    d.start()
    fire(d)  # the timer wins before any event
    d.raise_event("go", "later")  # goes to the next wait, not the abandoned one
    assert d.output == ["later"]


def test_a_wait_that_took_an_event_and_lost_a_select_gives_it_back() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[Any]:
        await ctx.schedule_timer(1)
        # both take an event at once; the one first in history wins, the loser gives
        # its event back, in its place, for the next wait of that name
        index, value = await ctx.select(ctx.schedule_wait("e"), ctx.schedule_wait("e"))
        rest = [await ctx.schedule_wait("e"), await ctx.schedule_wait("e")]
        return [index, value, *rest]

    d = Driver(orch)
    d.start()
    d.turn([ev("e", 1), ev("e", 2), ev("e", 3)])
    fire(d)
    assert d.output == [0, 1, 2, 3]


def test_a_wait_losing_to_a_timer_in_the_same_turn_gives_its_event_back() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[Any]:
        index, _value = await ctx.select2(ctx.schedule_wait("go"), ctx.schedule_timer(1))
        return [index, await ctx.schedule_wait("go")]

    d = Driver(orch)
    d.start()
    [timer] = [e for e in d.pending() if isinstance(e, TimerCreated)]
    # the timer is first in history: it wins, and the event is the next wait's
    d.turn([TimerFired(source_event_id=timer.event_id, fire_at=timer.fire_at),
            ev("go", "kept")], advance_ms=1)
    assert d.output == [1, "kept"]
    assert kinds(d.history).count("EventRaised") == 1

"""Activity routing in the replay engine: the session id and tag an orchestration asks
for are recorded in ``ActivityScheduled`` (only when set), carried by every attempt of a
retry, set by Duroxide's spellings and ``with_tag``, and compared on replay."""

from __future__ import annotations

from typing import Any

import pytest

from duroxy import OrchestrationContext, RetryPolicy
from duroxy._engine import OrchestrationExecution
from duroxy.history import ActivityScheduled, HistoryEvent, OrchestrationFailed, encode_event
from enginekit import START_US, Driver


def scheduled(history: list[HistoryEvent]) -> list[tuple[str, str | None, str | None]]:
    return [(e.name, e.session_id, e.tag) for e in history if isinstance(e, ActivityScheduled)]


def echo(x: Any) -> Any:
    return x


def fails(_x: Any) -> Any:
    raise RuntimeError("boom")


def replay(fn: Any, history: list[HistoryEvent]) -> HistoryEvent:
    """A cold replay of ``history`` with ``fn``; the last event it adds."""
    ex = OrchestrationExecution(fn, instance_id="inst-1", history=history)
    result = ex.turn([], START_US + 10**9)
    assert result.new_events, "the replay added nothing"
    return result.new_events[-1]


# ====================================================================== recording
async def routed(ctx: OrchestrationContext, _: Any) -> list[Any]:
    a = await ctx.schedule_activity("a", 1, session_id="s1")
    b = await ctx.schedule_activity("b", 2, tag="gpu")
    c = await ctx.schedule_activity("c", 3, session_id="s2", tag="cpu")
    d = await ctx.schedule_activity("d", 4).with_tag("tpu")
    e = await ctx.schedule_activity("e", 5)
    return [a, b, c, d, e]


def test_session_and_tag_are_recorded_with_the_decision() -> None:
    d = Driver(routed, activities={n: echo for n in "abcde"})
    d.run()
    assert d.output == [1, 2, 3, 4, 5]
    assert scheduled(d.history) == [("a", "s1", None), ("b", None, "gpu"),
                                    ("c", "s2", "cpu"), ("d", None, "tpu"), ("e", None, None)]
    wire = [encode_event(e) for e in d.history if isinstance(e, ActivityScheduled)]
    assert '"session_id":"s1"' in wire[0] and '"tag"' not in wire[0]
    # a decision without routing keeps the bytes it had before routing existed
    assert '"session_id"' not in wire[4] and '"tag"' not in wire[4]


async def aliases(ctx: OrchestrationContext, _: Any) -> list[Any]:
    retry = RetryPolicy(2)
    return [await ctx.schedule_activity_on_session("a", 1, "s1"),
            await ctx.schedule_activity_on_session_typed("a", 2, "s2", int),
            await ctx.schedule_activity_with_retry_on_session("a", 3, retry, "s3"),
            await ctx.schedule_activity_with_retry_on_session_typed("a", 4, retry, "s4", int)]


def test_duroxide_session_spellings_are_the_session_keyword() -> None:
    d = Driver(aliases, activities={"a": echo})
    d.run()
    assert d.output == [1, 2, 3, 4]
    assert scheduled(d.history) == [("a", f"s{n}", None) for n in range(1, 5)]


async def retried(ctx: OrchestrationContext, _: Any) -> Any:
    return await ctx.schedule_activity_with_retry("flaky", 1, RetryPolicy(3), session_id="s",
                                                  tag="gpu")


def test_every_attempt_of_a_retry_carries_the_session_and_the_tag() -> None:
    d = Driver(retried, activities={"flaky": fails})
    d.run()
    assert scheduled(d.history) == [("flaky", "s", "gpu")] * 3
    assert isinstance(d.history[-1], OrchestrationFailed)


# ====================================================================== bad arguments
@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"session_id": ""}, "session_id"), ({"session_id": "a\x00"}, "session_id"),
    ({"session_id": "s" * 1025}, "session_id"), ({"tag": ""}, "tag"),
    ({"tag": "x" * 257}, "MAX_TAG_NAME_BYTES"), ({"tag": "é" * 129}, "MAX_TAG_NAME_BYTES"),
    ({"tag": "a\x00"}, "tag"), ({"tag": 5}, "tag"),
])
def test_a_bad_session_or_tag_raises_value_error_at_the_call(kwargs: dict[str, Any],
                                                            needle: str) -> None:
    caught: list[BaseException] = []

    async def orch(ctx: OrchestrationContext, _: Any) -> str:
        try:
            ctx.schedule_activity("a", 1, **kwargs)
        except ValueError as e:
            caught.append(e)
        return "ok"

    d = Driver(orch, check_cold=False)
    d.run()
    assert d.output == "ok" and len(caught) == 1 and needle in str(caught[0])
    assert scheduled(d.history) == []  # nothing was recorded


def test_a_tag_of_256_bytes_is_accepted() -> None:
    async def orch(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.schedule_activity("a", 1, tag="é" * 128)

    d = Driver(orch, activities={"a": echo})
    d.run()
    assert scheduled(d.history) == [("a", None, "é" * 128)]


def test_the_session_spellings_need_a_session() -> None:
    async def orch(ctx: OrchestrationContext, _: Any) -> str:
        with pytest.raises(ValueError, match="session_id"):
            ctx.schedule_activity_on_session("a", 1, None)  # type: ignore[call-overload]
        return "ok"

    d = Driver(orch)
    d.run()
    assert d.output == "ok"


# ====================================================================== with_tag
def test_with_tag_returns_the_same_future_and_needs_a_good_tag() -> None:
    seen: list[Any] = []

    async def orch(ctx: OrchestrationContext, _: Any) -> Any:
        fut = ctx.schedule_activity("a", 1)
        seen.append(fut.with_tag("gpu") is fut)
        with pytest.raises(ValueError, match="tag"):
            fut.with_tag("")
        return await fut

    d = Driver(orch, activities={"a": echo}, check_cold=False)
    d.run()
    assert seen == [True] and scheduled(d.history) == [("a", None, "gpu")]


def test_with_tag_after_the_orchestration_awaited_raises_runtime_error() -> None:
    async def orch(ctx: OrchestrationContext, _: Any) -> str:
        fut = ctx.schedule_activity("a", 1)
        await ctx.schedule_timer(1)
        try:
            fut.with_tag("gpu")
        except RuntimeError as e:
            return str(e)
        return "no error"

    d = Driver(orch, activities={"a": echo})
    d.run()
    assert "with_tag('gpu') came too late" in d.output
    assert scheduled(d.history) == [("a", None, None)]


@pytest.mark.parametrize("make", [
    lambda ctx: ctx.schedule_timer(1), lambda ctx: ctx.schedule_wait("e"),
    lambda ctx: ctx.dequeue_event("q"), lambda ctx: ctx.schedule_sub_orchestration("child"),
], ids=["timer", "wait", "dequeue", "sub_orchestration"])
def test_with_tag_on_another_durable_future_raises_type_error(make: Any) -> None:
    async def orch(ctx: OrchestrationContext, _: Any) -> str:
        fut = make(ctx)
        try:
            fut.with_tag("gpu")
        except TypeError as e:
            return str(e)
        return "no error"

    d = Driver(orch, check_cold=False)
    d.start()
    assert d.history[-1].kind == "OrchestrationCompleted"
    assert "with_tag applies to an activity's future only" in d.output


def test_with_tag_on_a_fan_out_tags_each_future() -> None:
    async def orch(ctx: OrchestrationContext, _: Any) -> Any:
        futs = [ctx.schedule_activity("a", n) for n in range(3)]
        futs[1].with_tag("gpu")
        return await ctx.join(futs)

    d = Driver(orch, activities={"a": echo})
    d.run()
    assert d.output == [0, 1, 2]
    assert scheduled(d.history) == [("a", None, None), ("a", None, "gpu"), ("a", None, None)]


# ====================================================================== replay
def history_of(fn: Any, **activities: Any) -> list[HistoryEvent]:
    d = Driver(fn, activities=activities or {n: echo for n in "abcde"})
    d.run()
    return d.history


@pytest.mark.parametrize(("change", "field"), [
    ({"session_id": "other"}, "session_id 'other' (history: 's1')"),
    ({"session_id": None}, "session_id None (history: 's1')"),
    ({"tag": "gpu"}, "tag 'gpu' (history: None)"),
])
def test_a_changed_session_or_tag_on_replay_is_nondeterminism(change: dict[str, Any],
                                                              field: str) -> None:
    async def v1(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.schedule_activity("a", 1, session_id="s1")

    async def v2(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.schedule_activity("a", 1, **{"session_id": "s1", **change})

    end = replay(v2, history_of(v1)[:-1])
    assert isinstance(end, OrchestrationFailed) and end.error_kind == "nondeterminism"
    assert "expected activity 'a' at event 2, code scheduled activity 'a' with a different" \
        in end.message
    assert field in end.message


def test_a_changed_with_tag_on_replay_is_nondeterminism_named() -> None:
    async def v2(ctx: OrchestrationContext, _: Any) -> list[Any]:
        a = await ctx.schedule_activity("a", 1, session_id="s1")
        b = await ctx.schedule_activity("b", 2, tag="gpu")
        c = await ctx.schedule_activity("c", 3, session_id="s2", tag="cpu")
        d = await ctx.schedule_activity("d", 4).with_tag("npu")
        return [a, b, c, d]

    history = history_of(routed)
    end = replay(v2, history[:-2])
    assert isinstance(end, OrchestrationFailed) and end.error_kind == "nondeterminism"
    assert "code scheduled activity 'd' with a different tag 'npu' (history: 'tpu')" \
        in end.message


def test_a_dropped_with_tag_on_replay_is_nondeterminism() -> None:
    async def v2(ctx: OrchestrationContext, _: Any) -> list[Any]:
        a = await ctx.schedule_activity("a", 1, session_id="s1")
        b = await ctx.schedule_activity("b", 2, tag="gpu")
        c = await ctx.schedule_activity("c", 3, session_id="s2", tag="cpu")
        d = await ctx.schedule_activity("d", 4)
        return [a, b, c, d]

    end = replay(v2, history_of(routed)[:-2])
    assert isinstance(end, OrchestrationFailed) and end.error_kind == "nondeterminism"
    assert "tag None (history: 'tpu')" in end.message


def test_the_same_code_replays_routed_decisions_to_the_same_end() -> None:
    history = history_of(routed)
    end = replay(routed, history[:-1])
    assert encode_event(end) == encode_event(history[-1])
    # with_tag on a replayed decision with the recorded tag is no difference
    assert end.kind == "OrchestrationCompleted"

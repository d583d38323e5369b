"""Per-instance key-value state in the replay engine (API.md section 8), driven without a
runtime; every turn is also replayed cold from the persisted history."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from duroxy import MAX_KV_KEYS, MAX_KV_VALUE_BYTES, OrchestrationContext, codec
from duroxy.history import (
    KeyValueCleared,
    KeyValueReadCompleted,
    KeyValueReadScheduled,
    KeyValuesCleared,
    KeyValueSet,
    OrchestrationStarted,
    TimerCreated,
    TimerFired,
)
from enginekit import START_US, Driver, kinds

Ctx = OrchestrationContext
START_MS = START_US // 1000


def kv(**values: Any) -> dict[str, tuple[str, int]]:
    return {k: (codec.encode(v), START_MS - 1000) for k, v in values.items()}


def test_reads_see_the_start_state_plus_this_executions_own_sets_and_clears() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[Any]:
        seen = [ctx.get_kv_value("n"), ctx.get_kv_value("gone"), ctx.get_kv_value("x", "dflt")]
        ctx.set_kv_value("n", seen[0] + 1)
        ctx.clear_kv_value("gone")
        await ctx.schedule_timer(1)
        seen += [ctx.get_kv_value("n"), ctx.get_kv_value("gone", "absent"),
                 ctx.get_kv_length()]
        return seen

    d = Driver(orch, kv=kv(n=41, gone="soon"))
    d.start()
    [timer] = d.pending()
    assert isinstance(timer, TimerCreated)
    d.turn([TimerFired(source_event_id=timer.event_id, fire_at=timer.fire_at)], advance_ms=5)
    assert d.output == [41, "soon", "dflt", 42, "absent", 1]
    sets = [e for e in d.history if isinstance(e, (KeyValueSet, KeyValueCleared))]
    assert [(e.kind, e.key) for e in sets] == [("KeyValueSet", "n"),
                                               ("KeyValueCleared", "gone")]
    assert isinstance(sets[0], KeyValueSet) and sets[0].value == "42"
    assert sets[0].updated_at == sets[0].ts == START_MS


def test_a_read_modify_write_loop_replays_to_the_same_decisions() -> None:
    async def orch(ctx: Ctx, n: int) -> int:
        for _ in range(n):
            done = ctx.get_kv_value("processed", 0)
            await ctx.schedule_activity("work", done)
            ctx.set_kv_value("processed", done + 1)
        return int(ctx.get_kv_value("processed"))

    d = Driver(orch, activities={"work": lambda x: x})
    d.run(4)
    assert d.output == 4
    assert [e.value for e in d.history if isinstance(e, KeyValueSet)] == ["1", "2", "3", "4"]
    # a cold replay of the whole history from the same start state decides nothing new
    assert d.new_execution(d.history).turn([], d.now_us).new_events == []


def test_sorted_keys_and_values_whatever_the_order_of_the_sets() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[Any]:
        for key in ("zeta", "Alpha", "beta", "é", "10", "9"):
            ctx.set_kv_value(key, key.upper())
        return [ctx.get_kv_all_keys(), list(ctx.get_kv_all_values().items())]

    d = Driver(orch, kv=kv(mid=1))
    d.start()
    keys = sorted(["zeta", "Alpha", "beta", "é", "10", "9", "mid"])
    assert d.output[0] == keys
    assert [k for k, _ in d.output[1]] == keys


def test_a_key_set_to_none_exists() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[Any]:
        ctx.set_kv_value("k", None)
        return [ctx.get_kv_value("k", "default"), ctx.get_kv_length(), ctx.get_kv_all_keys()]

    d = Driver(orch)
    d.start()
    assert d.output == [None, 1, ["k"]]


def test_clear_all_and_clear_of_an_absent_key_are_recorded() -> None:
    async def orch(ctx: Ctx, _: Any) -> int:
        ctx.clear_kv_value("never-set")
        ctx.set_kv_value("a", 1)
        ctx.clear_all_kv_values()
        return ctx.get_kv_length()

    d = Driver(orch, kv=kv(b=2))
    d.start()
    assert d.output == 0
    assert kinds(d.history)[1:4] == ["KeyValueCleared", "KeyValueSet", "KeyValuesCleared"]
    assert isinstance(d.history[3], KeyValuesCleared)


def test_writing_another_value_than_history_holds_is_nondeterminism() -> None:
    async def v1(ctx: Ctx, _: Any) -> None:
        ctx.set_kv_value("k", 1)
        await ctx.schedule_timer(1)

    async def v2(ctx: Ctx, _: Any) -> None:
        ctx.set_kv_value("k", 2)
        await ctx.schedule_timer(1)

    d = Driver(v1)
    d.start()
    timer = d.history[-1]
    replay = Driver(v2, history=list(d.history), check_cold=False)
    r = replay.turn([TimerFired(source_event_id=timer.event_id, fire_at=0)])
    failed = r.terminal
    assert failed is not None and failed.error_kind == "nondeterminism"  # type: ignore[attr-defined]
    assert "set of KV key 'k'" in failed.message  # type: ignore[attr-defined]
    assert "value '2'" in failed.message  # type: ignore[attr-defined]


def test_updated_at_is_not_compared_on_replay() -> None:
    async def orch(ctx: Ctx, _: Any) -> None:
        ctx.set_kv_value("k", 1)
        await ctx.schedule_timer(1)

    d = Driver(orch)
    d.start()
    history = [dataclasses.replace(e, updated_at=123) if isinstance(e, KeyValueSet) else e
               for e in d.history]
    timer = history[-1]
    replay = Driver(orch, history=history, check_cold=False)
    r = replay.turn([TimerFired(source_event_id=timer.event_id, fire_at=0)])
    assert r.terminal is not None and r.terminal.kind == "OrchestrationCompleted"


def test_limits_are_value_errors_at_the_call_and_nothing_is_recorded() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[str]:
        errors = []
        try:
            ctx.set_kv_value("big", "x" * MAX_KV_VALUE_BYTES)  # + 2 quotes
        except ValueError as e:
            errors.append(str(e))
        ctx.set_kv_value("fits", "x" * (MAX_KV_VALUE_BYTES - 2))
        for n in range(MAX_KV_KEYS - 1):
            ctx.set_kv_value(f"k{n}", n)
        ctx.set_kv_value("k0", "an existing key may still change")
        try:
            ctx.set_kv_value("one-too-many", 1)
        except ValueError as e:
            errors.append(str(e))
        return errors

    d = Driver(orch)
    d.start()
    too_big, too_many = d.output
    assert "'big'" in too_big and f"{MAX_KV_VALUE_BYTES + 2:,}" in too_big
    assert f"{MAX_KV_VALUE_BYTES:,}" in too_big
    assert "'one-too-many'" in too_many and str(MAX_KV_KEYS) in too_many
    keys = {e.key for e in d.history if isinstance(e, KeyValueSet)}
    assert "big" not in keys and "one-too-many" not in keys and len(keys) == MAX_KV_KEYS


def test_the_value_limit_counts_utf8_bytes() -> None:
    async def orch(ctx: Ctx, _: Any) -> str:
        try:
            ctx.set_kv_value("k", "é" * (MAX_KV_VALUE_BYTES // 2))  # twice the bytes
        except ValueError:
            return "refused"
        return "accepted"

    d = Driver(orch)
    d.start()
    assert d.output == "refused"


@pytest.mark.parametrize(("call", "error"), [
    (lambda ctx: ctx.set_kv_value("k", object()), "PayloadError"),
    (lambda ctx: ctx.set_kv_value("", 1), "ValueError"),
    (lambda ctx: ctx.get_kv_value("x\x00"), "ValueError"),
    (lambda ctx: ctx.clear_kv_value(7), "ValueError"),
    (lambda ctx: ctx.prune_kv_values_updated_before(datetime(2024, 1, 1)), "TypeError"),
    (lambda ctx: ctx.prune_kv_values_updated_before("2024-01-01"), "TypeError"),
    (lambda ctx: ctx.get_kv_value_from_instance("", "k"), "ValueError"),
])
def test_bad_calls_raise_at_the_call(call: Any, error: str) -> None:
    async def orch(ctx: Ctx, _: Any) -> str:
        try:
            call(ctx)
        except Exception as e:
            return type(e).__name__
        return "accepted"

    d = Driver(orch)
    d.start()
    assert d.output == error
    assert kinds(d.history) == ["OrchestrationStarted", "OrchestrationCompleted"]


def test_prune_clears_keys_last_set_before_the_cutoff_in_orchestration_time() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[Any]:
        ctx.set_kv_value("fresh", 1)
        now = await ctx.utcnow()
        cleared = ctx.prune_kv_values_updated_before(now)
        again = ctx.prune_kv_values_updated_before(now + timedelta(milliseconds=1))
        return [cleared, again, ctx.get_kv_all_keys()]

    start_state = {"old": ("1", START_MS - 60_000), "older": ("2", START_MS - 120_000)}
    d = Driver(orch, kv=start_state)
    d.start()
    assert d.output == [2, 1, []]
    cleared = [e.key for e in d.history if isinstance(e, KeyValueCleared)]
    assert cleared == ["old", "older", "fresh"]


def test_the_final_state_goes_with_continue_as_new() -> None:
    async def orch(ctx: Ctx, n: int) -> None:
        ctx.set_kv_value("n", n)
        ctx.clear_kv_value("tmp")
        ctx.continue_as_new(n + 1)

    d = Driver(orch, kv=kv(tmp=0, keep="yes"))
    r = d.start(7)
    assert r.kv_final == {"keep": (codec.encode("yes"), START_MS - 1000),
                          "n": ("7", START_MS)}


def test_cross_instance_reads_are_recorded_once_and_replayed() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[Any]:
        found = await ctx.get_kv_value_from_instance("producer", "progress", -1)
        missing = await ctx.get_kv_value_from_instance("producer", "nope", "default")
        return [found, missing]

    d = Driver(orch)
    d.start()
    [read] = [e for e in d.history if isinstance(e, KeyValueReadScheduled)]
    assert (read.instance_id, read.key) == ("producer", "progress")
    d.turn([KeyValueReadCompleted(source_event_id=read.event_id, found=True, value="5")])
    second = d.history[-1]
    assert isinstance(second, KeyValueReadScheduled) and second.key == "nope"
    d.turn([KeyValueReadCompleted(source_event_id=second.event_id, found=False)])
    assert d.output == [5, "default"]
    # a duplicate answer changes nothing
    assert d.new_execution(d.history).turn(
        [KeyValueReadCompleted(source_event_id=read.event_id, found=True, value="9")],
        d.now_us).new_events == []


def test_reading_another_key_than_history_is_nondeterminism() -> None:
    async def v1(ctx: Ctx, _: Any) -> Any:
        return await ctx.get_kv_value_from_instance("p", "a")

    async def v2(ctx: Ctx, _: Any) -> Any:
        return await ctx.get_kv_value_from_instance("p", "b")

    d = Driver(v1)
    d.start()
    replay = Driver(v2, history=list(d.history), check_cold=False)
    r = replay.turn([KeyValueReadCompleted(source_event_id=2, found=False)])
    assert r.terminal is not None and "read of KV key 'a'" in r.terminal.message  # type: ignore[attr-defined]


def test_history_events_of_kv_show_their_payload() -> None:
    event = KeyValueSet(event_id=3, ts=1, key="k", value='{"a":[1]}', updated_at=1)
    assert event.payload == {"a": [1]}
    assert "KeyValueSet" in str(event) and "'k'" in str(event)
    assert KeyValuesCleared().payload is None
    assert KeyValueReadCompleted(source_event_id=2, found=True, value="3").payload == 3


def test_start_state_does_not_leak_into_the_history() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        return ctx.get_kv_value("a")

    d = Driver(orch, kv=kv(a="from-before"))
    d.turn([OrchestrationStarted(name="orch", version="1.0.0", input="null")])
    assert d.output == "from-before"
    assert kinds(d.history) == ["OrchestrationStarted", "OrchestrationCompleted"]
    assert datetime.fromtimestamp(d.history[0].ts / 1000, UTC).year >= 2023

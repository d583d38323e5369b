"""Select/join, asyncio constructs, cancellation and non-durable awaits in the engine."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest

from duroxy._engine import OrchestrationContext
from duroxy.history import (
    ActivityCompleted,
    CancellationRequested,
    EventRaised,
    SubOrchestrationCompleted,
    TimerFired,
)
from enginekit import Driver, kinds

Ctx = OrchestrationContext


async def race(ctx: Ctx, _: Any) -> Any:
    act = ctx.schedule_activity("work", 1)
    timer = ctx.schedule_timer(30)
    index, value = await ctx.select2(act, timer)
    return [index, value]


@pytest.mark.parametrize(("first", "winner"), [("activity", [0, "done"]), ("timer", [1, None])])
def test_select_winner_is_first_in_history(first: str, winner: list[Any]) -> None:
    d = Driver(race)
    d.start()
    act_done = ActivityCompleted(source_event_id=2, result='"done"')
    fired = TimerFired(source_event_id=3, fire_at=0)
    # Both completions arrive in ONE turn: history order decides, not timing.
    batch = [act_done, fired] if first == "activity" else [fired, act_done]
    r = d.turn(batch, advance_ms=5)
    assert r.terminal is not None
    assert d.output == winner
    if first == "timer":  # the losing activity is told to stop, with a breadcrumb
        assert r.cancelled_activities == [2]
        assert "WorkCancelled" in kinds(r.new_events)
    else:
        assert r.cancelled_activities == []


def test_select_loser_completion_later_is_ignored() -> None:
    d = Driver(race)
    d.start()
    d.turn([TimerFired(source_event_id=3, fire_at=0)])
    assert d.output == [1, None]


def test_select_with_event_wait_drops_subscription() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        idx, _v = await ctx.select2(ctx.schedule_wait("go"), ctx.schedule_timer(5))
        # the dropped subscription must not swallow the next event of that name
        second = await ctx.schedule_wait("go")
        return [idx, second]

    d = Driver(orch)
    d.start()
    d.turn([TimerFired(source_event_id=3, fire_at=0)])
    r = d.raise_event("go", "payload")
    assert r.terminal is not None and d.output == [1, "payload"]


def test_select_over_three_and_already_buffered_event() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        await ctx.schedule_timer(1)
        return list(await ctx.select(ctx.schedule_timer(10), ctx.schedule_wait("a"),
                                     ctx.schedule_wait("b")))

    d = Driver(orch)
    d.start()
    d.raise_event("b", 2)
    d.raise_event("a", 1)
    d.turn([TimerFired(source_event_id=2, fire_at=0)])
    assert d.output == [2, 2]  # both were buffered: "b" was raised first in history


def test_select_among_already_completed_takes_the_first_completed_in_history() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        slow = ctx.schedule_timer(3)
        fast = ctx.schedule_timer(1)
        act = ctx.schedule_activity("work", 1)
        await ctx.schedule_timer(5)  # all three are done when the select comes
        return list(await ctx.select(slow, act, fast))

    d = Driver(orch)
    d.start()
    # History: the activity, then the fast timer, then the slow one, then the wait.
    d.turn([ActivityCompleted(source_event_id=4, result='"w"')])
    d.turn([TimerFired(source_event_id=3, fire_at=0)])
    d.turn([TimerFired(source_event_id=2, fire_at=0)])
    d.turn([TimerFired(source_event_id=5, fire_at=0)])
    assert d.output == [1, "w"]


def test_select_dates_a_finished_task_by_the_event_that_finished_it() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        async def later() -> str:
            await ctx.schedule_timer(2)
            return "task"

        task = asyncio.ensure_future(later())
        timer = ctx.schedule_timer(1)
        await ctx.schedule_timer(5)
        return list(await ctx.select(task, timer))

    d = Driver(orch)
    d.start()
    # The timers by delay: 1 s the select's, 2 s the task's, 5 s the wait's.
    by_fire = sorted((e.fire_at, e.event_id) for e in d.history  # type: ignore[attr-defined]
                     if e.kind == "TimerCreated")
    select_timer, task_timer, wait_timer = (eid for _, eid in by_fire)
    d.turn([TimerFired(source_event_id=select_timer, fire_at=0)])
    d.turn([TimerFired(source_event_id=task_timer, fire_at=0)])
    d.turn([TimerFired(source_event_id=wait_timer, fire_at=0)])
    assert d.output == [1, None]  # the timer fired before the task's own timer


def test_join_results_in_argument_order_despite_completion_order() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        return await ctx.join(ctx.schedule_activity("a"), ctx.schedule_activity("b"),
                              ctx.schedule_activity("c"))

    d = Driver(orch)
    d.start()
    d.turn([ActivityCompleted(source_event_id=4, result='"C"')])
    d.turn([ActivityCompleted(source_event_id=2, result='"A"')])
    d.turn([ActivityCompleted(source_event_id=3, result='"B"')])
    assert d.output == ["A", "B", "C"]


def test_gather_wait_taskgroup_create_task() -> None:
    async def child(ctx: Ctx, n: int) -> int:
        await asyncio.sleep(n)
        return int(await ctx.schedule_activity("inc", n))

    async def orch(ctx: Ctx, _: Any) -> Any:
        g = await asyncio.gather(ctx.schedule_activity("inc", 1), child(ctx, 2))
        t1 = asyncio.create_task(child(ctx, 3))
        t2 = asyncio.ensure_future(child(ctx, 4))
        done, pending = await asyncio.wait([t1, t2], return_when=asyncio.FIRST_COMPLETED)
        first = [t.result() for t in done]
        async with asyncio.TaskGroup() as tg:
            a = tg.create_task(child(ctx, 5))
            b = tg.create_task(child(ctx, 6))
        return [g, first, len(pending), a.result(), b.result(), await t2]

    d = Driver(orch, activities={"inc": lambda x: x + 1})
    d.run(order=lambda pend: sorted(pend, key=lambda e: getattr(e, "fire_at", 0)))
    assert d.output == [[2, 3], [4], 1, 6, 7, 5]


def test_wait_for_and_timeout_use_durable_timers() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        out = []
        try:
            await asyncio.wait_for(ctx.schedule_wait("never"), timeout=5)
        except TimeoutError:
            out.append("wait_for timed out")
        try:
            async with asyncio.timeout(7):
                await ctx.schedule_wait("never2")
        except TimeoutError:
            out.append("timeout block expired")
        out.append(await asyncio.wait_for(ctx.schedule_activity("quick"), timeout=60))
        return out

    d = Driver(orch, activities={"quick": lambda _: "fast"})
    d.run()
    assert d.output == ["wait_for timed out", "timeout block expired", "fast"]
    timers = [e for e in d.history if e.kind == "TimerCreated"]
    assert [t.fire_at - t.ts for t in timers] == [5000, 7000, 60000]  # type: ignore[attr-defined]


def test_asyncio_queue_between_tasks_is_fine() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        q: asyncio.Queue[int] = asyncio.Queue()

        async def producer() -> None:
            for i in range(3):
                await ctx.schedule_timer(1)
                await q.put(i)

        task = asyncio.create_task(producer())
        got = [await q.get() for _ in range(3)]
        await task
        return got

    d = Driver(orch)
    d.run()
    assert d.output == [0, 1, 2]


@pytest.mark.parametrize(("label", "body", "needle"), [
    ("executor", lambda: asyncio.get_running_loop().run_in_executor(None, print),
     "run_in_executor(print)"),
    ("to_thread", lambda: asyncio.to_thread(time.sleep, 1), "asyncio.to_thread(time.sleep)"),
    ("open_connection", lambda: asyncio.open_connection("127.0.0.1", 9), "create_connection"),
    ("event", lambda: asyncio.Event().wait(), "Event.wait()"),
    ("bare future", lambda: asyncio.get_running_loop().create_future(), "Future"),
])
def test_non_durable_await_fails_clearly(label: str, body: Any, needle: str) -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        await ctx.schedule_timer(1)
        return await body()

    d = Driver(orch)
    d.run()
    last = d.history[-1]
    assert last.kind == "OrchestrationFailed", label
    assert needle in last.message, last.message  # type: ignore[attr-defined]
    assert "durable" in last.message  # type: ignore[attr-defined]


def test_foreign_loop_future_fails_clearly() -> None:
    outer = asyncio.new_event_loop()
    try:
        async def orch(ctx: Ctx, _: Any) -> Any:
            return await outer.create_future()

        async def gathers(ctx: Ctx, _: Any) -> Any:
            return await asyncio.gather(ctx.schedule_timer(1), outer.create_future())

        for fn in (orch, gathers):
            d = Driver(fn)
            d.run()
            last = d.history[-1]
            assert last.kind == "OrchestrationFailed"
            assert "another event loop" in last.message  # type: ignore[attr-defined]
    finally:
        outer.close()


def test_socket_use_is_not_hidden() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        s = socket.socket()
        try:
            return await asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", 9))
        finally:
            s.close()

    d = Driver(orch)
    d.run()
    assert "sock_connect" in d.history[-1].message  # type: ignore[attr-defined]


def test_cancellation_arrives_as_cancelled_error_and_compensates() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        await ctx.schedule_activity("reserve")
        try:
            await ctx.schedule_activity("long")
        except asyncio.CancelledError:
            await ctx.schedule_activity("release")
            raise
        return "not reached"

    d = Driver(orch)
    d.start()
    d.turn([ActivityCompleted(source_event_id=2, result="null")])
    r = d.turn([CancellationRequested(reason="user asked")])
    assert r.cancelled_activities == [4]  # the running activity is told to stop
    assert kinds(r.new_events) == ["CancellationRequested", "WorkCancelled", "ActivityScheduled"]
    r = d.turn([ActivityCompleted(source_event_id=7, result="null")])
    assert r.terminal is not None and r.terminal.kind == "OrchestrationCancelled"
    assert r.terminal.reason == "user asked"  # type: ignore[attr-defined]


def test_cancellation_cancels_children_and_pending_work() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        asyncio.ensure_future(ctx.schedule_activity("side"))  # noqa: RUF006
        return await ctx.schedule_sub_orchestration("child", 1, instance_id="kid")

    d = Driver(orch)
    d.start()
    r = d.turn([CancellationRequested(reason="")])
    assert r.terminal is not None and r.terminal.kind == "OrchestrationCancelled"
    assert r.cancelled_children == ["kid"]
    assert r.cancelled_activities == [2]


def test_pending_work_dropped_without_error_on_return() -> None:
    async def orch(ctx: Ctx, _: Any) -> str:
        ctx.schedule_activity("fire-and-forget")
        asyncio.create_task(asyncio.sleep(100))  # noqa: RUF006
        return "done"

    d = Driver(orch)
    r = d.start()
    assert r.terminal is not None and d.output == "done"
    assert r.cancelled_activities == [2]


def test_sub_orchestration_default_id_is_deterministic() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        a = ctx.schedule_sub_orchestration("child", 1)
        b = ctx.schedule_sub_orchestration("child", 2, instance_id="explicit")
        return await ctx.join(a, b)

    d = Driver(orch)
    d.start()
    subs = [e for e in d.history if e.kind == "SubOrchestrationScheduled"]
    assert [s.instance_id for s in subs] == ["inst-1::sub::2", "explicit"]  # type: ignore[attr-defined]
    d.turn([SubOrchestrationCompleted(source_event_id=3, result="20"),
            SubOrchestrationCompleted(source_event_id=2, result="10")])
    assert d.output == [10, 20]


def test_events_raised_during_compensation_still_delivered() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        try:
            await ctx.schedule_wait("x")
        except asyncio.CancelledError:
            return await ctx.schedule_wait("y")
        return None

    d = Driver(orch)
    d.start()
    r = d.turn([CancellationRequested(reason="r"), EventRaised(name="y", data='"late"')])
    assert r.terminal is not None and r.terminal.kind == "OrchestrationCancelled"


def test_ending_closes_its_own_pending_tasks_and_leaves_other_loops_alone() -> None:
    """An orchestration that returns while a task it made still waits: that task's
    coroutine is closed with the execution (its ``finally`` runs, no "destroyed but
    pending" report later); tasks of other loops are not touched."""
    closed: list[str] = []

    async def waiter(ctx: Ctx) -> None:
        try:
            await ctx.schedule_wait("never")
        finally:
            closed.append("waiter")

    async def orch(ctx: Ctx, _: Any) -> Any:
        asyncio.get_running_loop().create_task(waiter(ctx))
        await ctx.schedule_timer(1)  # meanwhile the waiter parks on its event
        return "done"

    async def outside_work() -> int:
        try:
            await asyncio.sleep(0)
            return 1
        finally:
            closed.append("outside")

    outside = asyncio.new_event_loop()
    foreign = outside.create_task(outside_work())  # pending on another loop
    try:
        d = Driver(orch)
        d.start()
        assert closed == [] and kinds(d.history)[-2:] == ["TimerCreated", "EventSubscribed"]
        d.turn([TimerFired(source_event_id=2, fire_at=0)])
        assert d.output == "done"
        assert closed and set(closed) == {"waiter"}  # (once per execution the driver ran)
        assert not foreign.done()
        assert outside.run_until_complete(foreign) == 1
        assert closed[-1] == "outside"
    finally:
        outside.close()


def test_create_task_and_task_group_take_the_futures_of_ctx_calls() -> None:
    # asyncio's stubs take coroutines only: passing the futures is what is under test
    async def orch(ctx: Ctx, _: Any) -> Any:
        task: asyncio.Task[Any] = asyncio.create_task(ctx.schedule_activity("a", 1))  # type: ignore[arg-type]
        async with asyncio.TaskGroup() as group:
            b: asyncio.Task[Any] = group.create_task(ctx.schedule_activity("b", 2))  # type: ignore[arg-type]
            t: asyncio.Task[None] = group.create_task(ctx.schedule_timer(1))  # type: ignore[arg-type]
        return [await task, b.result(), t.result()]

    d = Driver(orch)
    d.start()
    assert kinds(d.history).count("ActivityScheduled") == 2
    d.turn([ActivityCompleted(source_event_id=2, result='"A"'),
            ActivityCompleted(source_event_id=3, result='"B"')])
    timer = next(e for e in d.history if e.kind == "TimerCreated")
    d.turn([TimerFired(source_event_id=timer.event_id, fire_at=0)])
    assert d.output == ["A", "B", None]


def test_select_dates_a_join_by_the_event_that_completed_it() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        both = ctx.join(ctx.schedule_activity("a", 1), ctx.schedule_activity("b", 2))
        timer = ctx.schedule_timer(1)
        await ctx.schedule_timer(5)
        index, _value = await ctx.select(timer, both)
        return index

    d = Driver(orch)
    d.start()
    # The join completes (event of "b"), then the 1 s timer fires, then the wait ends.
    d.turn([ActivityCompleted(source_event_id=2, result='"A"')])
    d.turn([ActivityCompleted(source_event_id=3, result='"B"')])
    d.turn([TimerFired(source_event_id=4, fire_at=0)])
    d.turn([TimerFired(source_event_id=5, fire_at=0)])
    assert d.output == 1

"""The due-time alarms shared by the runtime's dispatcher and the PostgreSQL store."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time

from duroxy._alarms import DueAlarms
from duroxy.providers.base import DUE_SLACK_S


class _Recorder:
    def __init__(self, name: str = "", log: list[tuple[str, float, int]] | None = None
                 ) -> None:
        self.name = name
        self.log: list[tuple[str, float, int]] = [] if log is None else log
        self.fired = asyncio.Event()

    def __call__(self) -> None:
        self.log.append((self.name, time.time(), threading.get_ident()))
        self.fired.set()


async def test_an_alarm_fires_on_its_loop_never_before_its_time() -> None:
    rec = _Recorder()
    alarms = DueAlarms(rec)
    due = time.time() + 0.02
    alarms.at(due)
    await asyncio.wait_for(rec.fired.wait(), 5)
    [(_, at, thread)] = rec.log
    assert at >= due + DUE_SLACK_S
    assert thread == threading.get_ident()
    await asyncio.sleep(0.03)
    assert len(rec.log) == 1  # at most once


async def test_alarms_fire_in_time_order_whatever_order_they_were_set() -> None:
    log: list[tuple[str, float, int]] = []
    late, early, middle = _Recorder("late", log), _Recorder("early", log), _Recorder("mid", log)
    now = time.time()
    DueAlarms(late).at(now + 0.06)
    DueAlarms(early).at(now + 0.02)
    DueAlarms(middle).at(now + 0.04)
    await asyncio.wait_for(late.fired.wait(), 5)
    assert [name for name, _, _ in log] == ["early", "mid", "late"]


async def test_an_alarm_already_due_fires_at_once() -> None:
    rec = _Recorder()
    DueAlarms(rec).at(time.time() - 10)
    await asyncio.wait_for(rec.fired.wait(), 5)
    assert len(rec.log) == 1


async def test_close_cancels_pending_alarms_and_the_owner_can_be_used_again() -> None:
    rec = _Recorder()
    alarms = DueAlarms(rec)
    alarms.at(time.time() + 0.02)
    alarms.close()
    other = _Recorder()
    DueAlarms(other).at(time.time() + 0.05)  # fires after the cancelled one would have
    await asyncio.wait_for(other.fired.wait(), 5)
    assert rec.log == []
    alarms.at(time.time())
    await asyncio.wait_for(rec.fired.wait(), 5)
    assert len(rec.log) == 1


async def test_an_alarm_handed_to_the_loop_before_close_does_not_fire_after_it() -> None:
    rec = _Recorder()
    alarms = DueAlarms(rec)
    loop = asyncio.get_running_loop()
    alarms._ring(loop, 0, None)  # as the clock's thread does when the alarm of generation 0 is due
    alarms.close()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert rec.log == []
    alarms._ring(loop, 1, None)  # an alarm set after the close fires
    await asyncio.wait_for(rec.fired.wait(), 5)
    assert len(rec.log) == 1


async def test_alarms_with_callbacks_of_their_own_each_fire_once_and_plain_ones_merge(
        ) -> None:
    log: list[tuple[str, float, int]] = []
    plain = _Recorder("plain", log)
    alarms = DueAlarms(plain)
    a, b = _Recorder("a", log), _Recorder("b", log)
    due = time.time() + 0.02
    alarms.at(due)
    alarms.at(due)  # falls due with the first: one call
    alarms.at(due, a)
    alarms.at(due, b)
    alarms.at(due + 0.01, a)
    await asyncio.wait_for(asyncio.gather(plain.fired.wait(), b.fired.wait()), 5)
    await asyncio.sleep(0.05)
    assert sorted(name for name, _, _ in log) == ["a", "a", "b", "plain"]
    assert all(at >= due + DUE_SLACK_S for _, at, _ in log)
    alarms.at(time.time() + 0.01, a)
    alarms.close()  # cancels alarms with callbacks of their own too
    await asyncio.sleep(0.03)
    assert len(log) == 4


def test_an_alarm_for_a_closed_loop_does_not_stop_the_others() -> None:
    fired: list[str] = []

    async def set_and_leave() -> None:
        DueAlarms(lambda: fired.append("gone")).at(time.time() + 0.01)

    asyncio.run(set_and_leave())  # the loop closes before its alarm falls due

    async def later() -> None:
        rec = _Recorder("later")
        DueAlarms(rec).at(time.time() + 0.03)
        await asyncio.wait_for(rec.fired.wait(), 5)
        fired.append("later")

    asyncio.run(later())
    assert fired == ["later"]


def test_alarms_of_two_loops_each_fire_on_their_own() -> None:
    threads: dict[str, tuple[int, int]] = {}

    def run(name: str) -> None:
        async def main() -> None:
            rec = _Recorder(name)
            DueAlarms(rec).at(time.time() + 0.02)
            await asyncio.wait_for(rec.fired.wait(), 5)
            threads[name] = (rec.log[0][2], threading.get_ident())
        asyncio.run(main())

    workers = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
    for w in workers:
        w.start()
    for w in workers:
        w.join(10)
    assert set(threads) == {"a", "b"}
    assert all(fired_on == loop_thread for fired_on, loop_thread in threads.values())


async def test_an_alarm_centuries_away_leaves_the_nearer_ones_working() -> None:
    far = _Recorder("far")
    DueAlarms(far).at(time.time() + 1e13)
    DueAlarms(far).at(float("inf"))
    near = _Recorder("near")
    DueAlarms(near).at(time.time() + 0.01)
    await asyncio.wait_for(near.fired.wait(), 5)
    assert far.log == [] and len(near.log) == 1


def test_a_forked_child_has_alarms_of_its_own() -> None:
    async def parent() -> None:  # the parent's thread is running, with an alarm pending
        DueAlarms(lambda: None).at(time.time() + 60)

    asyncio.run(parent())
    ctx = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[str] = ctx.Queue()
    child = ctx.Process(target=_child_alarm, args=(queue,))
    child.start()
    try:
        assert queue.get(timeout=10) == "fired"
    finally:
        child.join(10)
    assert child.exitcode == 0


def _child_alarm(queue: multiprocessing.Queue[str]) -> None:
    async def main() -> None:
        rec = _Recorder()
        DueAlarms(rec).at(time.time() + 0.01)
        await asyncio.wait_for(rec.fired.wait(), 5)
    asyncio.run(main())
    queue.put("fired")

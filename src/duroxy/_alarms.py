"""Alarms for messages committed here that become visible later (timers, cool-downs).

Whoever committed such a message knows when it falls due, so it need not poll for it:
the runtime's dispatcher and the PostgreSQL store's parked fetches both set one of
these per message. Each alarm fires ``DUE_SLACK_S`` after the due time, since the store
compares visibility with its own clock.

The alarms wait on one daemon thread for the whole process, not on the event loop: a
loop's timers fire up to a millisecond late, because epoll waits in whole milliseconds
(rounded up) and the loop then runs what is ready within its clock's resolution, while
a thread's timed wait ends within tens of microseconds of its time. The thread only
hands a fallen-due alarm to the loop that set it; ``on_due`` always runs on that loop.

Invariants: an alarm fires at most once and never before its time (by ``time.time()``);
none set before :meth:`DueAlarms.close` fires after it, even one the thread already
handed to the loop (each carries the generation it was set in).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import os
import threading
import time
from collections.abc import Callable

__all__ = ["DUE_RETRY_PAUSE_S", "DUE_RETRY_S", "DUE_SLACK_S", "DueAlarms"]

#: Whoever waits for a message's due time (a timer) wakes this much after it, and then
#: retries empty fetches every ``DUE_RETRY_PAUSE_S`` for ``DUE_RETRY_S``: the store
#: decides visibility by its own clock, which may lag this host's. The slack is small:
#: the alarm's thread then wakes the loop, and the fetch travels to the store, so a
#: store on this host, reading this clock, sees the message at once.
DUE_SLACK_S = 0.0001
DUE_RETRY_S = 0.05
DUE_RETRY_PAUSE_S = 0.001

_log = logging.getLogger("duroxy.runtime")


class DueAlarms:
    """Calls ``on_due`` on the running loop once each time given to :meth:`at` has
    passed (alarms falling due together may call it once); an alarm given a callback
    of its own calls that instead, once, whatever else falls due with it."""

    def __init__(self, on_due: Callable[[], None]) -> None:
        self._on_due = on_due
        self._gen = 0  # bumped by close(): alarms of an earlier generation are void

    def at(self, visible_at: float, then: Callable[[], None] | None = None) -> None:
        """Alarm for a message visible from ``visible_at`` (epoch seconds); ``then``
        replaces ``on_due`` for this alarm."""
        _CLOCK.add(visible_at + DUE_SLACK_S, self, asyncio.get_running_loop(), self._gen,
                   then)

    def close(self) -> None:
        """Cancel every pending alarm."""
        self._gen += 1
        _CLOCK.drop(self)

    def _ring(self, loop: asyncio.AbstractEventLoop, gen: int,
              then: Callable[[], None] | None) -> None:
        """On the clock's thread: hand the alarm to its loop."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to wake
            loop.call_soon_threadsafe(self._fire, gen, then)

    def _fire(self, gen: int, then: Callable[[], None] | None) -> None:
        if gen == self._gen:
            (then or self._on_due)()


_Entry = tuple[float, int, DueAlarms, asyncio.AbstractEventLoop, int,
               Callable[[], None] | None]

#: The longest single sleep of the thread: a message may be due centuries from now,
#: further than a timed wait can express. Waking once an hour for it costs nothing.
_MAX_WAIT_S = 3600.0


class _Clock:
    """The process's alarm thread: a heap of pending alarms, earliest first, and a
    condition that wakes the thread when an earlier one is added."""

    def __init__(self) -> None:
        self._seq = itertools.count()  # ties keep their order; owners never compare
        self._reset()
        # A forked child has no alarm thread, and may have been forked while the
        # parent's held the lock: it starts afresh, with the parent's alarms dropped
        # (they belong to the parent's loops).
        if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[_Entry] = []
        self._pid = 0  # the process the thread runs in

    def add(self, due: float, owner: DueAlarms, loop: asyncio.AbstractEventLoop,
            gen: int, then: Callable[[], None] | None) -> None:
        if not math.isfinite(due):
            return  # never falls due
        with self._cond:
            if self._pid != os.getpid():  # first use in this process
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="duroxy-alarms", daemon=True).start()
            entry = (due, next(self._seq), owner, loop, gen, then)
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:  # the thread sleeps until a later time
                self._cond.notify()

    def drop(self, owner: DueAlarms) -> None:
        with self._cond:
            kept = [e for e in self._heap if e[2] is not owner]
            if len(kept) != len(self._heap):
                heapq.heapify(kept)
                self._heap = kept

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    wait = self._heap[0][0] - time.time() if self._heap else None
                    if wait is not None and wait <= 0:
                        break
                    self._cond.wait(None if wait is None else min(wait, _MAX_WAIT_S))
                now = time.time()
                due: dict[tuple[int, int, int, int], _Entry] = {}
                while self._heap and self._heap[0][0] <= now:
                    e = heapq.heappop(self._heap)
                    # (an alarm with a callback of its own is keyed by its sequence)
                    due.setdefault((id(e[2]), id(e[3]), e[4], e[1] if e[5] else -1), e)
            # Outside the lock: waking a loop takes a system call, and an owner setting
            # an alarm meanwhile must not wait for it.
            for _due, _seq, owner, loop, gen, then in due.values():
                try:
                    owner._ring(loop, gen, then)
                except Exception:  # pragma: no cover - the one alarm thread must live on
                    _log.exception("handing a due-time alarm to its event loop failed")


_CLOCK = _Clock()

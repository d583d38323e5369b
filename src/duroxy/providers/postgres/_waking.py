"""Waking the server before a due time: a latency switch of the PostgreSQL store
(``PostgresProvider(wake_before_due=)``, on by default; its gain is on the performance
page).

After an idle spell the first statement to reach the server is several times slower
than those that follow: on a two-core virtual machine, a one-row commit after one idle
second took 4.6 ms against 0.3 ms back to back, and a ``SELECT 1`` took 1.7 to 3.7 ms;
the processors and the server's processes have gone to sleep, and waking them is on the
statement's path. Work that nobody announces arrives at unknown times, but a message
committed here to fall due later (a timer, above all) says when it will be needed. So
``WAKE_AHEAD_S`` before such a due time, unless a statement of this provider ended in
the last ``BUSY_S`` (then nothing sleeps), one pooled connection runs ``SELECT 1``: a
one-row commit 2 ms after it then took 1.3 to 1.9 ms, with the wake-up on another
connection than the commit's (as the pool may hand out), and the timer's own commit in
W5 2.2 to 3.3 ms instead of 3.7 to 4.5.

Invariants: a wake-up writes nothing, and its failure is ignored; due times closer
than ``MIN_AHEAD_S`` get none (nothing has gone to sleep yet); a due time within
``BUCKET_S`` of one that has a wake-up set shares it.
"""

from __future__ import annotations

import bisect
import functools
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..._alarms import DueAlarms
from ._parking import in_background

__all__ = ["BUSY_S", "WAKE_AHEAD_S", "Waker"]

#: How long before a due time the server is woken: longer than a wake-up's own round
#: trip on a sleeping host (up to about 4 ms here), short enough that it is still awake.
WAKE_AHEAD_S = 0.006
#: A statement that ended this recently means nothing sleeps: no wake-up.
BUSY_S = 0.01
#: Due times sooner than this get no wake-up.
MIN_AHEAD_S = 0.05
#: Due times this close to one whose wake-up is set share it.
BUCKET_S = 0.002


def _ignore() -> None:
    """The alarms' default: every alarm here has a callback of its own."""


class Waker:
    """Wake-ups before due times. ``wake`` runs the statement; ``last_statement`` (the
    provider's record of when its last statement ended, ``time.monotonic()``) tells
    whether the store is busy."""

    def __init__(self, wake: Callable[[], Awaitable[Any]],
                 last_statement: Callable[[], float]) -> None:
        self._wake = wake
        self._last_statement = last_statement
        self._alarms = DueAlarms(_ignore)
        self._set: list[float] = []  # the times of the alarms set, in order

    def due(self, visible_at: float) -> None:
        """A message committed here falls due at ``visible_at`` (epoch seconds)."""
        at = visible_at - WAKE_AHEAD_S
        if not math.isfinite(at) or at - time.time() < MIN_AHEAD_S:
            return
        times = self._set
        i = bisect.bisect_left(times, at)
        if (i < len(times) and times[i] - at < BUCKET_S) or (i and at - times[i - 1] < BUCKET_S):
            return  # one set within a moment of it wakes the server for both
        times.insert(i, at)
        self._alarms.at(at, functools.partial(self._ring, at))

    def _ring(self, at: float) -> None:
        times = self._set
        i = bisect.bisect_left(times, at)
        if i < len(times) and times[i] == at:
            del times[i]
        if time.monotonic() - self._last_statement() >= BUSY_S:
            in_background(self._wake())

    def close(self) -> None:
        self._alarms.close()
        self._set.clear()

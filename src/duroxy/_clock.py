"""The wall clock a store, and everything working on it, reads: one object, passed in.

A store holds its clock (``Provider.clock``): queue visibility, lock expiry and record
times are taken from it, and a runtime and a client on that store take theirs from it
too (a turn's time, and so ``ctx.utcnow()``, timer fire times and history timestamps;
the time a client stamps a start with). By default it is :data:`SYSTEM_CLOCK`, the
real time. The time-skipping test environment gives its store a :class:`VirtualClock`
instead, which stands still until told to jump forward: nothing in :mod:`time`,
:mod:`datetime` or :mod:`asyncio` is patched, so several such stores live in one
process, each on its own clock.

What stays real whatever the clock: durations waited on (polling, lock renewal,
``timeout`` arguments, alarms) run on the event loop's and the threads' own clocks, and
worker heartbeats, which tell live processes apart, are stamped with the real time.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable

__all__ = ["SYSTEM_CLOCK", "Clock", "FunctionClock", "SystemClock", "VirtualClock", "as_clock"]

_log = logging.getLogger("duroxy.runtime")


class Clock:
    """A source of epoch seconds. ``jumps`` is true for a clock that moves only when
    told to (a :class:`VirtualClock`): who waits for a time on it must also listen for
    its jumps (:meth:`on_jump`), since no real duration brings that time nearer."""

    jumps = False

    def time(self) -> float:  # pragma: no cover - overridden
        """Seconds since the epoch."""
        raise NotImplementedError

    def time_us(self) -> int:
        """Whole microseconds since the epoch."""
        return round(self.time() * 1_000_000)

    def on_jump(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (from whichever thread moved the clock) after each jump
        forward; returns the call that stops it. A clock that does not jump never calls
        it."""
        return _nothing


def _nothing() -> None:
    pass


class SystemClock(Clock):
    """The real time (``time.time``)."""

    # The builtins themselves, so that reading this clock costs what time.time() does.
    time = staticmethod(time.time)

    def time_us(self) -> int:
        return time.time_ns() // 1000

    def __repr__(self) -> str:
        return "SYSTEM_CLOCK"


#: The real time: every store's clock unless it is given another.
SYSTEM_CLOCK: Clock = SystemClock()


class FunctionClock(Clock):
    """A clock read from a function of no arguments returning epoch seconds (a test's
    fake clock that it moves by hand)."""

    def __init__(self, fn: Callable[[], float]) -> None:
        self.time = fn  # type: ignore[method-assign]


def as_clock(clock: Clock | Callable[[], float] | None) -> Clock:
    """``clock`` as a :class:`Clock`: ``None`` is the real time, a function of no
    arguments a :class:`FunctionClock`."""
    if clock is None:
        return SYSTEM_CLOCK
    if isinstance(clock, Clock):
        return clock
    if callable(clock):
        return FunctionClock(clock)
    raise TypeError(f"clock must be a duroxy Clock or a function returning epoch seconds, "
                    f"not {type(clock).__name__}")


class VirtualClock(Clock):
    """A clock that stands still until moved forward (:meth:`advance_to`), in whole
    microseconds. It never moves back. Readers on any thread see a time that was set
    whole (one int)."""

    jumps = True

    def __init__(self, start: float) -> None:
        self._us = round(start * 1_000_000)
        self._lock = threading.Lock()
        self._listeners: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()

    def time(self) -> float:
        return self._us / 1_000_000

    def time_us(self) -> int:
        return self._us

    def advance_to(self, when: float) -> bool:
        """Move to ``when`` (epoch seconds, rounded to the microsecond) if that is
        later; returns whether the clock moved. Listeners are told after the move."""
        target = round(when * 1_000_000)
        with self._lock:
            if target <= self._us:
                return False
            self._us = target
            listeners = list(self._listeners.values())
        for callback in listeners:
            try:
                callback()
            except Exception:  # the jump happened; a broken listener must not undo it
                _log.exception("a listener of a virtual clock's jump failed")
        return True

    def on_jump(self, callback: Callable[[], None]) -> Callable[[], None]:
        with self._lock:
            key = next(self._ids)
            self._listeners[key] = callback

        def stop() -> None:
            with self._lock:
                self._listeners.pop(key, None)

        return stop

    def __repr__(self) -> str:
        return f"VirtualClock({self.time()!r})"

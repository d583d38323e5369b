"""Alarms for messages committed here that become visible later (timers, cool-downs).

Whoever committed such a message knows when it falls due, so it need not poll for it:
the runtime's dispatcher and the PostgreSQL store's parked fetches both set one of
these per message. Each alarm fires ``DUE_SLACK_S`` after the due time, since the store
compares visibility with its own clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from .base import DUE_SLACK_S

__all__ = ["DueAlarms"]


class DueAlarms:
    """Calls ``on_due`` on the running loop once each time given to :meth:`at` has
    passed. The pending alarms are kept for :meth:`close`; fired ones are forgotten
    now and then (at most ``KEPT`` are kept)."""

    KEPT = 4096

    def __init__(self, on_due: Callable[[], None]) -> None:
        self._on_due = on_due
        self._handles: set[asyncio.TimerHandle] = set()

    def at(self, visible_at: float) -> None:
        """Alarm for a message visible from ``visible_at`` (epoch seconds)."""
        loop = asyncio.get_running_loop()
        handle = loop.call_later(max(visible_at - time.time(), 0.0) + DUE_SLACK_S,
                                 self._on_due)
        self._handles.add(handle)
        if len(self._handles) > self.KEPT:
            now = loop.time()
            self._handles = {h for h in self._handles if not h.cancelled() and h.when() > now}

    def close(self) -> None:
        """Cancel every pending alarm."""
        for handle in self._handles:
            handle.cancel()
        self._handles.clear()

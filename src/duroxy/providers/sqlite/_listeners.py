"""Who hears of a SQLite store's commits: listeners by channel, called from the thread
that committed, after the commit."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .._finals import FinalRecords
from ..base import InstanceRecord, Listener
from ._tx import Details, Notes

__all__ = ["CHANNELS", "Listeners"]

log = logging.getLogger("duroxy.providers.sqlite")

CHANNELS: frozenset[str] = frozenset({"orchestrator", "activity", "terminal", "updated"})


class Listeners:
    """Listener registry, called from the writer thread after each commit.

    While someone listens for instances ending, the record a terminal commit wrote is
    kept (``finals``) for the waiter it wakes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0
        self._by_channel: dict[str, dict[int, Listener]] = {c: {} for c in CHANNELS}
        self.finals = FinalRecords()

    def add(self, channel: str, callback: Listener) -> Callable[[], None]:
        with self._lock:
            self._next += 1
            key = self._next
            self._by_channel[channel][key] = callback

        def unsubscribe() -> None:
            with self._lock:
                self._by_channel[channel].pop(key, None)

        return unsubscribe

    def clear(self) -> None:
        with self._lock:
            for d in self._by_channel.values():
                d.clear()

    def fire(self, notes: Notes, details: Details) -> None:
        for channel, instance_id in dict.fromkeys(notes):
            with self._lock:
                targets = list(self._by_channel[channel].values())
            final = details.get((channel, instance_id))
            if targets and isinstance(final, InstanceRecord):
                self.finals.keep(final)
            for callback in targets:
                try:
                    callback(instance_id)
                except Exception:
                    # The commit is durable; a broken listener must not look like a failure.
                    log.exception("%s listener failed", channel)

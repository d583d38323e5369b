"""The records of instances that just ended, kept briefly for the waiter they wake.

A store that commits a terminal turn knows the instance's final record. Someone
waiting for that instance (``Client.wait_for_orchestration``) is woken by the commit and
asks for the record at once; handing it the one the commit wrote saves a read. Each
record answers one ``get_instance`` within ``ttl`` seconds of its commit, so it is never
older than a read issued at the moment of the commit would have been; a store drops
them all on every delete or purge it makes.
"""

from __future__ import annotations

import threading
import time

from .base import InstanceRecord

__all__ = ["FinalRecords"]


class FinalRecords:
    """Thread-safe: kept by whatever thread commits, taken by the reader's loop."""

    def __init__(self, ttl: float = 0.5, cap: int = 1024) -> None:
        self._ttl = ttl
        self._cap = cap
        self._lock = threading.Lock()
        self._kept: dict[str, tuple[float, InstanceRecord]] = {}

    def keep(self, record: InstanceRecord) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._kept) >= self._cap:  # nobody came for these
                self._kept = {k: v for k, v in self._kept.items() if now - v[0] <= self._ttl}
            self._kept[record.instance_id] = (now, record)

    def take(self, instance_id: str) -> InstanceRecord | None:
        if not self._kept:
            return None
        with self._lock:
            kept = self._kept.pop(instance_id, None)
        if kept is None or time.monotonic() - kept[0] > self._ttl:
            return None
        return kept[1]

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()

"""The activity queue of the in-memory reference provider: a part of
:class:`~.provider.InMemoryProvider`, under its one lock."""

from __future__ import annotations

import uuid

from ...history import ActivityWork, OrchestratorMessage, encode_message
from ..base import ActivityItem, ExcludedWork
from ._state import Host, visible

__all__ = ["MemoryActivities"]


class MemoryActivities:
    """Mixed into InMemoryProvider."""

    async def fetch_activity_items(self: Host, lock_timeout: float, limit: int = 1,
                                   exclude: ExcludedWork | None = None) -> list[ActivityItem]:
        self._writable("fetch_activity_items")
        if limit <= 0:
            return []
        skip = exclude.activities if exclude is not None else frozenset()
        with self._lock:
            self._check_open()
            now = self._clock()
            items: list[ActivityItem] = []
            for row in self._work.values():  # id order: oldest first
                if len(items) >= limit:
                    break
                if not visible(row.visible_at, now) or row.name in skip:
                    continue
                if row.token is not None and row.expires_at > now:
                    continue
                if row.token is not None:
                    self._work_tokens.pop(row.token, None)  # expired: taken over
                row.token = uuid.uuid4().hex
                row.expires_at = now + lock_timeout
                row.fetch_count += 1
                self._work_tokens[row.token] = row.id
                items.append(ActivityItem(row.id, row.token, ActivityWork.from_json(row.text),
                                          row.fetch_count))
            return items

    async def ack_activity(self: Host, lock_token: str, completion: OrchestratorMessage) -> None:
        self._writable("ack_activity")
        text = encode_message(completion)
        with self._lock:
            self._check_open()
            row = self._held_work(lock_token, self._clock())
            self._drop_work(row.id)
            self._enqueue(completion, text)
        self._notify([("orchestrator", completion.instance_id)])

    async def abandon_activity(self: Host, lock_token: str, delay: float = 0.0, *,
                               ignore_attempt: bool = False) -> None:
        self._writable("abandon_activity")
        with self._lock:
            self._check_open()
            now = self._clock()
            row = self._held_work(lock_token, now)
            del self._work_tokens[lock_token]
            if ignore_attempt:
                row.fetch_count = max(row.fetch_count - 1, 0)
            row.token = None
            row.expires_at = 0.0
            row.visible_at = now + delay if delay > 0 else None
        if delay <= 0:
            self._notify([("activity", row.key[0])])

    async def renew_activity_lock(self: Host, lock_token: str, lock_timeout: float) -> None:
        self._writable("renew_activity_lock")
        with self._lock:
            self._check_open()
            now = self._clock()
            row = self._held_work(lock_token, now)
            row.expires_at = now + lock_timeout

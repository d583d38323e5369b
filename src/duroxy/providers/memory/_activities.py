"""The activity queue of the in-memory reference provider, and the activity sessions
that route it: a part of :class:`~.provider.InMemoryProvider`, under its one lock."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from ...history import ActivityWork, OrchestratorMessage, encode_message
from ..base import PLAIN_ROUTE, ActivityItem, ActivityRoute, ExcludedWork
from ._state import Host, SessionLease, Work, visible

__all__ = ["MemoryActivities"]


def _takes(route: ActivityRoute, row: Work, leases: dict[str, SessionLease], now: float,
           claimed: set[str]) -> bool:
    """Whether a fetch on ``route`` takes ``row`` (visible and not locked), claiming or
    keeping its session for the route's owner; ``claimed`` holds the sessions this fetch
    claimed so far."""
    if not route.filter.matches(row.tag):
        return False
    sid = row.session_id
    if sid is None:
        return True
    owner = route.session_owner
    if owner is None:
        return False
    lease = leases.get(sid)
    if lease is None or lease.owner != owner:
        if lease is not None and lease.locked_until > now:
            return False  # another worker holds it
        if sid not in claimed:
            if len(claimed) >= route.new_sessions:
                return False
            claimed.add(sid)
    leases[sid] = SessionLease(owner, now + route.session_lock_timeout)
    return True


class MemoryActivities:
    """Mixed into InMemoryProvider."""

    async def fetch_activity_items(self: Host, lock_timeout: float, limit: int = 1,
                                   exclude: ExcludedWork | None = None,
                                   route: ActivityRoute | None = None) -> list[ActivityItem]:
        self._writable("fetch_activity_items")
        if limit <= 0:
            return []
        skip = exclude.activities if exclude is not None else frozenset()
        route = route or PLAIN_ROUTE
        with self._lock:
            self._check_open()
            now = self._clock()
            items: list[ActivityItem] = []
            claimed: set[str] = set()
            for row in self._work.values():  # id order: oldest first
                if len(items) >= limit:
                    break
                if not visible(row.visible_at, now) or row.name in skip:
                    continue
                if row.token is not None and row.expires_at > now:
                    continue
                if not _takes(route, row, self._sessions, now, claimed):
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

    # ------------------------------------------------------------ sessions
    async def renew_sessions(self: Host, owner: str, session_ids: Sequence[str],
                             lock_timeout: float) -> list[str]:
        self._writable("renew_sessions")
        with self._lock:
            self._check_open()
            now = self._clock()
            held: list[str] = []
            for sid in dict.fromkeys(session_ids):
                lease = self._sessions.get(sid)
                if lease is not None and lease.owner == owner:
                    lease.locked_until = now + lock_timeout
                    held.append(sid)
            for sid in [s for s, lease in self._sessions.items() if lease.locked_until <= now]:
                del self._sessions[sid]
            return sorted(held)

    async def release_sessions(self: Host, owner: str, session_ids: Sequence[str] | None = None
                               ) -> int:
        self._writable("release_sessions")
        with self._lock:
            self._check_open()
            wanted = None if session_ids is None else set(session_ids)
            gone = [sid for sid, lease in self._sessions.items()
                    if lease.owner == owner and (wanted is None or sid in wanted)]
            for sid in gone:
                del self._sessions[sid]
        if gone:
            # their queued work may be taken by any worker now
            self._notify([("activity", None)])
        return len(gone)

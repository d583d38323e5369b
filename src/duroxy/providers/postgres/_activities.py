"""The activity queue of the PostgreSQL store: a part of PostgresProvider (see
``sql/queue_activities.sql``). Each call is one statement."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from ...errors import LockLost, PayloadError
from ...history import ActivityWork, OrchestratorMessage
from ..base import PLAIN_ROUTE, ActivityItem, ActivityRoute, Channel, ExcludedWork
from ._marshal import completion_params, key
from ._notify import Notifier
from ._sql import Statement, Statements

__all__ = ["ActivityQueue"]

_log = logging.getLogger("duroxy.providers.postgres")

Row = tuple[Any, ...]
_PLAIN: frozenset[str] = frozenset()
_UNDO = frozenset({"undo"})


def _route_parts(route: ActivityRoute) -> tuple[frozenset[str], list[str]]:
    """The parts of fetch_activities a route needs, and the tags of part ``tags``."""
    filt = route.filter
    parts: set[str] = set()
    if filt.include_default:
        parts.add("plain")
    tags: list[str] = []
    if filt.any_tag:
        parts.add("routed")
    else:
        tags = sorted(filt.tags)
        if filt.include_default and route.sessions:
            tags.append("")  # untagged work with a session
        if tags:
            parts.add("tags")
    if route.sessions:
        parts.add("sessions")
    return frozenset(parts), tags


class _Host(Protocol):
    """What these calls use of the provider."""

    _q: Statements
    _channel: str
    _notifier: Notifier

    async def _rows(self, name: str | Statement, params: dict[str, Any]) -> list[Row]: ...

    def _note(self, channel: Channel, instance_id: str) -> str: ...

    def _writable(self, operation: str) -> None: ...


class ActivityQueue:
    """Mixed into PostgresProvider."""

    async def fetch_activity_items(self: _Host, lock_timeout: float, limit: int = 1,
                                   exclude: ExcludedWork | None = None,
                                   route: ActivityRoute | None = None) -> list[ActivityItem]:
        self._writable("fetch_activity_items")
        route = route or PLAIN_ROUTE
        parts, tags = _route_parts(route)
        if limit <= 0 or not parts - {"sessions"}:
            return []
        skip = sorted(exclude.activities) if exclude is not None and exclude.activities \
            else None
        rows = await self._rows(self._q.variant("fetch_activities", parts), {
            "limit": limit, "lock_timeout": float(lock_timeout), "skip_activities": skip,
            "tags": tags or None, "owner": route.session_owner,
            "new_sessions": route.new_sessions if route.sessions else 0,
            "session_lock": float(route.session_lock_timeout)})
        rows.sort(key=lambda r: int(r[0]))
        items: list[ActivityItem] = []
        for rid, token, payload, attempts, _ in rows:
            try:
                items.append(ActivityItem(int(rid), token, ActivityWork.from_json(payload),
                                          int(attempts)))
            except PayloadError as e:
                # Only tampering produces this. Raising would strand the rest of the
                # batch until its leases lapse; the bad row stays leased (out of the
                # way) and comes back, with its attempt count growing, after the lease.
                _log.error("activity work row %s does not decode (attempt %s): %s",
                           rid, attempts, e)
        return items

    async def ack_activity(self: _Host, lock_token: str, completion: OrchestratorMessage
                           ) -> None:
        self._writable("ack_activity")
        params = completion_params(completion)
        params.update(token=lock_token, channel=self._channel,
                      note=self._note("orchestrator", completion.instance_id))
        rows = await self._rows("ack_activity", params)
        if not rows:
            raise LockLost("activity lock is not held (released, taken over or cancelled)")
        if not rows[0][0]:
            raise LockLost("activity lock expired")
        self._notifier.call([("orchestrator", completion.instance_id)])

    async def abandon_activity(self: _Host, lock_token: str, delay: float = 0.0, *,
                               ignore_attempt: bool = False) -> None:
        self._writable("abandon_activity")
        rows = await self._rows(
            self._q.variant("abandon_activity", _UNDO if ignore_attempt else _PLAIN), {
                "token": lock_token, "delay": float(delay), "channel": self._channel,
                "note_prefix": self._note("activity", "")})
        if not rows:
            raise LockLost("activity lock is not held (released, taken over or cancelled)")
        if delay <= 0:
            self._notifier.call([("activity", rows[0][0])])

    async def renew_activity_lock(self: _Host, lock_token: str, lock_timeout: float) -> None:
        self._writable("renew_activity_lock")
        rows = await self._rows("renew_activity", {
            "token": lock_token, "lock_timeout": float(lock_timeout)})
        if len(rows) != 1:
            raise LockLost("activity lock is not held (expired, taken over or cancelled)")

    # ------------------------------------------------------------ sessions
    async def renew_sessions(self: _Host, owner: str, session_ids: Sequence[str],
                             lock_timeout: float) -> list[str]:
        self._writable("renew_sessions")
        rows = await self._rows("renew_sessions", {
            "owner": owner, "keys": [key(s) for s in dict.fromkeys(session_ids)],
            "lock_timeout": float(lock_timeout)})
        return sorted(str(r[0]) for r in rows)

    async def release_sessions(self: _Host, owner: str, session_ids: Sequence[str] | None = None
                               ) -> int:
        self._writable("release_sessions")
        rows = await self._rows("release_sessions", {
            "owner": owner,
            "keys": None if session_ids is None else [key(s) for s in session_ids],
            "channel": self._channel, "note": self._note("activity", "")})
        gone = int(rows[0][0]) if rows else 0
        if gone:
            self._notifier.call([("activity", None)])
        return gone

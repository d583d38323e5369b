"""Activity routing in the SQLite store: the fetch of activity work a route asks for,
and the leases of activity sessions.

A fetch is one statement, the union of the named parts of ``queries.sql`` its route
needs (each one index range, oldest first, at most ``limit`` rows): untagged work
without a session (``claim_plain``), the tagged and the session work of each tag the
route accepts (``claim_tag``, ``''`` standing for untagged session work), or all of it
(``claim_routed``, for ``TagFilter.ANY``). A fetch of untagged work without sessions is
``claim_plain`` alone, as before routing. The writer thread serialises every write, so
the sessions a fetch finds free are still free when it claims them in the same
transaction.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import PayloadError
from ...history import ActivityWork
from ..base import PLAIN_ROUTE, ActivityItem, ActivityRoute, ExcludedWork
from ._ops import Q, fetch_all, log, new_token
from ._tx import Tx

__all__ = ["Claim", "fetch_activity_items", "probe_activity_items", "release_sessions",
           "renew_sessions"]


@dataclass(frozen=True, slots=True)
class Claim:
    """A fetch's statement and parameters (but ``now`` and ``limit``), from its route."""

    sql: str | None  # None: the route takes nothing
    params: dict[str, Any]
    route: ActivityRoute

    @classmethod
    def of(cls, route: ActivityRoute | None, exclude: ExcludedWork | None) -> Claim:
        route = route or PLAIN_ROUTE
        filt = route.filter
        sessions = route.sessions
        skip = (json.dumps(sorted(exclude.activities))
                if exclude is not None and exclude.activities else None)
        params: dict[str, Any] = {"skip": skip, "owner": route.session_owner,
                                  "may_claim": 1 if route.new_sessions > 0 else 0}
        skipping = skip is not None
        if filt.any_tag:
            return cls(_statement(True, 0, True, sessions, skipping), params, route)
        classes = sorted(filt.tags)
        if filt.include_default and sessions:
            classes.append("")  # untagged work with a session
        for n, tag in enumerate(classes):
            params[f"tag{n}"] = tag
        if not filt.include_default and not classes:
            return cls(None, params, route)
        return cls(_statement(filt.include_default, len(classes), False, sessions, skipping),
                   params, route)


@functools.cache
def _statement(plain: bool, tags: int, routed: bool, sessions: bool, skip: bool) -> str:
    """The union of the parts a route needs (see the module docstring)."""
    cond = Q["claim_sessions_owned" if sessions else "claim_sessions_none"]
    skipped = Q["claim_skip"] if skip else ""

    def part(name: str) -> str:
        return Q[name].replace("SKIP", skipped).replace("SESSIONS", cond)

    parts = [part("claim_plain")] if plain else []
    parts += [part("claim_tag").replace(":tag", f":tag{n}") for n in range(tags)]
    if routed:
        parts.append(part("claim_routed"))
    if len(parts) == 1:
        return parts[0]
    union = " UNION ALL ".join(f"SELECT * FROM ({part})" for part in parts)
    return f"SELECT * FROM ({union}) ORDER BY visible_at, id LIMIT :limit"


def probe_activity_items(tx: Tx, claim: Claim) -> list[ActivityItem] | None:
    """Outside any transaction: ``[]`` when a fetch would find nothing, ``None`` when
    it must run."""
    if claim.sql is None:
        return []
    found = fetch_all(tx.conn, claim.sql, {**claim.params, "now": tx.now, "limit": 1})
    return None if found else []


def fetch_activity_items(tx: Tx, lock_timeout: float, limit: int, claim: Claim
                         ) -> list[ActivityItem]:
    if claim.sql is None:
        return []
    conn, now = tx.conn, tx.now
    route = claim.route
    owner = route.session_owner
    found = fetch_all(conn, claim.sql, {**claim.params, "now": now, "limit": limit})
    salt = new_token()
    items: list[ActivityItem] = []
    sessions: dict[str, None] = {}  # the sessions of the rows taken, in fetch order
    new = 0
    for wid, payload, count, sid, holder, _at in found:
        if sid is not None and sid not in sessions and holder != owner:
            if new >= route.new_sessions:
                continue  # a session more than the fetch may claim: left for later
            new += 1
        try:
            work = ActivityWork.from_json(payload)
        except PayloadError as e:
            log.error("activity work row %d does not decode and is set aside: %s", wid, e)
            conn.execute(Q["park_activity"], (wid,))
            continue
        if sid is not None:
            sessions[sid] = None
        # The row id leads the token, so ack and renew find the row by primary key.
        items.append(ActivityItem(wid, f"{wid}.{salt}", work, count + 1))
    until = now + lock_timeout
    conn.executemany(Q["lock_activity"], [(it.lock_token, until, it.id) for it in items])
    if sessions:
        lease = now + route.session_lock_timeout
        conn.executemany(Q["claim_session"], [(sid, owner, lease) for sid in sessions])
    return items


def renew_sessions(tx: Tx, owner: str, session_ids: Sequence[str], lock_timeout: float
                   ) -> list[str]:
    held = fetch_all(tx.conn, Q["renew_sessions"], {
        "until": tx.now + lock_timeout, "owner": owner,
        "ids": json.dumps(list(dict.fromkeys(session_ids)))})
    tx.conn.execute(Q["forget_sessions"], (tx.now,))
    return sorted(sid for (sid,) in held)


def release_sessions(tx: Tx, owner: str, session_ids: Sequence[str] | None) -> int:
    ids = None if session_ids is None else json.dumps(list(session_ids))
    gone = tx.conn.execute(Q["release_sessions"], {"owner": owner, "ids": ids}).rowcount
    if gone:
        tx.notify("activity", None)  # their queued work may be taken by any worker now
    return int(gone)

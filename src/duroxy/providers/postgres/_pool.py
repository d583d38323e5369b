"""The connection pool of the PostgreSQL store: psycopg_pool's, reconnecting promptly
once the server is back.

When a pooled connection is found broken (the server restarted, its backend was
terminated), the pool replaces it in the background, retrying a failed connection
attempt after a delay that doubles each time: 1, 2, 4, 8 ... seconds, until
``reconnect_timeout`` (5 minutes). Every call meanwhile waits for a connection (up to
the provider's ``pool_timeout``). So after an outage of half a minute, the server could
be back for another half minute before the pool tried again, and every worker stood
still that long. Here the delay stops growing at ``RECONNECT_MAX_DELAY_S``: the pool
tries at least that often, and the calls waiting get a connection within about that
long of the server's return.
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool

__all__ = ["RECONNECT_MAX_DELAY_S", "Pool"]

#: The longest pause between two attempts to replace a lost connection.
RECONNECT_MAX_DELAY_S = 2.0


class Pool(AsyncConnectionPool):
    """``AsyncConnectionPool`` whose reconnection delay is capped (see module doc)."""

    async def _add_connection(self, attempt: Any, growing: bool = False) -> None:
        # psycopg_pool doubles ``attempt.delay`` after each failed attempt, before it
        # schedules the next: halving the cap keeps every pause within the cap. (A
        # psycopg_pool without this attribute keeps its own schedule.)
        delay = getattr(attempt, "delay", None)
        if isinstance(delay, float) and delay > RECONNECT_MAX_DELAY_S / 2:
            attempt.delay = RECONNECT_MAX_DELAY_S / 2
        await super()._add_connection(attempt, growing=growing)

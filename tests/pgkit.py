"""Polls of a PostgreSQL store for its tests: one parked (long polling, having found
nothing) by the time a test goes on, and a count of the fetches a test's polls run."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from duroxy.providers.base import ExcludedWork, OrchestrationItem
from duroxy.testing.provider_suite.support import HOLD

if TYPE_CHECKING:
    from duroxy.providers.postgres import PostgresProvider

__all__ = ["counting_fetches", "parked"]


def counting_fetches(p: PostgresProvider) -> list[int]:
    """The ``limit`` of every fetch ``p`` runs from now on, in order."""
    calls: list[int] = []
    fetch = p.fetch_orchestration_items

    async def counted(lock_timeout: float, limit: int = 1,
                      exclude: ExcludedWork | None = None) -> list[OrchestrationItem]:
        calls.append(limit)
        return await fetch(lock_timeout, limit, exclude)

    p.fetch_orchestration_items = counted  # type: ignore[method-assign]
    return calls


async def parked(p: PostgresProvider, wait: float = 30) -> asyncio.Future[Any]:
    """A poll that has found nothing and is parked by the time this returns."""
    assert await p.fetch_orchestration_items(HOLD) == []  # open, migrated and empty
    poll = asyncio.ensure_future(p.poll_orchestration_items(HOLD, 5, wait=wait))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if p._parking._parked:
            break
    assert p._parking._parked and not poll.done()
    return poll

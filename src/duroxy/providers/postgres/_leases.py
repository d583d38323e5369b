"""The leases a poll or a start may leave behind in the PostgreSQL store: a part of
PostgresProvider. A fetch whose caller is cancelled after its statement was sent, and
an item handed to a poll that is gone, hold leases nobody will use: they are given back
in the background, and ``close()`` waits a while for that work (``_settle_leases``)."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from ..base import ExcludedWork, OrchestrationItem
from ._parking import in_background

__all__ = ["LeaseWork"]


class _Host(Protocol):
    """What this part uses of the provider."""

    _lease_work: set[asyncio.Future[Any]]

    async def fetch_orchestration_items(
        self, lock_timeout: float, limit: int = 1, exclude: ExcludedWork | None = None
    ) -> list[OrchestrationItem]: ...

    async def abandon_orchestration_item(self, lock_token: str, delay: float = 0.0, *,
                                         ignore_attempt: bool = False) -> None: ...

    def _track(self, task: asyncio.Future[Any]) -> None: ...

    def _give_back(self, items: list[OrchestrationItem]) -> None: ...


class LeaseWork:
    """Mixed into PostgresProvider."""

    async def _fetch_or_give_back(self: _Host, lock_timeout: float, limit: int,
                                  exclude: ExcludedWork | None) -> list[OrchestrationItem]:
        """A fetch whose leases are given back should its caller be cancelled after the
        statement was sent (the leases may be taken by then)."""
        task = asyncio.ensure_future(
            self.fetch_orchestration_items(lock_timeout, limit) if exclude is None
            else self.fetch_orchestration_items(lock_timeout, limit, exclude))
        self._track(task)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(lambda t: None if t.cancelled() or t.exception()
                                   else self._give_back(t.result()))
            raise

    def _give_back(self: _Host, items: list[OrchestrationItem]) -> None:
        """Release leases nobody will use (best effort: an unreleased lease expires)."""
        for item in items:
            self._track(in_background(
                self.abandon_orchestration_item(item.lock_token, ignore_attempt=True)))

    def _track(self: _Host, task: asyncio.Future[Any]) -> None:
        self._lease_work.add(task)
        task.add_done_callback(self._lease_work.discard)

    async def _settle_leases(self: _Host, timeout: float = 5.0) -> None:
        """Wait a while for the lease work of this loop (work of another loop cannot
        finish; a lease that is not given back expires)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while pending := [t for t in self._lease_work if not t.done() and t.get_loop() is loop]:
            if loop.time() >= deadline:
                return
            await asyncio.wait(pending, timeout=deadline - loop.time())

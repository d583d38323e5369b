"""Long polling for the PostgreSQL store: fetches that found nothing, parked until work
may be there.

A parked fetch is woken (its future resolved with ``None``: fetch again) by every
orchestrator note, this node's own commits and other nodes' alike (see ``_notify.py``),
and when a message this node committed with a future ``visible_at`` falls due; after
that, empty fetches are retried until one finds work (for a moment at most), since the
database server's clock, which decides visibility, may lag this host's. A start
made through this provider while a fetch is parked is handed over to that fetch (its
future resolved with the item, see ``_starts.py``): no fetch, and no wake-up, between a
start and its first turn; never to a fetch that leaves the start's orchestration to
other workers (its ``ExcludedWork``).

Invariants: every parked fetch is in ``_parked`` exactly until its future is resolved
or it leaves (timeout, cancellation); a fetch taken for a hand-off is out of ``_parked``
until its taker resolves it, so nothing else resolves it meanwhile. Everything here
runs on the event loop of the parked fetch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..._alarms import DueAlarms
from ..base import DUE_RETRY_S, ExcludedWork, OrchestrationItem

__all__ = ["Parked", "Parking", "in_background"]


class Parked:
    """One parked fetch: the lease a hand-off takes for it, what it leaves to other
    workers, and its future (``None``: fetch again; a list: items handed over)."""

    __slots__ = ("exclude", "fut", "lock_timeout", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, lock_timeout: float,
                 exclude: ExcludedWork | None = None) -> None:
        self.loop = loop
        self.lock_timeout = lock_timeout
        self.exclude = exclude
        self.fut: asyncio.Future[list[OrchestrationItem] | None] = loop.create_future()


class Parking:
    """The parked fetches of one provider, and the alarms of messages due later."""

    def __init__(self) -> None:
        self._parked: list[Parked] = []
        self._alarms = DueAlarms(self._due)
        self._retry_until = 0.0  # time.monotonic()
        #: how many alarms have fired (news for a poll that would park without fetching)
        self.fired = 0

    def park(self, lock_timeout: float, exclude: ExcludedWork | None = None) -> Parked:
        p = Parked(asyncio.get_running_loop(), lock_timeout, exclude)
        self._parked.append(p)
        return p

    def leave(self, p: Parked) -> bool:
        """Take ``p`` out; False when something took or resolved it already."""
        try:
            self._parked.remove(p)
        except ValueError:
            return False
        return True

    async def wait(self, lock_timeout: float, timeout: float,
                   give_back: Callable[[list[OrchestrationItem]], None],
                   exclude: ExcludedWork | None = None) -> list[OrchestrationItem] | None:
        """Wait parked for up to ``timeout``: the items handed over, ``None`` when woken
        (fetch again), or ``[]`` when the time is up. Items that a cancelled wait can no
        longer return go to ``give_back``."""
        p = self.park(lock_timeout, exclude)
        try:
            await asyncio.wait({p.fut}, timeout=max(timeout, 0.0))
            if self.leave(p):
                return []  # timed out
            return await asyncio.shield(p.fut)  # resolved, or taken for a hand-off
        except asyncio.CancelledError:
            if not self.leave(p):  # taken or resolved
                if p.fut.done():  # handed over just now: nobody will take it
                    give_back(p.fut.result() or [])
                else:  # taken and not yet resolved: the taker finds it cancelled
                    p.fut.cancel()
            raise

    def take(self, name: str, version: str | None) -> Parked | None:
        """A parked fetch of the running loop to hand the start of an instance of
        orchestration ``name`` (at ``version``) to, out of ``_parked``; none that leaves
        that orchestration to other workers."""
        loop = asyncio.get_running_loop()
        for i, p in enumerate(self._parked):
            if p.loop is loop and not p.fut.done() and not (
                    p.exclude is not None and p.exclude.excludes_instance(name, version)):
                del self._parked[i]
                return p
        return None

    def wake(self, _instance_id: str | None = None) -> None:
        """Every parked fetch fetches again (a listener; one parked on another event loop
        than the caller's is resolved on its own)."""
        parked, self._parked = self._parked, []
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for p in parked:
            if p.loop.is_closed():
                continue
            if running is p.loop:
                _resolve(p.fut, None)
            else:
                p.loop.call_soon_threadsafe(_resolve, p.fut, None)

    def due_at(self, visible_at: float) -> None:
        """A message committed here becomes visible at ``visible_at`` (epoch seconds)."""
        self._alarms.at(visible_at)

    def _due(self) -> None:
        self.fired += 1
        self._retry_until = time.monotonic() + DUE_RETRY_S
        self.wake()

    def retrying(self) -> bool:
        """Whether a message fell due a moment ago and no fetch has found work since:
        an empty fetch is then retried soon."""
        return time.monotonic() < self._retry_until

    def found(self) -> None:
        """A fetch found work: whatever fell due is visible now."""
        self._retry_until = 0.0

    def close(self) -> None:
        self._alarms.close()
        self.wake()


def in_background(aw: Awaitable[Any]) -> asyncio.Future[Any]:
    """Run ``aw`` on the running loop; nobody needs its outcome, and its failure is not
    logged as never retrieved."""
    task = asyncio.ensure_future(aw)
    task.add_done_callback(_ignore_outcome)
    return task


def _ignore_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)

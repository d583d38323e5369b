"""The activity sessions one runtime owns: its claims, their leases, idle release.

A session is claimed in the store by the fetch that first takes one of its activities
(:class:`~..providers.base.ActivityRoute`), for this runtime's *owner* id: its
``worker_node_id``, or an id of its own lifetime. From then on:

* **Keeping.** Every fetch, lock renewal or completion of one of its activities here
  counts as activity; a task renews the leases of the sessions with recent activity
  every third of ``session_lock_timeout`` (sooner when ``session_idle_timeout`` is short),
  so only a runtime that died lets them lapse.
* **Idle release.** A session without activity for ``session_idle_timeout`` is released
  in the store, so that any runtime may claim it.
* **Shutdown** releases every session at once.
* **The cap.** A fetch may claim at most ``max_sessions_per_runtime`` minus the sessions
  owned; at the cap it takes only work of its own sessions and work without a session.

Fetches, renewals and releases take turns (``guard``): a session found idle is never
released while a fetch is handing this runtime one of its activities.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable

from ..options import RuntimeOptions
from ..providers.base import ActivityItem, ActivityRoute, Provider

__all__ = ["Sessions"]

logger = logging.getLogger("duroxy.runtime")

#: A runtime without sessions of its own still forgets other owners' ended leases this
#: often (the store's table then holds only live ones).
SWEEP_EVERY_S = 600.0


class Sessions:
    """The sessions of one runtime (see the module docstring)."""

    def __init__(self, provider: Provider, options: RuntimeOptions, worker_id: str,
                 failed: Callable[[BaseException], None]) -> None:
        self._provider = provider
        self._options = options
        self._failed = failed
        #: the owner id this runtime claims sessions for
        self.owner = options.worker_node_id or f"{worker_id}#{uuid.uuid4().hex[:12]}"
        # session id -> time.monotonic() of its last activity here
        self._owned: dict[str, float] = {}
        self.guard = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._swept_at = time.monotonic()

    @property
    def enabled(self) -> bool:
        return self._options.max_sessions_per_runtime > 0

    @property
    def owned(self) -> int:
        """How many sessions this runtime owns now (shown in its heartbeat)."""
        return len(self._owned)

    def route(self) -> ActivityRoute:
        """What this runtime's next fetch may take."""
        opts = self._options
        if not self.enabled:
            return ActivityRoute(opts.worker_tag_filter)
        return ActivityRoute(opts.worker_tag_filter, self.owner,
                             max(0, opts.max_sessions_per_runtime - len(self._owned)),
                             opts.session_lock_timeout)

    def fetched(self, items: list[ActivityItem]) -> None:
        """A fetch took ``items``: the sessions among them are this runtime's now."""
        now = time.monotonic()
        for item in items:
            sid = item.work.session_id
            if sid is not None:
                if sid not in self._owned:
                    logger.debug("session %r claimed by %r", sid, self.owner)
                self._owned[sid] = now

    def touch(self, session_id: str | None) -> None:
        """An activity of the session was renewed or completed here."""
        if session_id is not None and session_id in self._owned:
            self._owned[session_id] = time.monotonic()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self.enabled:
            self._task = asyncio.create_task(self._run(), name=f"duroxy-sessions[{self.owner}]")

    def _interval(self) -> float:
        opts = self._options
        return min(opts.session_lock_timeout / 3, opts.session_idle_timeout / 4)

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval()):
                    await self._stop.wait()
            if self._stop.is_set():
                return
            try:
                await self.tick()
            except Exception as e:  # the next tick tries again
                self._failed(e)
                logger.warning("renewing the activity sessions of %r failed (%s); retrying "
                               "in %g s", self.owner, e, self._interval())

    async def tick(self, now: float | None = None) -> None:
        """Release the sessions idle for ``session_idle_timeout``, renew the others'
        leases, and forget those another runtime took (its lease had lapsed)."""
        opts = self._options
        async with self.guard:
            now = time.monotonic() if now is None else now
            idle = [sid for sid, at in self._owned.items()
                    if now - at >= opts.session_idle_timeout]
            if idle:
                await self._provider.release_sessions(self.owner, idle)
                for sid in idle:
                    del self._owned[sid]
                logger.debug("sessions %s released by %r after %g s without activity",
                             idle, self.owner, opts.session_idle_timeout)
            if not self._owned and now - self._swept_at < SWEEP_EVERY_S:
                return
            self._swept_at = now
            asked = list(self._owned)
            held = set(await self._provider.renew_sessions(self.owner, asked,
                                                           opts.session_lock_timeout))
            for sid in asked:
                if sid not in held:
                    logger.info("session %r is no longer held by %r (its lease lapsed and "
                                "another runtime claimed it)", sid, self.owner)
                    self._owned.pop(sid, None)

    async def stop(self) -> None:
        """Stop renewing and release every session at once (after the fetches ended:
        nothing claims a session after this)."""
        self._stop.set()
        if self._task is None:
            return  # (never started: this runtime fetched no activity)
        with contextlib.suppress(Exception):
            await self._task
        async with self.guard:
            self._owned.clear()
            try:
                await self._provider.release_sessions(self.owner)
            except Exception as e:
                logger.warning("could not release the activity sessions of %r (%s); other "
                               "runtimes may claim them once their leases end, in %g s",
                               self.owner, e, self._options.session_lock_timeout)

    async def give_up(self, session_id: str) -> None:
        """Release one session now (its activity is run by another runtime)."""
        async with self.guard:
            self._owned.pop(session_id, None)
            await self._provider.release_sessions(self.owner, [session_id])

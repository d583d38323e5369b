"""The runtime: a lifecycle around two dispatchers over one store.

``Runtime.start`` checks the store, records this worker's first heartbeat (which also
tells what other live workers run, see :mod:`.heartbeat`), and starts two fetch loops:
the orchestration dispatcher's (:mod:`.orchestrations`: turns, the cache of live
executions, commits) and the activity dispatcher's (:mod:`.activities`: running
activities, their locks and cancellation). The two meet in two places only: a turn
starts the activities it claimed, and an activity's result is offered to the
orchestration dispatcher to feed into its instance's next turn. ``shutdown`` marks the
worker stopped, stops both loops, lets work in flight finish for a while and gives
back what is still held.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..errors import ProviderError, StoreReadOnly
from ..options import RuntimeOptions
from ..providers.base import Provider
from .activities import ActivityDispatcher
from .dispatch import FetchLoop, TaskSet
from .heartbeat import (
    Heartbeat,
    claim_node_id,
    claim_worker_id,
    release_node_id,
    release_worker_id,
)
from .hooks import HookSet
from .metrics import Metrics, MetricsSnapshot
from .orchestrations import OrchestrationDispatcher
from .registry import ActivityRegistry, OrchestrationRegistry
from .sessions import Sessions
from .wake import ANNOUNCED_POLL_FACTOR, Wake

__all__ = ["Runtime"]

logger = logging.getLogger("duroxy.runtime")

#: The id Runtime.start reads to see that the store works (whether it exists or not).
_PROBE_ID = "duroxy-runtime-start-probe"


class Runtime:
    """Runs orchestrations and activities from a store until shut down.

    ``rt = await Runtime.start(provider, activities, orchestrations, options)``; also an
    async context manager that shuts down on exit.
    """

    def __init__(self, provider: Provider, activities: ActivityRegistry | None,
                 orchestrations: OrchestrationRegistry | None, options: RuntimeOptions) -> None:
        activities, orchestrations = _registries(activities, orchestrations, options)
        self.provider = provider
        self.activities = activities
        self.orchestrations = orchestrations
        self.options = options
        self.worker_id = claim_worker_id(options.worker_id)
        self._stopping = False
        self._stopped = asyncio.Event()
        self._tasks = TaskSet()
        loop = asyncio.get_running_loop()
        # Work of other processes reaches a store that announces it everywhere at once;
        # its poll only catches what no commit announces.
        slow = ANNOUNCED_POLL_FACTOR if provider.announces_work else 1.0
        self._orch_wake = Wake(loop, slow)
        self._act_wake = Wake(loop, slow)
        # (The heartbeat reports the activities running and the sessions owned: it asks
        # once they exist.)
        self._heartbeat = Heartbeat(provider, self.worker_id, options, activities,
                                    orchestrations, lambda: self._workers.active,
                                    lambda: self._sessions.owned)
        # Its own counters first, then the hooks integrations installed (duroxy._hooks).
        self._metrics = Metrics(options.slow_turn_threshold)
        self._hooks = HookSet((self._metrics,), self.worker_id, self._held)
        self._sessions = Sessions(provider, options, self.worker_id, self._hooks.store_failed)
        self._workers = ActivityDispatcher(provider, activities, options, self._heartbeat,
                                           self.worker_id, self._tasks, self._hooks,
                                           self._sessions)
        self._turns = OrchestrationDispatcher(provider, orchestrations, activities, options,
                                              self._heartbeat, self._workers, self._orch_wake,
                                              self._hooks, self.worker_id, self._tasks)
        self._workers.feed = self._turns.feed_completion
        # A split worker runs the fetch loop of its kind of work only (section "Split
        # workers" of the README): 0 turn slots, or no activity it accepts.
        self._fetch_loops: dict[str, FetchLoop[Any]] = {}
        if options.runs_orchestrations:
            self._fetch_loops["orchestrations"] = FetchLoop(
                "orchestration", self._turns.fetch, self._turns.run, self._orch_wake,
                self._turns.slots, self._turns.long_poll, options, self._tasks)
        if options.runs_activities:
            self._fetch_loops["activities"] = FetchLoop(
                "activity", self._workers.fetch, self._workers.run, self._act_wake,
                self._workers.slots, False, options, self._tasks)
        self._loops: list[asyncio.Task[None]] = []
        self._unlisten: list[Any] = []

    # ================================================================ lifecycle
    @classmethod
    async def start(cls, provider: Provider, activities: ActivityRegistry | None,
                    orchestrations: OrchestrationRegistry | None,
                    options: RuntimeOptions | None = None) -> Runtime:
        """Start a runtime on ``provider``. A registry may be ``None`` when the runtime
        does not run that kind of work (``orchestration_concurrency=0``, or
        ``activity_concurrency=0`` / ``worker_tag_filter=TagFilter.NONE``). Raises
        ``ValueError`` when ``options.worker_node_id`` belongs to a live runtime."""
        # A store this runtime cannot use (read-only, closed, not a duroxy store, of a
        # newer schema) fails the start rather than every fetch after it; one that is
        # unreachable for now (a retryable error) is left to the dispatchers, which retry.
        if provider.read_only:
            raise StoreReadOnly(f"a runtime needs a store it can write (it fetches, locks "
                                f"and commits work), and {provider!r} was opened "
                                "read-only: open it without read_only")
        try:
            await provider.get_instance(_PROBE_ID)
        except ProviderError as e:
            if not e.retryable:
                raise
            logger.warning("the store is not reachable yet (%s); retrying in the background", e)
        options = options or RuntimeOptions()
        rt = cls(provider, activities, orchestrations, options)
        try:
            await claim_node_id(provider, options)
        except BaseException:
            release_worker_id(rt.worker_id)
            raise
        try:
            # The first heartbeat, and what the others run, before any fetch.
            await rt._heartbeat.start()
        except BaseException:
            release_worker_id(rt.worker_id)
            release_node_id(options)
            raise
        if options.runs_orchestrations and not rt._turns.long_poll:
            rt._unlisten.append(provider.listen("orchestrator", rt._orch_wake.set))
        if options.runs_activities:
            rt._unlisten.append(provider.listen("activity", rt._act_wake.set))
            rt._sessions.start()
        # A store clock that jumps (a test's virtual clock) makes work due in no real
        # time: both dispatchers look again at each jump.
        rt._unlisten.append(provider.clock.on_jump(rt._orch_wake.set))
        rt._unlisten.append(provider.clock.on_jump(rt._act_wake.set))
        rt._hooks.started()
        rt._loops = [asyncio.create_task(fl.run(), name=f"duroxy-{name}")
                     for name, fl in rt._fetch_loops.items()]
        return rt

    def metrics_snapshot(self) -> MetricsSnapshot:
        """This runtime's counters since it started (never reset): see
        :class:`MetricsSnapshot`. A turn's or an activity attempt's counts are in
        before its commit returns, so a client that saw a result sees its count."""
        return self._metrics.snapshot()

    def _held(self) -> tuple[int, int]:
        """The turns and the activities this runtime holds now (read by metric
        exporters, from any thread: two int reads)."""
        turns, acts = self._turns.slots, self._workers.slots
        return turns.size - turns.free, acts.size - acts.free

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def shutdown(self, timeout: float | None = 10.0) -> None:
        """Stop fetching, let in-flight work finish for up to ``timeout`` seconds, then
        release what is still held so another worker can take it at once."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        # Marked stopped first: this runtime takes no more work, and the other workers
        # stop leaving work to it at their next heartbeat.
        try:
            await asyncio.wait_for(self._heartbeat.stop(), 5.0)
        except Exception:
            logger.debug("marking the worker stopped took too long", exc_info=True)
        for unlisten in self._unlisten:
            unlisten()
        self._turns.stopping = True
        for fetch_loop in self._fetch_loops.values():
            fetch_loop.stop()
        await asyncio.gather(*self._loops, return_exceptions=True)
        # Nothing is fetched any more: the sessions go at once (activities of theirs
        # still running keep their own locks).
        try:
            await asyncio.wait_for(self._sessions.stop(), 5.0)
        except Exception:
            logger.debug("releasing the sessions took too long", exc_info=True)
        pending = set(self._tasks.tasks)
        if pending:
            _done, pending = await asyncio.wait(pending, timeout=timeout)
        for task in pending:
            task.cancel()  # activity runners abandon their item when cancelled
        if pending:
            await asyncio.wait(pending, timeout=5.0)
        self._turns.close()
        self._workers.close()
        self._hooks.stopped()
        release_worker_id(self.worker_id)
        release_node_id(self.options)
        self._stopped.set()


def _registries(activities: ActivityRegistry | None,
                orchestrations: OrchestrationRegistry | None, options: RuntimeOptions
                ) -> tuple[ActivityRegistry, OrchestrationRegistry]:
    """The registries, an empty one for ``None`` where the runtime does not use it."""
    if activities is None and not options.runs_activities:
        activities = ActivityRegistry.builder().build()
    if not isinstance(activities, ActivityRegistry):
        raise TypeError("activities must be an ActivityRegistry (use ActivityRegistry."
                        "builder()...build()), or None for a runtime that runs no "
                        "activities (RuntimeOptions(activity_concurrency=0))")
    if orchestrations is None and not options.runs_orchestrations:
        orchestrations = OrchestrationRegistry.builder().build()
    if not isinstance(orchestrations, OrchestrationRegistry):
        raise TypeError("orchestrations must be an OrchestrationRegistry (use "
                        "OrchestrationRegistry.builder()...build()), or None for a runtime "
                        "that runs no orchestrations (RuntimeOptions("
                        "orchestration_concurrency=0))")
    return activities, orchestrations

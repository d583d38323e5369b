"""An optional capability of a store: telling what work it holds now and when its next
work falls due (:meth:`PendingWork.pending_work`).

The time-skipping test environment (``duroxy.testing.OrchestrationEnvironment``) reads
it to decide when nothing can run: no lock is held (no turn, no activity in flight) and
nothing is fetchable before a time still to come; it then moves the store's virtual
clock (``Provider.clock``) to that time. A store without the capability works
everywhere else.
"""

from __future__ import annotations

import abc
from typing import NamedTuple

from ..options import TagFilter

__all__ = ["PendingWork", "PendingWorkReport"]


class PendingWorkReport(NamedTuple):
    """``held``: locks held and not expired by the store's clock, orchestration
    instances (a turn in progress) and activities (running) together; an instance
    cooling down after an abandon with a delay is not held. ``due_at``: the earliest
    time (epoch seconds, the store's clock; it may lie in the past) at which the store
    could hand out work not held: a queued orchestration message (its visibility, or the
    end of its instance's cool-down, whichever is later) or an activity; ``None`` when it
    has none. A message not yet visible for an instance that has ended counts for
    nothing (it will only be discarded)."""

    held: int
    due_at: float | None


class PendingWork(abc.ABC):
    """The capability (discovered with ``isinstance``)."""

    @abc.abstractmethod
    async def pending_work(self, accepts: TagFilter | None = None) -> PendingWorkReport:
        """What the store holds now and when its next work falls due (see
        :class:`PendingWorkReport`). With ``accepts``, activity work whose tag that filter
        refuses counts for nothing in ``due_at``: no worker in view would take it, so it
        never falls due for them (it waits in the store). Reads only."""

"""Steps shared by several orchestrations."""

from __future__ import annotations

from datetime import timedelta

from duroxy import ActivityFailed, BackoffStrategy, OrchestrationContext, RetryPolicy

from ..activity_types import ResourceStatus, UpdateStatusInput
from ..names import activities

#: Retries for cleanup steps: they must get through a flaky moment.
CLEANUP_RETRY = RetryPolicy(3).with_backoff(
    BackoffStrategy.Fixed(delay=timedelta(milliseconds=50)))


async def update_status_best_effort(ctx: OrchestrationContext, name: str,
                                    status: ResourceStatus, detail: str = "") -> bool:
    """Record ``status``; on failure log it and carry on (the metadata is advisory;
    the resource itself is what matters). Returns whether the update went through."""
    try:
        await ctx.schedule_activity(activities.UPDATE_STATUS,
                                    UpdateStatusInput(name=name, status=status, detail=detail))
    except ActivityFailed as e:
        ctx.trace_warn(f"could not record status {status.value!r} for {name!r}, "
                       f"continuing: {e.message}")
        return False
    return True

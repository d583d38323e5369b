"""cleanup-resource: undo a partial creation (safe to run for any state)."""

from __future__ import annotations

from duroxy import OrchestrationContext

from ..activity_types import (
    DeleteVmInput,
    DeleteVmOutput,
    ReleaseReservationInput,
    ReleaseReservationOutput,
    ResourceStatus,
)
from ..names import activities
from ..types import CleanupInput, CleanupOutput
from .common import CLEANUP_RETRY, update_status_best_effort


async def cleanup_resource(ctx: OrchestrationContext, input: CleanupInput) -> CleanupOutput:
    ctx.trace_info(f"cleaning up {input.name!r}: {input.reason}")
    # Mark it failed first, while the record still exists; best effort.
    await update_status_best_effort(ctx, input.name, ResourceStatus.FAILED, input.reason)
    deleted: DeleteVmOutput = await ctx.schedule_activity_with_retry(
        activities.DELETE_VM, DeleteVmInput(name=input.name), CLEANUP_RETRY,
        output_type=DeleteVmOutput)
    released: ReleaseReservationOutput = await ctx.schedule_activity_with_retry(
        activities.RELEASE_RESERVATION, ReleaseReservationInput(name=input.name),
        CLEANUP_RETRY, output_type=ReleaseReservationOutput)
    return CleanupOutput(name=input.name, vm_deleted=deleted.deleted,
                         reservation_released=released.released)

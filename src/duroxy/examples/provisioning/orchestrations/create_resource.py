"""create-resource: reserve, create with retries, record status, start monitoring."""

from __future__ import annotations

from datetime import timedelta

from duroxy import ActivityFailed, BackoffStrategy, OrchestrationContext, RetryPolicy

from ..activity_types import (
    CreateVmInput,
    CreateVmOutput,
    ReserveInput,
    ReserveOutput,
    ResourceStatus,
)
from ..names import activities, monitor_instance_id, orchestrations
from ..types import (
    CleanupInput,
    CleanupOutput,
    CreateResourceInput,
    CreateResourceOutput,
    HealthMonitorInput,
)
from .common import update_status_best_effort

#: Exponential backoff between create attempts: waits 50 ms, 100 ms, 200 ms. A real
#: cloud would want seconds (base=timedelta(seconds=2), max=timedelta(seconds=30));
#: the example keeps them short so that the demo finishes quickly.
CREATE_VM_RETRY = RetryPolicy(4).with_backoff(BackoffStrategy.Exponential(
    base=timedelta(milliseconds=50), multiplier=2.0, max=timedelta(seconds=2)))


async def create_resource(ctx: OrchestrationContext, input: CreateResourceInput
                          ) -> CreateResourceOutput:
    ctx.trace_info(f"creating resource {input.name!r} in {input.region}")
    ctx.set_custom_status({"phase": "reserving"})
    reservation: ReserveOutput = await ctx.schedule_activity(
        activities.RESERVE_RESOURCE,
        ReserveInput(name=input.name, region=input.region, size=input.size,
                     owner=input.owner, faults=input.faults),
        output_type=ReserveOutput)

    ctx.set_custom_status({"phase": "creating"})
    try:
        vm: CreateVmOutput = await ctx.schedule_activity_with_retry(
            activities.CREATE_VM,
            CreateVmInput(resource_id=reservation.resource_id, name=input.name,
                          region=input.region, size=input.size),
            CREATE_VM_RETRY, output_type=CreateVmOutput)
    except ActivityFailed as failure:
        # Undo whatever part of the creation happened, in a child orchestration with a
        # predictable id, then fail with the original error.
        ctx.trace_error(f"creating {input.name!r} failed after {failure.attempts} "
                        f"attempts: {failure.message}; cleaning up")
        ctx.set_custom_status({"phase": "cleaning-up"})
        await ctx.schedule_sub_orchestration(
            orchestrations.CLEANUP_RESOURCE, CleanupInput(name=input.name,
                                                          reason=failure.message),
            instance_id=f"{ctx.instance_id}::cleanup", output_type=CleanupOutput)
        ctx.set_custom_status({"phase": "failed"})
        raise

    recorded = await update_status_best_effort(ctx, input.name, ResourceStatus.RUNNING)

    # Fire and forget: the monitor outlives this orchestration.
    monitor_id = monitor_instance_id(input.name)
    ctx.schedule_orchestration(orchestrations.HEALTH_MONITOR, monitor_id,
                               HealthMonitorInput(name=input.name,
                                                  interval_s=input.monitor_interval_s))
    ctx.set_custom_status({"phase": "running"})
    ctx.trace_info(f"resource {input.name!r} is running at {vm.ip_address}")
    return CreateResourceOutput(
        resource_id=reservation.resource_id, name=input.name, vm_id=vm.vm_id,
        ip_address=vm.ip_address, hourly_price=vm.hourly_price, create_attempts=vm.attempt,
        status_recorded=recorded, monitor_instance_id=monitor_id)

"""health-monitor: check a resource forever, one check per execution.

Each execution does one check, then waits for whichever comes first: the
"InstanceDeleted" event or the next check's timer. On the timer it continues as new,
so the history never grows beyond one check's worth of events however long the
resource lives. Events that arrive between executions are carried over to the next.
"""

from __future__ import annotations

import dataclasses

from duroxy import OrchestrationContext

from ..activity_types import HealthCheckInput, HealthCheckOutput, RecordHealthInput
from ..names import activities, events
from ..types import HealthMonitorInput, HealthMonitorOutput


async def health_monitor(ctx: OrchestrationContext, input: HealthMonitorInput
                         ) -> HealthMonitorOutput:
    check_number = input.checks + 1
    health: HealthCheckOutput = await ctx.schedule_activity(
        activities.CHECK_HEALTH, HealthCheckInput(name=input.name),
        output_type=HealthCheckOutput)
    if not health.exists:
        ctx.trace_info(f"{input.name!r} no longer exists; monitor stops")
        return HealthMonitorOutput(name=input.name, checks=check_number,
                                   stopped_by="resource-gone", execution_id=ctx.execution_id)
    await ctx.schedule_activity(
        activities.RECORD_HEALTH,
        RecordHealthInput(name=input.name, check_number=check_number,
                          healthy=health.healthy, checked_at=health.checked_at))
    streak = 0 if health.healthy else input.unhealthy_streak + 1
    if streak:
        ctx.trace_warn(f"{input.name!r} unhealthy for {streak} check(s)")
    ctx.set_custom_status({"checks": check_number, "healthy": health.healthy})

    # Race the deletion signal against the next check; the loser is dropped.
    index, _ = await ctx.select2(ctx.schedule_wait(events.INSTANCE_DELETED),
                                 ctx.schedule_timer(input.interval_s))
    if index == 0:
        ctx.trace_info(f"{input.name!r} was deleted; monitor stops after "
                       f"{check_number} checks")
        return HealthMonitorOutput(name=input.name, checks=check_number,
                                   stopped_by=events.INSTANCE_DELETED,
                                   execution_id=ctx.execution_id)
    ctx.continue_as_new(dataclasses.replace(input, checks=check_number,
                                            unhealthy_streak=streak))

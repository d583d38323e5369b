"""apply-config 1.0.2: a copy of 1.0.1 that snapshots the disk before applying.

Frozen once released: the next change goes into a copy (1.0.3).
"""

from __future__ import annotations

from duroxy import OrchestrationContext

from ...activity_types import (
    ApplySettingsInput,
    ApplySettingsOutput,
    SnapshotDiskInput,
    SnapshotDiskOutput,
    ValidateConfigInput,
    ValidateConfigOutput,
)
from ...names import activities
from ...types import ApplyConfigInput, ApplyConfigOutput

VERSION = "1.0.2"


async def apply_config(ctx: OrchestrationContext, input: ApplyConfigInput) -> ApplyConfigOutput:
    check: ValidateConfigOutput = await ctx.schedule_activity(
        activities.VALIDATE_CONFIG, ValidateConfigInput(name=input.name, settings=input.settings),
        output_type=ValidateConfigOutput)
    if not check.valid:
        raise ValueError(f"invalid settings for {input.name!r}: {'; '.join(check.problems)}")
    # new in 1.0.2: a snapshot to roll back to; the instance id is the idempotency key
    snapshot: SnapshotDiskOutput = await ctx.schedule_activity(
        activities.SNAPSHOT_DISK, SnapshotDiskInput(name=input.name, request_id=ctx.instance_id),
        output_type=SnapshotDiskOutput)
    applied: ApplySettingsOutput = await ctx.schedule_activity(
        activities.APPLY_SETTINGS, ApplySettingsInput(name=input.name, settings=input.settings),
        output_type=ApplySettingsOutput)
    return ApplyConfigOutput(name=input.name, version=VERSION,
                             steps=["validate", "snapshot", "apply"], changed=applied.changed,
                             snapshot_id=snapshot.snapshot_id)

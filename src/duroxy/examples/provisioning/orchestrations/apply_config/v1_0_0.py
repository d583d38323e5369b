"""apply-config 1.0.0: apply the settings. Frozen: never edit a released version."""

from __future__ import annotations

from duroxy import OrchestrationContext

from ...activity_types import ApplySettingsInput, ApplySettingsOutput
from ...names import activities
from ...types import ApplyConfigInput, ApplyConfigOutput

VERSION = "1.0.0"


async def apply_config(ctx: OrchestrationContext, input: ApplyConfigInput) -> ApplyConfigOutput:
    applied: ApplySettingsOutput = await ctx.schedule_activity(
        activities.APPLY_SETTINGS, ApplySettingsInput(name=input.name, settings=input.settings),
        output_type=ApplySettingsOutput)
    return ApplyConfigOutput(name=input.name, version=VERSION, steps=["apply"],
                             changed=applied.changed)

"""apply-config 1.0.1: a copy of 1.0.0 that validates the settings first.

Frozen: never edit a released version.
"""

from __future__ import annotations

from duroxy import OrchestrationContext

from ...activity_types import (
    ApplySettingsInput,
    ApplySettingsOutput,
    ValidateConfigInput,
    ValidateConfigOutput,
)
from ...names import activities
from ...types import ApplyConfigInput, ApplyConfigOutput

VERSION = "1.0.1"


async def apply_config(ctx: OrchestrationContext, input: ApplyConfigInput) -> ApplyConfigOutput:
    # new in 1.0.1: validate before touching anything
    check: ValidateConfigOutput = await ctx.schedule_activity(
        activities.VALIDATE_CONFIG, ValidateConfigInput(name=input.name, settings=input.settings),
        output_type=ValidateConfigOutput)
    if not check.valid:
        raise ValueError(f"invalid settings for {input.name!r}: {'; '.join(check.problems)}")
    applied: ApplySettingsOutput = await ctx.schedule_activity(
        activities.APPLY_SETTINGS, ApplySettingsInput(name=input.name, settings=input.settings),
        output_type=ApplySettingsOutput)
    return ApplyConfigOutput(name=input.name, version=VERSION, steps=["validate", "apply"],
                             changed=applied.changed)

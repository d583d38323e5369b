"""Check requested settings against what the control plane allows."""

from __future__ import annotations

import re

from duroxy import ActivityContext

from ...activity_types import ValidateConfigInput, ValidateConfigOutput
from ...fake_cloud import WORLD

_KEY = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


async def validate_config(ctx: ActivityContext, input: ValidateConfigInput
                          ) -> ValidateConfigOutput:
    """Read-only, hence idempotent by nature."""
    problems: list[str] = []
    with WORLD.transaction() as db:
        if input.name not in db.records:
            problems.append(f"unknown resource {input.name!r}")
    for key, value in input.settings.items():
        if not _KEY.match(key):
            problems.append(f"bad setting name {key!r}")
        if not value:
            problems.append(f"setting {key!r} has an empty value")
    return ValidateConfigOutput(valid=not problems, problems=problems)

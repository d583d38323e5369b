"""Apply settings to a resource."""

from __future__ import annotations

from duroxy import ActivityContext

from ...activity_types import ApplySettingsInput, ApplySettingsOutput
from ...fake_cloud import WORLD


async def apply_settings(ctx: ActivityContext, input: ApplySettingsInput
                         ) -> ApplySettingsOutput:
    """Set each key to its value; only keys whose value differs are written, so a
    re-run changes nothing and reports an empty ``changed``."""
    with WORLD.transaction() as db:
        if input.name not in db.vms:
            raise LookupError(f"no VM for {input.name!r} to configure")
        current = db.settings.setdefault(input.name, {})
        changed = sorted(k for k, v in input.settings.items() if current.get(k) != v)
        current.update(input.settings)
    return ApplySettingsOutput(changed=changed)

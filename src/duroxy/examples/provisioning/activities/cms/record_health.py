"""Append a health check result to the metadata store's health log."""

from __future__ import annotations

from duroxy import ActivityContext

from ...activity_types import RecordHealthInput
from ...fake_cloud import WORLD, HealthRecord


def record_health(ctx: ActivityContext, input: RecordHealthInput) -> bool:
    """A plain ``def`` activity (runs on the runtime's thread pool). Each check is keyed
    by ``(name, check_number)``, so a re-run writes nothing; returns whether it wrote."""
    key = (input.name, input.check_number)
    with WORLD.transaction() as db:
        if key in db.health_log:
            return False
        db.health_log[key] = HealthRecord(healthy=input.healthy, checked_at=input.checked_at)
    return True

"""Probe a resource's VM."""

from __future__ import annotations

from datetime import UTC, datetime

from duroxy import ActivityContext

from ...activity_types import HealthCheckInput, HealthCheckOutput
from ...fake_cloud import WORLD


def check_health(ctx: ActivityContext, input: HealthCheckInput) -> HealthCheckOutput:
    """Read-only probe (plain ``def``: runs on the thread pool). Reading the clock is
    fine here: activities need not be deterministic, orchestrations must be."""
    with WORLD.transaction() as db:
        vm = db.vms.get(input.name)
        exists, healthy = vm is not None, vm is not None and vm.healthy
    return HealthCheckOutput(name=input.name, exists=exists, healthy=healthy,
                             checked_at=datetime.now(UTC))

"""Orchestration inputs and outputs: what clients send and receive.

These dataclasses are the app's public wire format. They are stored as JSON in
history, so evolve them compatibly: add fields with defaults, never rename or drop
one that a running instance may still hold.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from decimal import Decimal
from uuid import UUID

__all__ = [
    "ApplyConfigInput",
    "ApplyConfigOutput",
    "CleanupInput",
    "CleanupOutput",
    "CreateResourceInput",
    "CreateResourceOutput",
    "FaultPlan",
    "HealthMonitorInput",
    "HealthMonitorOutput",
    "ResourceSize",
]


class ResourceSize(enum.StrEnum):
    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"


@dataclass(frozen=True)
class FaultPlan:
    """Faults the fake cloud injects for one resource, so that retries and the
    best-effort path can be seen. Real inputs would not carry this."""

    #: the first N create calls for the resource fail with a transient error
    transient_create_failures: int = 0
    #: every status update for the resource fails (the metadata store is "down")
    status_store_down: bool = False


@dataclass(frozen=True)
class CreateResourceInput:
    name: str
    #: a region the fake cloud does not offer (e.g. "mars-1") makes creation fail for good
    region: str = "eu-west"
    size: ResourceSize = ResourceSize.SMALL
    owner: str = "nobody"
    #: seconds between health checks of the monitor started for the new resource
    monitor_interval_s: float = 30.0
    faults: FaultPlan = field(default_factory=FaultPlan)


@dataclass(frozen=True)
class CreateResourceOutput:
    resource_id: UUID
    name: str
    vm_id: str
    ip_address: str
    hourly_price: Decimal
    #: attempts the create call needed (1 when it succeeded at once)
    create_attempts: int
    #: False when the best-effort status update failed (creation still succeeded)
    status_recorded: bool
    #: instance id of the detached health monitor started for the resource
    monitor_instance_id: str


@dataclass(frozen=True)
class CleanupInput:
    name: str
    reason: str = ""


@dataclass(frozen=True)
class CleanupOutput:
    name: str
    #: False when there was no VM to delete (creation never got that far)
    vm_deleted: bool
    reservation_released: bool


@dataclass(frozen=True)
class HealthMonitorInput:
    name: str
    interval_s: float = 30.0
    #: checks done by earlier executions (carried across continue-as-new)
    checks: int = 0
    #: consecutive unhealthy checks so far
    unhealthy_streak: int = 0


@dataclass(frozen=True)
class HealthMonitorOutput:
    name: str
    checks: int
    #: what ended the monitor: the "InstanceDeleted" event or "resource-gone"
    stopped_by: str
    #: the execution that ended (1 + the number of continue-as-new)
    execution_id: int


@dataclass(frozen=True)
class ApplyConfigInput:
    name: str
    settings: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ApplyConfigOutput:
    name: str
    #: the orchestration version that ran
    version: str
    #: the steps taken, in order
    steps: list[str]
    #: settings whose value changed (empty when re-applied)
    changed: list[str]
    snapshot_id: str | None = None

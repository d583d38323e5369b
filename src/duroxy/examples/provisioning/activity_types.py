"""Activity inputs and outputs: the contract between orchestrations and activities.

Each output says whether the work had already been done (``already_*``), because
every activity is idempotent: it may run more than once (a worker crash after the
work but before the result was stored), and the second run must find the work done
and report it rather than do it again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from .types import FaultPlan, ResourceSize

__all__ = [
    "ApplySettingsInput",
    "ApplySettingsOutput",
    "CreateVmInput",
    "CreateVmOutput",
    "DeleteVmInput",
    "DeleteVmOutput",
    "HealthCheckInput",
    "HealthCheckOutput",
    "RecordHealthInput",
    "ReleaseReservationInput",
    "ReleaseReservationOutput",
    "ReserveInput",
    "ReserveOutput",
    "ResourceStatus",
    "SnapshotDiskInput",
    "SnapshotDiskOutput",
    "UpdateStatusInput",
    "ValidateConfigInput",
    "ValidateConfigOutput",
]


class ResourceStatus(enum.StrEnum):
    RESERVED = "reserved"
    RUNNING = "running"
    FAILED = "failed"


# ------------------------------------------------------------------ cms
@dataclass(frozen=True)
class ReserveInput:
    name: str
    region: str
    size: ResourceSize
    owner: str
    faults: FaultPlan = field(default_factory=FaultPlan)


@dataclass(frozen=True)
class ReserveOutput:
    resource_id: UUID
    already_reserved: bool


@dataclass(frozen=True)
class UpdateStatusInput:
    name: str
    status: ResourceStatus
    detail: str = ""


@dataclass(frozen=True)
class ReleaseReservationInput:
    name: str


@dataclass(frozen=True)
class ReleaseReservationOutput:
    #: False when there was nothing (left) to release
    released: bool


@dataclass(frozen=True)
class RecordHealthInput:
    name: str
    #: 1-based number of the check; (name, check_number) identifies the record
    check_number: int
    healthy: bool
    checked_at: datetime


@dataclass(frozen=True)
class ValidateConfigInput:
    name: str
    settings: dict[str, str]


@dataclass(frozen=True)
class ValidateConfigOutput:
    valid: bool
    problems: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ cloud
@dataclass(frozen=True)
class CreateVmInput:
    resource_id: UUID
    name: str
    region: str
    size: ResourceSize


@dataclass(frozen=True)
class CreateVmOutput:
    vm_id: str
    ip_address: str
    hourly_price: Decimal
    #: the attempt that produced the VM (ActivityContext.attempt)
    attempt: int
    already_existed: bool


@dataclass(frozen=True)
class DeleteVmInput:
    name: str


@dataclass(frozen=True)
class DeleteVmOutput:
    #: False when there was no VM
    deleted: bool


@dataclass(frozen=True)
class HealthCheckInput:
    name: str


@dataclass(frozen=True)
class HealthCheckOutput:
    name: str
    exists: bool
    healthy: bool
    checked_at: datetime


@dataclass(frozen=True)
class SnapshotDiskInput:
    name: str
    #: idempotency key: the same key always names the same snapshot
    request_id: str


@dataclass(frozen=True)
class SnapshotDiskOutput:
    snapshot_id: str
    already_existed: bool


@dataclass(frozen=True)
class ApplySettingsInput:
    name: str
    settings: dict[str, str]


@dataclass(frozen=True)
class ApplySettingsOutput:
    #: keys whose value changed; empty when the settings were already in place
    changed: list[str]

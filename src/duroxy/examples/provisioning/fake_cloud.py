"""An in-process stand-in for a cloud provider and the control plane's metadata store.

All state lives in one module-level :data:`WORLD`, guarded by a lock so that plain
``def`` activities (run on the runtime's thread pool) and ``async def`` activities
see consistent data. It is per process: the example works with one worker process
(``duroxy demo``, or one ``duroxy worker``); several worker processes would each see
their own fake cloud. Activities do the check-then-act inside one
``with WORLD.transaction()`` block, which is what makes them idempotent.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from .types import FaultPlan

__all__ = [
    "REGIONS",
    "WORLD",
    "CapacityUnavailable",
    "CloudError",
    "FakeCloud",
    "HealthRecord",
    "MetadataStoreUnavailable",
    "RegionUnavailable",
    "ResourceRecord",
    "VirtualMachine",
]

#: Regions the fake cloud offers, with the hourly price of a small VM.
REGIONS: dict[str, Decimal] = {
    "eu-west": Decimal("0.0420"),
    "us-east": Decimal("0.0380"),
    "ap-south": Decimal("0.0510"),
}
SIZE_FACTOR: dict[str, int] = {"small": 1, "medium": 2, "large": 4}


@dataclass
class VirtualMachine:
    vm_id: str
    name: str
    region: str
    size: str
    ip_address: str
    hourly_price: Decimal
    healthy: bool = True


@dataclass
class ResourceRecord:
    """A row of the control-plane metadata store (the "cms")."""

    resource_id: UUID
    name: str
    region: str
    size: str
    owner: str
    status: str
    status_log: list[str] = field(default_factory=list)


@dataclass
class HealthRecord:
    healthy: bool
    checked_at: datetime


class FakeCloud:
    """The fake world: VMs, metadata records, health log, snapshots, settings."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Forget everything (tests and the demo start from an empty world)."""
        with self._lock:
            self.vms: dict[str, VirtualMachine] = {}
            self.records: dict[str, ResourceRecord] = {}
            self.faults: dict[str, FaultPlan] = {}
            #: create-VM calls that reached the cloud, by resource name
            self.create_calls: collections.Counter[str] = collections.Counter()
            self.health_log: dict[tuple[str, int], HealthRecord] = {}
            self.snapshots: dict[str, str] = {}  # request id -> snapshot id
            self.settings: dict[str, dict[str, str]] = {}
            self._next_ip = 10

    @contextmanager
    def transaction(self) -> Iterator[FakeCloud]:
        """Hold the world's lock; never ``await`` inside the block."""
        with self._lock:
            yield self

    def allocate_ip(self) -> str:
        with self._lock:
            self._next_ip += 1
            return f"10.0.{self._next_ip // 256}.{self._next_ip % 256}"



class CloudError(Exception):
    """Base of the fake cloud's errors."""


class CapacityUnavailable(CloudError):
    """Transient: the region has no capacity right now; a retry may succeed."""


class RegionUnavailable(CloudError):
    """Permanent: the region is not offered; retrying cannot help."""


class MetadataStoreUnavailable(CloudError):
    """The metadata store rejected a write."""


WORLD = FakeCloud()

"""Reserve a resource name in the metadata store."""

from __future__ import annotations

import uuid

from duroxy import ActivityContext

from ...activity_types import ReserveInput, ReserveOutput, ResourceStatus
from ...fake_cloud import WORLD, ResourceRecord


async def reserve_resource(ctx: ActivityContext, input: ReserveInput) -> ReserveOutput:
    """Create the resource's record, or return the one a previous run created.

    The resource id is random, which is fine in an activity (activities need not be
    deterministic); idempotency comes from looking the name up first.
    """
    with WORLD.transaction() as db:
        existing = db.records.get(input.name)
        if existing is not None:
            ctx.trace_info(f"{input.name!r} is already reserved as {existing.resource_id}")
            return ReserveOutput(resource_id=existing.resource_id, already_reserved=True)
        record = ResourceRecord(
            resource_id=uuid.uuid4(), name=input.name, region=input.region,
            size=input.size.value, owner=input.owner, status=ResourceStatus.RESERVED.value,
            status_log=[ResourceStatus.RESERVED.value])
        db.records[input.name] = record
        db.faults[input.name] = input.faults
    ctx.trace_info(f"reserved {input.name!r} as {record.resource_id}")
    return ReserveOutput(resource_id=record.resource_id, already_reserved=False)

"""Record a resource's status in the metadata store."""

from __future__ import annotations

from duroxy import ActivityContext

from ...activity_types import UpdateStatusInput
from ...fake_cloud import WORLD, MetadataStoreUnavailable


async def update_status(ctx: ActivityContext, input: UpdateStatusInput) -> bool:
    """Set the status; returns False when it already was that status (nothing to do)."""
    with WORLD.transaction() as db:
        faults = db.faults.get(input.name)
        if faults is not None and faults.status_store_down:
            raise MetadataStoreUnavailable(
                f"metadata store rejected the status update for {input.name!r}")
        record = db.records.get(input.name)
        if record is None:
            raise LookupError(f"no metadata record for {input.name!r}")
        if record.status == input.status.value:
            return False
        record.status = input.status.value
        record.status_log.append(input.status.value)
    ctx.trace_info(f"{input.name!r} is now {input.status.value}")
    return True

"""Drop a resource's reservation from the metadata store."""

from __future__ import annotations

from duroxy import ActivityContext

from ...activity_types import ReleaseReservationInput, ReleaseReservationOutput
from ...fake_cloud import WORLD


async def release_reservation(ctx: ActivityContext, input: ReleaseReservationInput
                              ) -> ReleaseReservationOutput:
    """Remove the record; reports ``released=False`` when it is already gone."""
    with WORLD.transaction() as db:
        record = db.records.pop(input.name, None)
        db.faults.pop(input.name, None)
    if record is None:
        ctx.trace_info(f"no reservation left for {input.name!r}")
        return ReleaseReservationOutput(released=False)
    ctx.trace_info(f"released the reservation of {input.name!r}")
    return ReleaseReservationOutput(released=True)

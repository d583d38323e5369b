"""Snapshot a resource's disk before a risky change."""

from __future__ import annotations

import uuid

from duroxy import ActivityContext

from ...activity_types import SnapshotDiskInput, SnapshotDiskOutput
from ...fake_cloud import WORLD


async def snapshot_disk(ctx: ActivityContext, input: SnapshotDiskInput) -> SnapshotDiskOutput:
    """Take a snapshot, once per ``request_id``: the orchestration passes its own
    instance id, so a re-run finds the snapshot it took before."""
    with WORLD.transaction() as db:
        existing = db.snapshots.get(input.request_id)
        if existing is not None:
            return SnapshotDiskOutput(snapshot_id=existing, already_existed=True)
        if input.name not in db.vms:
            raise LookupError(f"no VM for {input.name!r} to snapshot")
        snapshot_id = f"snap-{uuid.uuid4().hex[:12]}"
        db.snapshots[input.request_id] = snapshot_id
    ctx.trace_info(f"took snapshot {snapshot_id} of {input.name!r}")
    return SnapshotDiskOutput(snapshot_id=snapshot_id, already_existed=False)

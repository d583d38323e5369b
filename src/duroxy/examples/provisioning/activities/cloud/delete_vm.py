"""Delete a resource's VM."""

from __future__ import annotations

from duroxy import ActivityContext

from ...activity_types import DeleteVmInput, DeleteVmOutput
from ...fake_cloud import WORLD


async def delete_vm(ctx: ActivityContext, input: DeleteVmInput) -> DeleteVmOutput:
    """Delete the VM; ``deleted=False`` when there is none (never created, or a
    previous run already deleted it)."""
    with WORLD.transaction() as db:
        vm = db.vms.pop(input.name, None)
    if vm is None:
        ctx.trace_info(f"no VM to delete for {input.name!r}")
        return DeleteVmOutput(deleted=False)
    ctx.trace_info(f"deleted VM {vm.vm_id} of {input.name!r}")
    return DeleteVmOutput(deleted=True)

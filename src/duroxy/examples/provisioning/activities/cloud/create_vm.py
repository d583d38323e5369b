"""Create the VM that backs a resource."""

from __future__ import annotations

import asyncio
import uuid

from duroxy import ActivityContext

from ...activity_types import CreateVmInput, CreateVmOutput
from ...fake_cloud import (
    REGIONS,
    SIZE_FACTOR,
    WORLD,
    CapacityUnavailable,
    RegionUnavailable,
    VirtualMachine,
)

#: Simulated provisioning latency.
LATENCY_S = 0.01


async def create_vm(ctx: ActivityContext, input: CreateVmInput) -> CreateVmOutput:
    """Create the VM unless one exists for the name already (then report it).

    Fails with :class:`RegionUnavailable` for a region the cloud does not offer (the
    failure path) and with :class:`CapacityUnavailable` for the first
    ``faults.transient_create_failures`` calls (the retry path).
    """
    await asyncio.sleep(LATENCY_S)  # the cloud API call; an activity may do real I/O
    with WORLD.transaction() as db:
        vm = db.vms.get(input.name)
        if vm is not None:
            ctx.trace_info(f"VM {vm.vm_id} for {input.name!r} already exists")
            return _output(vm, ctx.attempt, already_existed=True)
        price = REGIONS.get(input.region)
        if price is None:
            raise RegionUnavailable(
                f"region {input.region!r} is not offered (regions: {', '.join(REGIONS)})")
        db.create_calls[input.name] += 1
        faults = db.faults.get(input.name)
        if faults is not None and db.create_calls[input.name] <= faults.transient_create_failures:
            raise CapacityUnavailable(
                f"no capacity for {input.size.value} VMs in {input.region} right now "
                f"(attempt {ctx.attempt})")
        vm = VirtualMachine(
            vm_id=f"vm-{uuid.uuid4().hex[:12]}", name=input.name, region=input.region,
            size=input.size.value, ip_address=db.allocate_ip(),
            hourly_price=price * SIZE_FACTOR[input.size.value])
        db.vms[input.name] = vm
    ctx.trace_info(f"created VM {vm.vm_id} for {input.name!r} on attempt {ctx.attempt}")
    return _output(vm, ctx.attempt, already_existed=False)


def _output(vm: VirtualMachine, attempt: int, *, already_existed: bool) -> CreateVmOutput:
    return CreateVmOutput(vm_id=vm.vm_id, ip_address=vm.ip_address,
                          hourly_price=vm.hourly_price, attempt=attempt,
                          already_existed=already_existed)

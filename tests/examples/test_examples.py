"""The bundled provisioning example: its types round-trip, each pattern runs end to end
on SQLite (in the time-skipping test environment: its timers and backoffs take no real
time), and each activity is idempotent."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import inspect
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from duroxy import (
    ActivityContext,
    Client,
    InstanceInfo,
    InstanceNotFound,
    OrchestrationState,
    codec,
)
from duroxy.examples.provisioning import activity_types, names, registry, types
from duroxy.examples.provisioning.activities import cloud, cms
from duroxy.examples.provisioning.activity_types import (
    ApplySettingsInput,
    ApplySettingsOutput,
    CreateVmInput,
    CreateVmOutput,
    DeleteVmInput,
    DeleteVmOutput,
    HealthCheckInput,
    HealthCheckOutput,
    RecordHealthInput,
    ReleaseReservationInput,
    ReleaseReservationOutput,
    ReserveInput,
    ReserveOutput,
    ResourceStatus,
    SnapshotDiskInput,
    SnapshotDiskOutput,
    UpdateStatusInput,
    ValidateConfigInput,
    ValidateConfigOutput,
)
from duroxy.examples.provisioning.fake_cloud import WORLD, VirtualMachine
from duroxy.examples.provisioning.types import (
    ApplyConfigInput,
    ApplyConfigOutput,
    CleanupInput,
    CleanupOutput,
    CreateResourceInput,
    CreateResourceOutput,
    FaultPlan,
    HealthMonitorInput,
    HealthMonitorOutput,
    ResourceSize,
)
from duroxy.testing import OrchestrationEnvironment

ORCH = names.orchestrations
RID = UUID("12345678-1234-5678-1234-567812345678")
NOW = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)

# ====================================================================== serialization
SAMPLES: list[Any] = [
    ResourceSize.LARGE,
    FaultPlan(transient_create_failures=2, status_store_down=True),
    CreateResourceInput(name="db-1", region="us-east", size=ResourceSize.MEDIUM, owner="ann",
                        monitor_interval_s=0.5, faults=FaultPlan(1, False)),
    CreateResourceOutput(resource_id=RID, name="db-1", vm_id="vm-1", ip_address="10.0.0.1",
                         hourly_price=Decimal("0.0840"), create_attempts=3,
                         status_recorded=False, monitor_instance_id="monitor::db-1"),
    CleanupInput(name="db-2", reason="région indisponible ✗"),
    CleanupOutput(name="db-2", vm_deleted=False, reservation_released=True),
    HealthMonitorInput(name="db-1", interval_s=0.1, checks=4, unhealthy_streak=1),
    HealthMonitorOutput(name="db-1", checks=5, stopped_by="InstanceDeleted", execution_id=5),
    ApplyConfigInput(name="db-1", settings={"max_connections": "200", "tz": "UTC"}),
    ApplyConfigOutput(name="db-1", version="1.0.2", steps=["validate", "snapshot", "apply"],
                      changed=["tz"], snapshot_id="snap-1"),
    ApplyConfigOutput(name="db-1", version="1.0.0", steps=["apply"], changed=[]),
    ResourceStatus.RUNNING,
    ReserveInput(name="db-1", region="eu-west", size=ResourceSize.SMALL, owner="ann",
                 faults=FaultPlan(0, True)),
    ReserveOutput(resource_id=RID, already_reserved=True),
    UpdateStatusInput(name="db-1", status=ResourceStatus.FAILED, detail="why"),
    ReleaseReservationInput(name="db-1"),
    ReleaseReservationOutput(released=False),
    RecordHealthInput(name="db-1", check_number=7, healthy=False, checked_at=NOW),
    ValidateConfigInput(name="db-1", settings={"a": "b"}),
    ValidateConfigOutput(valid=False, problems=["bad setting name 'A'"]),
    CreateVmInput(resource_id=RID, name="db-1", region="eu-west", size=ResourceSize.LARGE),
    CreateVmOutput(vm_id="vm-1", ip_address="10.0.0.1", hourly_price=Decimal("0.1680"),
                   attempt=2, already_existed=False),
    DeleteVmInput(name="db-1"),
    DeleteVmOutput(deleted=True),
    HealthCheckInput(name="db-1"),
    HealthCheckOutput(name="db-1", exists=True, healthy=True, checked_at=NOW),
    SnapshotDiskInput(name="db-1", request_id="apply-config-1"),
    SnapshotDiskOutput(snapshot_id="snap-1", already_existed=True),
    ApplySettingsInput(name="db-1", settings={}),
    ApplySettingsOutput(changed=["a", "b"]),
]


@pytest.mark.parametrize("value", SAMPLES, ids=lambda v: type(v).__name__)
def test_type_round_trips(value: Any) -> None:
    text = codec.encode(value)
    back = codec.decode(text, type(value))
    assert back == value and type(back) is type(value)
    assert codec.encode(back) == text  # encoding is stable


def test_every_type_has_a_sample() -> None:
    def public_types(module: Any) -> set[type]:
        return {obj for name in module.__all__ if inspect.isclass(obj := getattr(module, name))
                and (dataclasses.is_dataclass(obj) or issubclass(obj, enum.Enum))}

    covered = {type(v) for v in SAMPLES}
    assert public_types(types) | public_types(activity_types) <= covered


def test_decoded_fields_have_their_annotated_types() -> None:
    out = codec.decode(codec.encode(SAMPLES[3]), CreateResourceOutput)
    assert isinstance(out.resource_id, UUID) and isinstance(out.hourly_price, Decimal)
    inp = codec.decode('{"name": "x", "size": "large", "faults": {"status_store_down": true}}',
                       CreateResourceInput)
    assert inp.size is ResourceSize.LARGE and inp.faults == FaultPlan(0, True)
    assert inp.region == "eu-west"  # defaults fill what the JSON leaves out


def test_names_follow_the_convention() -> None:
    for name in registry.orchestrations.names():
        assert name.startswith("provisioning::orchestration::")
    for name in registry.activities.names():
        assert name.startswith("provisioning::activity::")
    assert registry.orchestrations.versions(ORCH.APPLY_CONFIG) == ["1.0.0", "1.0.1", "1.0.2"]


# ====================================================================== end to end
# On an in-memory SQLite store, on a virtual clock: timers, retry backoffs and monitor
# intervals take no real time (see duroxy.testing.OrchestrationEnvironment).
@pytest.fixture
async def env() -> AsyncIterator[OrchestrationEnvironment]:
    WORLD.reset()
    async with OrchestrationEnvironment(registry.activities, registry.orchestrations,
                                        store="sqlite") as environment:
        yield environment
    WORLD.reset()


@pytest.fixture
def client(env: OrchestrationEnvironment) -> Client:
    return env.client


async def run(client: Client, iid: str, name: str, data: Any, version: str | None = None
              ) -> InstanceInfo:
    if version:
        await client.start_orchestration_versioned(iid, name, version, data)
    else:
        await client.start_orchestration(iid, name, data)
    await client.wait_for_orchestration(iid, 15)
    return await client.get_instance_info(iid)


async def kinds(client: Client, iid: str, execution_id: int | None = None) -> list[str]:
    return [e.kind for e in await client.read_history(iid, execution_id)]


async def wait_execution(client: Client, iid: str, execution_id: int) -> None:
    for _ in range(500):
        try:
            if (await client.get_instance_info(iid)).execution_id >= execution_id:
                return
        except InstanceNotFound:
            pass
        await asyncio.sleep(0.01)
    raise AssertionError(f"{iid} never reached execution {execution_id}")


async def stop_monitor(client: Client, iid: str) -> InstanceInfo:
    await client.raise_event(iid, names.events.INSTANCE_DELETED)
    await client.wait_for_orchestration(iid, 15)
    return await client.get_instance_info(iid)


async def test_create_resource_retries_then_succeeds(client: Client) -> None:
    info = await run(client, "c1", ORCH.CREATE_RESOURCE, CreateResourceInput(
        name="db-1", region="us-east", size=ResourceSize.LARGE, monitor_interval_s=30,
        faults=FaultPlan(transient_create_failures=2)))
    assert info.state is OrchestrationState.COMPLETED, info.error
    out = codec.from_json_value(info.output, CreateResourceOutput)
    assert out.create_attempts == 3 and out.status_recorded
    assert out.hourly_price == Decimal("0.1520")  # us-east small price x4 for large
    assert out.monitor_instance_id == names.monitor_instance_id("db-1")
    assert WORLD.create_calls["db-1"] == 3
    assert WORLD.vms["db-1"].vm_id == out.vm_id
    assert WORLD.records["db-1"].status_log == ["reserved", "running"]
    assert info.custom_status == {"phase": "running"}
    history = await client.read_history("c1")
    failed = [e for e in history if e.kind == "ActivityFailed"]
    assert [e.error_type for e in failed] == ["CapacityUnavailable"] * 2  # type: ignore[attr-defined]
    # Exponential backoff: the waits after attempts 1 and 2 are 50 ms and 100 ms.
    delays = [e.fire_at - e.ts for e in history if e.kind == "TimerCreated"]  # type: ignore[attr-defined]
    assert delays == [50, 100]
    assert [e.kind for e in history].count("DetachedOrchestrationScheduled") == 1
    await stop_monitor(client, out.monitor_instance_id)


async def test_best_effort_status_update_logs_and_continues(
        client: Client, caplog: pytest.LogCaptureFixture) -> None:
    info = await run(client, "c2", ORCH.CREATE_RESOURCE, CreateResourceInput(
        name="db-2", faults=FaultPlan(status_store_down=True)))
    assert info.state is OrchestrationState.COMPLETED
    assert info.output["status_recorded"] is False and info.output["create_attempts"] == 1
    assert WORLD.records["db-2"].status == "reserved"  # the update never went through
    assert "db-2" in WORLD.vms
    assert any("could not record status 'running'" in r.getMessage() for r in caplog.records)
    history = await client.read_history("c2")
    failed = [e for e in history if e.kind == "ActivityFailed"]
    assert [e.error_type for e in failed] == ["MetadataStoreUnavailable"]  # type: ignore[attr-defined]
    await stop_monitor(client, info.output["monitor_instance_id"])


async def test_failure_runs_cleanup_sub_orchestration(client: Client) -> None:
    info = await run(client, "c3", ORCH.CREATE_RESOURCE,
                     CreateResourceInput(name="db-3", region="mars-1"))
    assert info.state is OrchestrationState.FAILED
    assert info.error is not None and info.error.error_type == "ActivityFailed"
    assert "RegionUnavailable" in str(info.error) and "mars-1" in str(info.error)
    assert info.custom_status == {"phase": "failed"}
    # The cleanup child ran and undid the reservation; nothing is left in the fake world.
    child = await client.get_instance_info("c3::cleanup")
    assert child.state is OrchestrationState.COMPLETED and child.parent_instance_id == "c3"
    assert child.output == {"name": "db-3", "vm_deleted": False, "reservation_released": True}
    assert "db-3" not in WORLD.records and "db-3" not in WORLD.vms
    assert WORLD.create_calls["db-3"] == 0  # rejected before any capacity was used
    k = await kinds(client, "c3")
    assert k.count("ActivityFailed") == 4 and k.count("TimerCreated") == 3
    assert k[-4:] == ["SubOrchestrationScheduled", "SubOrchestrationCompleted",
                      "CustomStatusSet", "OrchestrationFailed"]
    assert await kinds(client, "c3::cleanup") == [
        "OrchestrationStarted"] + ["ActivityScheduled", "ActivityCompleted"] * 3 + [
        "OrchestrationCompleted"]
    # No monitor for a resource that was never created.
    status = await client.get_orchestration_status(names.monitor_instance_id("db-3"))
    assert status.state is OrchestrationState.NOT_FOUND


async def test_cleanup_deletes_an_existing_vm(client: Client) -> None:
    WORLD.vms["db-4"] = VirtualMachine("vm-4", "db-4", "eu-west", "small", "10.0.0.4",
                                       Decimal("0.042"))
    info = await run(client, "cl4", ORCH.CLEANUP_RESOURCE, CleanupInput(name="db-4", reason="x"))
    assert info.output == {"name": "db-4", "vm_deleted": True, "reservation_released": False}
    assert "db-4" not in WORLD.vms


async def test_health_monitor_continues_as_new_until_deleted(
        env: OrchestrationEnvironment, client: Client) -> None:
    WORLD.vms["db-5"] = VirtualMachine("vm-5", "db-5", "eu-west", "small", "10.0.0.5",
                                       Decimal("0.042"))
    iid = "monitor-5"
    started = env.now()
    with env.auto_time_skipping_disabled():
        await client.start_orchestration(iid, ORCH.HEALTH_MONITOR,
                                         HealthMonitorInput(name="db-5", interval_s=30))
        # checks at 0, 30 and 60 s: one per execution
        await env.sleep(timedelta(seconds=75))
        info = await stop_monitor(client, iid)
    assert info.state is OrchestrationState.COMPLETED
    out = codec.from_json_value(info.output, HealthMonitorOutput)
    assert out.stopped_by == "InstanceDeleted"
    assert out.execution_id == info.execution_id == 3
    assert out.checks == out.execution_id  # one check per execution
    assert await client.list_executions(iid) == [1, 2, 3]
    first = await kinds(client, iid, 1)
    assert first[-2:] == ["TimerFired", "OrchestrationContinuedAsNew"]
    last = await kinds(client, iid)
    assert "EventRaised" in last and last[-1] == "OrchestrationCompleted"
    assert "OrchestrationContinuedAsNew" not in last
    assert len(last) <= 12  # history stays one check long
    assert sorted(n for (name, n) in WORLD.health_log if name == "db-5") == [1, 2, 3]
    assert info.custom_status == {"checks": 3, "healthy": True}
    assert env.now() - started == timedelta(seconds=75)


async def test_health_monitor_stops_when_resource_is_gone(client: Client) -> None:
    info = await run(client, "monitor-6", ORCH.HEALTH_MONITOR, HealthMonitorInput(name="db-6"))
    assert info.output == {"name": "db-6", "checks": 1, "stopped_by": "resource-gone",
                           "execution_id": 1}


async def test_detached_monitor_outlives_its_creator(client: Client) -> None:
    info = await run(client, "c7", ORCH.CREATE_RESOURCE,
                     CreateResourceInput(name="db-7", monitor_interval_s=3600))
    assert info.state is OrchestrationState.COMPLETED
    monitor = info.output["monitor_instance_id"]
    await wait_execution(client, monitor, 2)
    m = await client.get_instance_info(monitor)
    assert m.parent_instance_id is None  # detached: no parent waits for it
    assert m.state is OrchestrationState.RUNNING
    done = await stop_monitor(client, monitor)
    assert done.state is OrchestrationState.COMPLETED
    assert done.output["stopped_by"] == "InstanceDeleted"


def _vm(name: str) -> None:
    WORLD.vms[name] = VirtualMachine(f"vm-{name}", name, "eu-west", "small", "10.0.0.8",
                                     Decimal("0.042"))


@pytest.mark.parametrize(("version", "steps"), [
    ("1.0.0", ["apply"]),
    ("1.0.1", ["validate", "apply"]),
    ("1.0.2", ["validate", "snapshot", "apply"]),
    (None, ["validate", "snapshot", "apply"]),  # no version: the latest
])
async def test_each_version_runs_its_own_code(client: Client, version: str | None,
                                              steps: list[str]) -> None:
    info_in = await run(client, "c8", ORCH.CREATE_RESOURCE, CreateResourceInput(name="db-8"))
    await stop_monitor(client, info_in.output["monitor_instance_id"])
    info = await run(client, "a8", ORCH.APPLY_CONFIG,
                     ApplyConfigInput(name="db-8", settings={"tz": "UTC"}), version)
    out = codec.from_json_value(info.output, ApplyConfigOutput)
    assert info.version == out.version == (version or "1.0.2")
    assert out.steps == steps and out.changed == ["tz"]
    assert (out.snapshot_id is not None) == ("snapshot" in steps)
    assert WORLD.settings["db-8"] == {"tz": "UTC"}


async def test_validation_in_later_versions_only(client: Client) -> None:
    _vm("db-9")
    bad = ApplyConfigInput(name="db-9", settings={"Bad Key": "v"})
    old = await run(client, "v0", ORCH.APPLY_CONFIG, bad, "1.0.0")
    assert old.state is OrchestrationState.COMPLETED  # 1.0.0 did not validate
    new = await run(client, "v1", ORCH.APPLY_CONFIG, bad, "1.0.1")
    assert new.state is OrchestrationState.FAILED and new.error is not None
    assert new.error.error_type == "ValueError" and "bad setting name" in new.error.message


# ====================================================================== idempotency
def actx(name: str = "activity", attempt: int = 1) -> ActivityContext:
    return ActivityContext(instance_id="i", execution_id=1, orchestration_name="o",
                           orchestration_version="1.0.0", activity_name=name,
                           attempt=attempt, worker_id="test")


@pytest.fixture
def world() -> Any:
    WORLD.reset()
    yield WORLD
    WORLD.reset()


async def test_reserve_twice_keeps_one_record(world: Any) -> None:
    inp = ReserveInput(name="r", region="eu-west", size=ResourceSize.SMALL, owner="o")
    first = await cms.reserve_resource(actx(), inp)
    second = await cms.reserve_resource(actx(), inp)
    assert (first.already_reserved, second.already_reserved) == (False, True)
    assert first.resource_id == second.resource_id and len(world.records) == 1


async def test_create_vm_twice_creates_one_vm(world: Any) -> None:
    inp = CreateVmInput(resource_id=RID, name="r", region="eu-west", size=ResourceSize.SMALL)
    first = await cloud.create_vm(actx(), inp)
    second = await cloud.create_vm(actx(attempt=2), inp)
    assert first.vm_id == second.vm_id and second.already_existed
    assert world.create_calls["r"] == 1 and len(world.vms) == 1


async def test_status_update_twice_logs_once(world: Any) -> None:
    await cms.reserve_resource(actx(), ReserveInput("r", "eu-west", ResourceSize.SMALL, "o"))
    inp = UpdateStatusInput(name="r", status=ResourceStatus.RUNNING)
    assert await cms.update_status(actx(), inp) is True
    assert await cms.update_status(actx(), inp) is False
    assert world.records["r"].status_log == ["reserved", "running"]


async def test_delete_and_release_twice(world: Any) -> None:
    _vm("r")
    await cms.reserve_resource(actx(), ReserveInput("r", "eu-west", ResourceSize.SMALL, "o"))
    assert (await cloud.delete_vm(actx(), DeleteVmInput("r"))).deleted
    assert not (await cloud.delete_vm(actx(), DeleteVmInput("r"))).deleted
    assert (await cms.release_reservation(actx(), ReleaseReservationInput("r"))).released
    assert not (await cms.release_reservation(actx(), ReleaseReservationInput("r"))).released
    assert not world.vms and not world.records


async def test_health_record_and_snapshot_and_settings_twice(world: Any) -> None:
    _vm("r")
    rec = RecordHealthInput(name="r", check_number=1, healthy=True, checked_at=NOW)
    assert cms.record_health(actx(), rec) is True
    assert cms.record_health(actx(), rec) is False
    assert len(world.health_log) == 1
    snap = SnapshotDiskInput(name="r", request_id="req-1")
    s1 = await cloud.snapshot_disk(actx(), snap)
    s2 = await cloud.snapshot_disk(actx(), snap)
    assert s1.snapshot_id == s2.snapshot_id and s2.already_existed and len(world.snapshots) == 1
    apply = ApplySettingsInput(name="r", settings={"a": "1", "b": "2"})
    assert (await cloud.apply_settings(actx(), apply)).changed == ["a", "b"]
    assert (await cloud.apply_settings(actx(), apply)).changed == []
    health = cloud.check_health(actx(), HealthCheckInput("r"))
    assert health.exists and health.healthy and health.checked_at.tzinfo is not None


async def test_validate_reports_every_problem(world: Any) -> None:
    out = await cms.validate_config(actx(), ValidateConfigInput("ghost", {"OK": ""}))
    assert not out.valid and len(out.problems) == 3


# ====================================================================== the README
def test_readme_quick_start_runs(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    match = re.search(r"## Quick start\n\n```python\n(.*?)```", readme, re.S)
    assert match, "README has no quick start block"
    assert len(match.group(1).splitlines()) <= 30
    script = tmp_path / "quickstart.py"
    script.write_text(match.group(1), encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"hello-[0-9a-f]{8} COMPLETED \['Hello, Ada!', 'Hello, Linus!'\]\n",
                        proc.stdout), proc.stdout
    assert (tmp_path / "quickstart.db").exists()


def test_readme_several_workers_block_runs(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    match = re.search(r"## Running several workers\n.*?```python\n(.*?)```", readme, re.S)
    assert match, "README's 'Running several workers' has no Python block"
    script = tmp_path / "workers.py"
    script.write_text(match.group(1), encoding="utf-8")
    for _ in range(2):  # a second run on the same store works as well
        proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == ("old True ('hello@1.0.0',)\n"
                               "new True ('hello@1.0.0', 'hello@2.0.0')\n"
                               "HELLO, ADA!\n"), proc.stdout
    assert (tmp_path / "workers.db").exists()

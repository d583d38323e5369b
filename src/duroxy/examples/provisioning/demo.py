"""``duroxy demo``: run the provisioning app on a throwaway SQLite store and show what
happened to each instance: its outcome, its log lines and its history as a timeline.

It runs, on one runtime in this process:

1. ``create-db-1``: create-resource that succeeds after two transient create failures
   (the retry with exponential backoff), with the metadata store "down" so that the
   best-effort status update fails, is logged, and creation carries on. On success it
   starts a detached health monitor, ``monitor::db-1``.
2. ``create-db-2``: create-resource in a region the fake cloud does not offer; every
   attempt fails, the cleanup sub-orchestration ``create-db-2::cleanup`` releases the
   reservation, and the instance ends FAILED with the cloud's error.
3. ``monitor::db-1``: the detached monitor loops with continue-as-new; once it has
   reached its third execution the demo raises "InstanceDeleted" and it stops.
4. ``apply-config-1.0.0`` .. ``-1.0.2``: each registered version of apply-config, started
   with ``start_orchestration_versioned``; each reports its version and steps.

The demo returns 0 only if every instance ended as expected.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any, TextIO

from duroxy import Client, InstanceInfo, InstanceNotFound, Runtime, RuntimeOptions
from duroxy._render import event_json, format_timeline, instance_json
from duroxy.providers.sqlite import SqliteProvider

from . import registry
from .fake_cloud import WORLD
from .names import events, monitor_instance_id, orchestrations
from .types import ApplyConfigInput, CreateResourceInput, FaultPlan, ResourceSize

__all__ = ["run_demo"]

#: Seconds any single instance may take in the demo before it counts as stuck.
WAIT_S = 20.0
#: Executions the health monitor runs (continue-as-new) before the demo deletes it.
MONITOR_EXECUTIONS = 3


@dataclasses.dataclass
class Expectation:
    instance_id: str
    description: str
    #: returns the problems found with the finished instance (empty: as expected)
    check: Callable[[InstanceInfo], list[str]]


def _expect(state: str, **output: Any) -> Callable[[InstanceInfo], list[str]]:
    def check(info: InstanceInfo) -> list[str]:
        problems = [] if info.state.value == state else [
            f"expected {state}, got {info.state.value}"]
        got = info.output if isinstance(info.output, dict) else {}
        for key, want in output.items():
            value = got.get(key)
            ok = want(value) if callable(want) else value == want
            if not ok:
                problems.append(f"output.{key} is {value!r}")
        return problems
    return check


def _expect_failed(*fragments: str) -> Callable[[InstanceInfo], list[str]]:
    def check(info: InstanceInfo) -> list[str]:
        if info.state.value != "FAILED":
            return [f"expected FAILED, got {info.state.value}"]
        text = str(info.error)
        return [f"error lacks {f!r}" for f in fragments if f not in text]
    return check


class _LogCollector(logging.Handler):
    """Keeps the trace lines of orchestrations and activities, by instance."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: dict[str, list[str]] = {}
        self.unexpected: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        iid = getattr(record, "instance_id", None)
        if iid is not None:
            self.lines.setdefault(iid, []).append(
                f"{record.levelname.lower():<7} {record.getMessage()}")
        elif record.exc_info:
            self.unexpected.append(self.format(record))


async def _wait_for_execution(client: Client, instance_id: str, execution_id: int) -> None:
    """Wait until the (continue-as-new) instance has reached ``execution_id``."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(InstanceNotFound):
            info = await client.get_instance_info(instance_id)
            if info.execution_id >= execution_id or info.state.is_terminal:
                return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{instance_id} did not reach execution {execution_id} in {WAIT_S:g} s")


async def _run_scenarios(client: Client) -> list[Expectation]:
    o = orchestrations
    await client.start_orchestration("create-db-1", o.CREATE_RESOURCE, CreateResourceInput(
        name="db-1", region="eu-west", size=ResourceSize.MEDIUM, owner="demo",
        monitor_interval_s=0.1,
        faults=FaultPlan(transient_create_failures=2, status_store_down=True)))
    await client.start_orchestration("create-db-2", o.CREATE_RESOURCE, CreateResourceInput(
        name="db-2", region="mars-1", owner="demo"))
    await client.wait_for_orchestration("create-db-1", WAIT_S)

    # One after the other, so that the first applies the settings and the later ones
    # find them in place (changed == []).
    settings = {"max_connections": "200", "maintenance_window": "sun-02:00"}
    versions = registry.orchestrations.versions(o.APPLY_CONFIG)
    for version in versions:
        await client.start_orchestration_versioned(
            f"apply-config-{version}", o.APPLY_CONFIG, version,
            ApplyConfigInput(name="db-1", settings=settings))
        await client.wait_for_orchestration(f"apply-config-{version}", WAIT_S)

    monitor = monitor_instance_id("db-1")
    await _wait_for_execution(client, monitor, MONITOR_EXECUTIONS)
    await client.raise_event(monitor, events.INSTANCE_DELETED, {"by": "duroxy demo"})

    steps = {"1.0.0": ["apply"], "1.0.1": ["validate", "apply"],
             "1.0.2": ["validate", "snapshot", "apply"]}
    expectations = [
        Expectation("create-db-1", "create-resource: retried create, best-effort status, "
                    "detached monitor",
                    _expect("COMPLETED", create_attempts=3, status_recorded=False,
                            monitor_instance_id=monitor)),
        Expectation("create-db-2", "create-resource in an unknown region: fails after "
                    "cleanup", _expect_failed("RegionUnavailable", "mars-1")),
        Expectation("create-db-2::cleanup", "cleanup sub-orchestration",
                    _expect("COMPLETED", vm_deleted=False, reservation_released=True)),
        Expectation(monitor, "detached health monitor: continue-as-new until "
                    "InstanceDeleted",
                    _expect("COMPLETED", stopped_by=events.INSTANCE_DELETED,
                            execution_id=lambda v: isinstance(v, int)
                            and v >= MONITOR_EXECUTIONS)),
    ]
    for version in versions:
        expectations.append(Expectation(
            f"apply-config-{version}", f"apply-config pinned to version {version}",
            _expect("COMPLETED", version=version, steps=steps.get(version))))
    for exp in expectations:
        await client.wait_for_orchestration(exp.instance_id, WAIT_S)
    return expectations


async def run_demo(*, json_output: bool = False, keep: str | None = None,
                   out: TextIO | None = None) -> int:
    """Run the demo; returns the exit code (0: every instance ended as expected)."""
    out = out or sys.stdout
    WORLD.reset()
    tmpdir = None if keep else tempfile.mkdtemp(prefix="duroxy-demo-")
    path = keep or os.path.join(tmpdir or ".", "demo.db")
    if keep and os.path.exists(keep):
        print(f"duroxy: error: {keep!r} exists; --keep wants a new file", file=sys.stderr)
        return 2
    collector = _LogCollector()
    duroxy_logger = logging.getLogger("duroxy")
    old_level = duroxy_logger.level
    duroxy_logger.addHandler(collector)
    duroxy_logger.setLevel(logging.INFO)
    provider = SqliteProvider(path)
    started = time.monotonic()
    try:
        client = Client(provider)
        async with await Runtime.start(provider, registry.activities,
                                       registry.orchestrations, RuntimeOptions()):
            expectations = await _run_scenarios(client)
        report = [await _report(client, exp, collector) for exp in expectations]
    finally:
        duroxy_logger.removeHandler(collector)
        duroxy_logger.setLevel(old_level)
        await provider.close()
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    ok = all(r["as_expected"] for r in report) and not collector.unexpected
    if json_output:
        for r in report:
            del r["timeline"]
        print(json.dumps({"ok": ok, "elapsed_s": round(elapsed, 3), "store": keep,
                          "instances": report, "unexpected_errors": collector.unexpected},
                         indent=2, ensure_ascii=False, default=str), file=out)
    else:
        _print_report(report, collector, out)
        verdict = "every instance ended as expected" if ok else "SOME INSTANCES DID NOT"
        print(f"demo finished in {elapsed:.1f}s: {verdict}", file=out)
        if keep:
            print(f"store kept: duroxy --store sqlite:///{keep} list", file=out)
    return 0 if ok else 1


async def _report(client: Client, exp: Expectation, collector: _LogCollector
                  ) -> dict[str, Any]:
    info = await client.get_instance_info(exp.instance_id)
    history = await client.read_history(exp.instance_id)
    problems = exp.check(info)
    return {
        **instance_json(info),
        "description": exp.description,
        "as_expected": not problems,
        "problems": problems,
        "log": collector.lines.get(exp.instance_id, []),
        "history": [event_json(e) for e in history],
        "timeline": format_timeline(history, width=48),
    }


def _print_report(report: list[dict[str, Any]], collector: _LogCollector, out: TextIO
                  ) -> None:
    for r in report:
        mark = "ok" if r["as_expected"] else "UNEXPECTED: " + "; ".join(r["problems"])
        version = f"@{r['version']}" if r["version"] else ""
        print(f"== {r['instance_id']}  {r['name']}{version}  {r['state']}  [{mark}]", file=out)
        print(f"   {r['description']}", file=out)
        if r["error"] is not None:
            print(f"   error:  {r['error']['error_type']}: {r['error']['message']}", file=out)
        else:
            print(f"   output: {json.dumps(r['output'], ensure_ascii=False)}", file=out)
        for line in r["log"]:
            print(f"   log {line}", file=out)
        if r["execution_id"] > 1:
            print(f"   history of execution {r['execution_id']} (the latest, after "
                  f"{r['execution_id'] - 1} continue-as-new):", file=out)
        else:
            print("   history:", file=out)
        for line in r["timeline"]:
            print(f"     {line}", file=out)
        print(file=out)
    for line in collector.unexpected:
        print(f"unexpected runtime error: {line}", file=out)

"""Restarts on one SQLite file with different code: changed code under a running instance
is reported as nondeterminism, and instances keep the version they started with.

Each test runs one runtime, stops it, and starts another (a "deploy") on a new provider
object over the same file, so nothing survives in memory between the two.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from duroxy import (
    ActivityContext,
    ActivityRegistry,
    Client,
    InstanceNotFound,
    OrchestrationContext,
    OrchestrationRegistry,
    OrchestrationState,
    Runtime,
    RuntimeOptions,
)
from duroxy.providers.sqlite import SqliteProvider

OPTIONS = RuntimeOptions(not_registered_backoff=0.05, max_attempts=3)

ran: Counter[str] = Counter()


async def reserve(ctx: ActivityContext, x: Any) -> str:
    ran["reserve"] += 1
    return f"reserved {x}"


async def audit(ctx: ActivityContext, x: Any) -> str:
    ran["audit"] += 1
    return f"audited {x}"


ACTIVITIES = (ActivityRegistry.builder().register("reserve", reserve)
              .register("audit", audit).build())


async def wait_for_history(client: Client, iid: str, kind: str, timeout: float = 10) -> None:
    """Until the instance's latest execution has a ``kind`` event in history."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if any(e.kind == kind for e in await client.read_history(iid)):
                return
        except InstanceNotFound:  # not created yet
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{iid!r} never recorded {kind} within {timeout} s")
        await asyncio.sleep(0.02)


Deploy = Callable[[OrchestrationRegistry], Coroutine[Any, Any, tuple[Runtime, Client]]]


@pytest.fixture
async def deploy(tmp_path: Path) -> Any:
    """``rt, client = await deploy(orchestrations)``: stops the previous runtime (and
    closes its store) first, so at most one runs at a time."""
    live: list[tuple[Runtime, SqliteProvider]] = []
    ran.clear()

    async def stop() -> None:
        while live:
            rt, store = live.pop()
            await rt.shutdown(timeout=2)
            await store.close()

    async def start(orchs: OrchestrationRegistry) -> tuple[Runtime, Client]:
        await stop()
        store = SqliteProvider(tmp_path / "deploys.db")
        rt = await Runtime.start(store, ACTIVITIES, orchs, OPTIONS)
        live.append((rt, store))
        return rt, Client(store)

    try:
        yield start
    finally:
        await stop()


# ====================================================================== code changes
async def order_v1(ctx: OrchestrationContext, x: Any) -> Any:
    reserved = await ctx.schedule_activity("reserve", x)
    approval = await ctx.schedule_wait("approve")
    return [reserved, approval]


async def order_changed_activity(ctx: OrchestrationContext, x: Any) -> Any:
    audited = await ctx.schedule_activity("audit", x)  # a different first step
    reserved = await ctx.schedule_activity("reserve", x)
    approval = await ctx.schedule_wait("approve")
    return [audited, reserved, approval]


async def order_changed_timer(ctx: OrchestrationContext, x: Any) -> Any:
    await ctx.schedule_timer(0.01)
    reserved = await ctx.schedule_activity("reserve", x)
    return [reserved, await ctx.schedule_wait("approve")]


def only(name: str, fn: Any, version: str = "1.0.0") -> OrchestrationRegistry:
    return OrchestrationRegistry.builder().register_versioned(name, version, fn).build()


@pytest.mark.parametrize(("changed", "needles"), [
    (order_changed_activity, ["expected activity 'reserve' at event 2",
                              "code scheduled activity 'audit'"]),
    (order_changed_timer, ["expected activity 'reserve' at event 2", "code scheduled timer"]),
], ids=["other-activity", "timer"])
async def test_changed_code_under_a_running_instance_is_nondeterminism(
        deploy: Deploy, changed: Any, needles: list[str]) -> None:
    _, client = await deploy(only("order", order_v1))
    await client.start_orchestration("o-1", "order", 7)
    await wait_for_history(client, "o-1", "EventSubscribed")
    assert ran == Counter(reserve=1)

    # Same name, same version, different code.
    _, client = await deploy(only("order", changed))
    await client.raise_event("o-1", "approve", True)
    st = await client.wait_for_orchestration("o-1", 10)
    assert st.state is OrchestrationState.FAILED
    assert st.error is not None and st.error.kind == "nondeterminism"
    for needle in needles:
        assert needle in st.error.message
    assert "code changed" in st.error.message
    # The changed code did not get to run anything: no audit, no second reserve.
    assert ran == Counter(reserve=1)
    info = await client.get_instance_info("o-1")
    assert info.state is OrchestrationState.FAILED and info.version == "1.0.0"


async def test_unchanged_code_resumes_after_a_restart(deploy: Deploy) -> None:
    _, client = await deploy(only("order", order_v1))
    await client.start_orchestration("o-2", "order", 8)
    await wait_for_history(client, "o-2", "EventSubscribed")
    _, client = await deploy(only("order", order_v1))
    await client.raise_event("o-2", "approve", "yes")
    st = await client.wait_for_orchestration("o-2", 10)
    assert (st.state, st.output) == (OrchestrationState.COMPLETED, ["reserved 8", "yes"])
    assert ran == Counter(reserve=1)


# ====================================================================== versions
def versioned(code: str) -> Callable[[OrchestrationContext, Any], Coroutine[Any, Any, Any]]:
    """Version ``code`` of "flow". Input "wait": waits for "go" then returns;
    "continue": waits, then continues as new (latest version) with "continued";
    "continue-pinned": continues as new on 1.0.0; anything else returns at once. The
    output names the code that ran."""

    async def flow(ctx: OrchestrationContext, inp: Any) -> Any:
        if inp in ("wait", "continue", "continue-pinned"):
            await ctx.schedule_wait("go")
        if inp == "continue":
            ctx.continue_as_new("continued")
        if inp == "continue-pinned":
            ctx.continue_as_new("continued", version="1.0.0")
        return {"code": code, "ctx_version": ctx.orchestration_version, "input": inp,
                "execution": ctx.execution_id}

    flow.__name__ = f"flow_{code.replace('.', '_')}"
    return flow


def out(code: str, inp: Any, execution: int = 1) -> dict[str, Any]:
    return {"code": code, "ctx_version": code, "input": inp, "execution": execution}


async def parent(ctx: OrchestrationContext, _: Any) -> Any:
    pinned = await ctx.schedule_sub_orchestration("flow", "child", version="1.0.0")
    latest = await ctx.schedule_sub_orchestration("flow", "child")
    ctx.schedule_orchestration("flow", "detached-pinned", "detached", version="1.0.0")
    return [pinned, latest]


def flows(*codes: str) -> OrchestrationRegistry:
    b = OrchestrationRegistry.builder().register("parent", parent)
    for code in reversed(codes):  # registration order must not matter
        b.register_versioned("flow", code, versioned(code))
    return b.build()


async def test_running_instance_keeps_its_version_after_a_newer_one_is_deployed(
        deploy: Deploy) -> None:
    _, client = await deploy(flows("1.0.0"))
    await client.start_orchestration("keep", "flow", "wait")
    await client.start_orchestration("moves", "flow", "continue")
    for iid in ("keep", "moves"):
        await wait_for_history(client, iid, "EventSubscribed")
        assert (await client.get_instance_info(iid)).version == "1.0.0"

    _, client = await deploy(flows("1.0.0", "1.0.1"))
    # A new instance gets the latest version.
    await client.start_orchestration("fresh", "flow", "now")
    st = await client.wait_for_orchestration("fresh", 10)
    assert (st.output, st.version) == (out("1.0.1", "now"), "1.0.1")

    # The one started before keeps 1.0.0, across the restart, to its end.
    assert (await client.get_instance_info("keep")).version == "1.0.0"
    await client.raise_event("keep", "go")
    st = await client.wait_for_orchestration("keep", 10)
    assert st.state is OrchestrationState.COMPLETED, st.error
    assert (st.output, st.version) == (out("1.0.0", "wait"), "1.0.0")
    assert (await client.get_instance_info("keep")).version == "1.0.0"
    started = (await client.read_history("keep"))[0]
    assert started.kind == "OrchestrationStarted"
    assert started.version == "1.0.0"  # type: ignore[attr-defined]

    # continue_as_new moves to the latest version.
    await client.raise_event("moves", "go")
    st = await client.wait_for_orchestration("moves", 10)
    assert st.state is OrchestrationState.COMPLETED, st.error
    assert (st.output, st.version) == (out("1.0.1", "continued", 2), "1.0.1")
    info = await client.get_instance_info("moves")
    assert (info.version, info.execution_id) == ("1.0.1", 2)
    first = (await client.read_history("moves", execution_id=1))[0]
    assert first.version == "1.0.0"  # type: ignore[attr-defined]


async def test_explicit_versions_pin_the_code(deploy: Deploy) -> None:
    _, client = await deploy(flows("1.0.0", "1.0.1"))
    await client.start_orchestration_versioned("pinned", "flow", "1.0.0", "now")
    st = await client.wait_for_orchestration("pinned", 10)
    assert (st.output, st.version) == (out("1.0.0", "now"), "1.0.0")

    # continue_as_new with a version starts the next execution on it.
    await client.start_orchestration("back", "flow", "continue-pinned")
    await wait_for_history(client, "back", "EventSubscribed")
    assert (await client.get_instance_info("back")).version == "1.0.1"
    await client.raise_event("back", "go")
    st = await client.wait_for_orchestration("back", 10)
    assert (st.output, st.version) == (out("1.0.0", "continued", 2), "1.0.0")

    # A version nobody registered fails the instance instead of running other code.
    await client.start_orchestration_versioned("missing", "flow", "2.0.0", "now")
    st = await client.wait_for_orchestration("missing", 10)
    assert st.state is OrchestrationState.FAILED
    assert st.error is not None and st.error.kind == "not_registered"
    assert "2.0.0" in st.error.message


async def test_sub_orchestration_versions(deploy: Deploy) -> None:
    _, client = await deploy(flows("1.0.0", "1.0.1"))
    await client.start_orchestration("p", "parent")
    st = await client.wait_for_orchestration("p", 10)
    assert st.state is OrchestrationState.COMPLETED, st.error
    assert st.output == [out("1.0.0", "child"), out("1.0.1", "child")]
    children = await client.list_instances(parent_instance_id="p")
    assert sorted(c.version or "" for c in children) == ["1.0.0", "1.0.1"]
    detached = await client.wait_for_orchestration("detached-pinned", 10)
    assert (detached.output, detached.version) == (out("1.0.0", "detached"), "1.0.0")

"""Activity routing with runtimes in this process, on every store: sessions (affinity,
the cap, idle release, shutdown release, ``worker_node_id``), tags (filters, work that
nobody accepts), split workers (activity-only and orchestration-only runtimes), and what
their heartbeats show.

Activities here report the worker that ran them; tests that need an order of events
block activities on ``asyncio.Event`` s and wait for conditions (generous timeouts), never
on timings."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from duroxy import (
    ActivityContext,
    ActivityRegistry,
    Client,
    OrchestrationContext,
    OrchestrationRegistry,
    OrchestrationState,
    Runtime,
    RuntimeOptions,
    TagFilter,
)
from duroxy.providers.base import ActivityRoute, Provider, WorkerRecord
from storekit import store

__all__ = ["store"]

#: Quick leases and polls, so that the waits below end soon; idle longer than the lock.
FAST: dict[str, Any] = {
    "orchestration_lock_timeout": 2.0, "activity_lock_timeout": 1.0, "poll_interval": 0.01,
    "max_poll_interval": 0.05, "heartbeat_interval": 0.2, "session_lock_timeout": 2.0,
}
WAIT = 30.0


def options(**kw: Any) -> RuntimeOptions:
    return RuntimeOptions(**{**FAST, **kw})


@dataclass
class World:
    """What activities did, and the gates that hold them."""

    ran: list[dict[str, Any]] = field(default_factory=list)
    started: dict[str, asyncio.Event] = field(default_factory=dict)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)

    def gate(self, key: str) -> asyncio.Event:
        return self.gates.setdefault(key, asyncio.Event())

    def begun(self, key: str) -> asyncio.Event:
        return self.started.setdefault(key, asyncio.Event())


WORLD = World()


async def work(ctx: ActivityContext, input: dict[str, Any]) -> dict[str, Any]:
    """Reports where it ran; with ``gate``, waits for the test to open it."""
    done = {"worker": ctx.worker_id, "session": ctx.session_id, "tag": ctx.tag,
            "key": input.get("key")}
    key = input.get("gate")
    if key is not None:
        WORLD.begun(key).set()
        await WORLD.gate(key).wait()
    WORLD.ran.append(done)
    return done


async def sessions(ctx: OrchestrationContext, input: dict[str, Any]) -> list[Any]:
    """For each session, ``steps`` activities one after the other; sessions side by side."""
    async def chain(sid: str) -> list[Any]:
        return [await ctx.schedule_activity("work", {"key": f"{sid}/{k}"}, session_id=sid)
                for k in range(int(input["steps"]))]

    per = await ctx.join([chain(s) for s in input["sessions"]])
    return [x for chain_out in per for x in chain_out]


async def one(ctx: OrchestrationContext, input: dict[str, Any]) -> Any:
    """One activity, with the routing and gate the input gives."""
    return await ctx.schedule_activity("work", {"gate": input.get("gate"), "key": input.get("key")},
                                       session_id=input.get("session"), tag=input.get("tag"))


async def fanout(ctx: OrchestrationContext, tags: list[str | None]) -> list[Any]:
    return await ctx.join([ctx.schedule_activity("work", {"key": n}, tag=t)
                           for n, t in enumerate(tags)])


async def race(ctx: OrchestrationContext, input: dict[str, Any]) -> str:
    index, _ = await ctx.select2(ctx.schedule_activity("work", {}, tag=input["tag"]),
                                 ctx.schedule_timer(float(input["timeout"])))
    return ["activity", "timer"][index]


async def eternal(ctx: OrchestrationContext, input: dict[str, Any]) -> list[Any]:
    """One activity on the session per execution, ``rounds`` executions (continue-as-new)."""
    done = [*input["done"], await ctx.schedule_activity("work", {}, session_id="kept")]
    if len(done) < int(input["rounds"]):
        ctx.continue_as_new({**input, "done": done})
    return done


ACTS = ActivityRegistry.builder().register("work", work).build()
ORCHS = (OrchestrationRegistry.builder().register("sessions", sessions).register("one", one)
         .register("fanout", fanout).register("race", race).register("eternal", eternal)
         .build())


class Cluster:
    """Runtimes on one store, shut down at the end of the test."""

    def __init__(self, store: Provider) -> None:
        self.store = store
        self.client = Client(store)
        self.runtimes: list[Runtime] = []

    async def start(self, worker_id: str, *, orchestrations: bool = True,
                    activities: bool = True, **kw: Any) -> Runtime:
        if not orchestrations:
            kw.setdefault("orchestration_concurrency", 0)
        if not activities:
            kw.setdefault("activity_concurrency", 0)
        rt = await Runtime.start(self.store, ACTS if activities else None,
                                 ORCHS if orchestrations else None,
                                 options(worker_id=worker_id, **kw))
        self.runtimes.append(rt)
        return rt

    async def run(self, iid: str, name: str, input: Any) -> Any:
        await self.client.start_orchestration(iid, name, input)
        status = await self.client.wait_for_orchestration(iid, WAIT)
        assert status.state is OrchestrationState.COMPLETED, status.error
        return status.output

    async def close(self) -> None:
        for rt in self.runtimes:
            await rt.shutdown(timeout=2)


@pytest.fixture
async def cluster(store: Provider) -> AsyncIterator[Cluster]:
    global WORLD
    WORLD = World()
    c = Cluster(store)
    try:
        yield c
    finally:
        for gate in WORLD.gates.values():
            gate.set()
        await c.close()


async def wait_for(pred: Callable[[], Awaitable[bool] | bool], what: str,
                   timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if not isinstance(got, bool):
            got = await got
        if got:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


# ====================================================================== sessions
async def test_each_sessions_activities_run_on_the_runtime_that_claimed_it(
        cluster: Cluster) -> None:
    await cluster.start("w1")
    await cluster.start("w2", orchestrations=False)
    await cluster.start("w3", orchestrations=False)
    names = [f"s{n}" for n in range(4)]
    outs = await asyncio.gather(*[
        cluster.run(f"sess-{i}", "sessions", {"sessions": names, "steps": 5})
        for i in range(3)])
    by_session: dict[str, set[str]] = {}
    for out in outs:
        assert len(out) == 20
        for done in out:
            assert done["session"] in names and done["tag"] is None
            by_session.setdefault(done["session"], set()).add(done["worker"])
    # every session's 15 activities (three instances share each) on one runtime
    assert {s: len(w) for s, w in by_session.items()} == dict.fromkeys(names, 1)


async def test_a_session_outlives_the_continue_as_new_of_its_instance(cluster: Cluster) -> None:
    await cluster.start("w1")
    for n in range(2, 5):
        await cluster.start(f"w{n}", orchestrations=False)
    out = await cluster.run("eternal", "eternal", {"rounds": 6, "done": []})
    assert len(out) == 6 and len({d["worker"] for d in out}) == 1, out
    assert (await cluster.client.get_instance_info("eternal")).execution_id == 6


async def test_a_runtime_at_its_session_cap_runs_its_own_sessions_and_plain_work(
        cluster: Cluster) -> None:
    await cluster.start("solo", max_sessions_per_runtime=1, session_idle_timeout=1.5)
    await cluster.client.start_orchestration("first", "one", {"session": "s1", "gate": "g1"})
    await asyncio.wait_for(WORLD.begun("g1").wait(), WAIT)
    await cluster.client.start_orchestration("second", "one", {"session": "s2", "gate": "g2"})
    # at the cap: plain work and work of its own session still run
    assert (await cluster.run("plain", "one", {}))["session"] is None
    assert (await cluster.run("own", "one", {"session": "s1"}))["worker"] == "solo"
    assert not WORLD.begun("g2").is_set(), "a second session was claimed at the cap"
    WORLD.gate("g1").set()
    await cluster.client.wait_for_orchestration("first", WAIT)
    # s1 goes idle, is released, and only then is s2 claimed
    await asyncio.wait_for(WORLD.begun("g2").wait(), WAIT)
    WORLD.gate("g2").set()
    assert (await cluster.client.wait_for_orchestration("second", WAIT)).output["worker"] == \
        "solo"


async def test_an_idle_session_is_released_and_another_runtime_claims_it(
        cluster: Cluster) -> None:
    await cluster.start("a", max_sessions_per_runtime=1, session_idle_timeout=1.5)
    assert (await cluster.run("i1", "one", {"session": "s1"}))["worker"] == "a"
    # a can claim s2 only once s1 idled out and was released
    await cluster.client.start_orchestration("i2", "one", {"session": "s2", "gate": "g2"})
    await asyncio.wait_for(WORLD.begun("g2").wait(), WAIT)
    assert WORLD.ran == [{"worker": "a", "session": "s1", "tag": None, "key": None}]
    await cluster.start("b", orchestrations=False)
    # a is at its cap with s2: the released s1 goes to b
    assert (await cluster.run("i3", "one", {"session": "s1"}))["worker"] == "b"
    WORLD.gate("g2").set()
    assert (await cluster.client.wait_for_orchestration("i2", WAIT)).output["worker"] == "a"


async def test_shutdown_releases_the_sessions_at_once(cluster: Cluster) -> None:
    first = await cluster.start("first", session_lock_timeout=600.0)
    assert (await cluster.run("i1", "one", {"session": "s1"}))["worker"] == "first"
    await first.shutdown()
    # without the release, s1 would stay with the stopped runtime for ten minutes
    await cluster.start("second", session_lock_timeout=600.0)
    assert (await cluster.run("i2", "one", {"session": "s1"}))["worker"] == "second"


async def test_a_runtime_restarted_with_its_node_id_takes_its_sessions_back(
        cluster: Cluster) -> None:
    await cluster.start("turns", activities=False)
    await cluster.client.start_orchestration("i1", "one", {"session": "s1", "key": "1"})
    # A runtime of node "n1" claims s1 with the first activity, then dies: the
    # activity's lock lapses, the session's lease would last ten more minutes.
    claim = ActivityRoute(TagFilter.DEFAULT_ONLY, "n1", 1, 600.0)
    taken: list[Any] = []

    async def claimed() -> bool:
        taken.extend(await cluster.store.fetch_activity_items(0.2, 1, route=claim))
        return bool(taken)

    await wait_for(claimed, "the claim of node n1")
    assert taken[0].work.session_id == "s1"
    await cluster.start("other", orchestrations=False)
    await cluster.client.start_orchestration("i2", "one", {"session": "s1", "key": "2"})
    await cluster.client.start_orchestration("i0", "one", {"session": "s0", "key": "0"})
    assert (await cluster.client.wait_for_orchestration("i0", WAIT)).output["worker"] == \
        "other"
    # a runtime restarted as node n1 takes s1's work at once
    await cluster.start("n1-again", orchestrations=False, worker_node_id="n1")
    for iid in ("i1", "i2"):
        status = await cluster.client.wait_for_orchestration(iid, WAIT)
        assert status.output["worker"] == "n1-again", iid


async def test_two_live_runtimes_cannot_share_a_node_id(cluster: Cluster) -> None:
    await cluster.start("a", worker_node_id="node-1")
    with pytest.raises(ValueError, match="worker_node_id 'node-1' is in use"):
        await cluster.start("b", worker_node_id="node-1")
    # a live runtime of another host
    now = time.time()
    await cluster.store.record_heartbeat(WorkerRecord(
        worker_id="far", host="elsewhere.example", pid=4242, duroxy_version="x",
        started_at=now, last_seen_at=now, heartbeat_interval=10.0,
        orchestration_concurrency=1, activity_concurrency=1, tag_filter="DEFAULT_ONLY",
        worker_node_id="node-2"))
    with pytest.raises(ValueError, match="in use by the live worker 'far'"):
        await cluster.start("c", worker_node_id="node-2")
    # a row of this host whose process is gone is a predecessor: no conflict
    dead = os.getpid() + 1
    while True:
        try:
            os.kill(dead, 0)
        except ProcessLookupError:
            break
        except PermissionError:
            pass
        dead += 1
    await cluster.store.record_heartbeat(WorkerRecord(
        worker_id="gone", host=socket.gethostname(), pid=dead, duroxy_version="x",
        started_at=now, last_seen_at=now, heartbeat_interval=10.0,
        orchestration_concurrency=1, activity_concurrency=1, tag_filter="DEFAULT_ONLY",
        worker_node_id="node-3"))
    await cluster.start("d", worker_node_id="node-3")


async def test_heartbeats_show_the_sessions_a_runtime_owns(cluster: Cluster) -> None:
    await cluster.start("w", worker_node_id="node-w")
    await cluster.client.start_orchestration("i1", "one", {"session": "s1", "gate": "g"})
    await asyncio.wait_for(WORLD.begun("g").wait(), WAIT)

    async def owned() -> bool:
        return any(w.worker_id == "w" and w.sessions_owned == 1
                   for w in await cluster.client.list_workers())

    await wait_for(owned, "the heartbeat to show the session")
    [info] = [w for w in await cluster.client.list_workers() if w.worker_id == "w"]
    assert (info.worker_node_id, info.tag_filter) == ("node-w", "DEFAULT_ONLY")
    WORLD.gate("g").set()
    await cluster.client.wait_for_orchestration("i1", WAIT)


# ====================================================================== tags
async def test_tagged_activities_run_only_where_the_filter_accepts_them(
        cluster: Cluster) -> None:
    await cluster.start("default")
    await cluster.start("gpu", orchestrations=False, worker_tag_filter=TagFilter.tags(["gpu"]))
    await cluster.start("cpu", orchestrations=False,
                        worker_tag_filter=TagFilter.default_and(["cpu"]))
    tags: list[str | None] = [None, "gpu", "cpu"] * 8
    out = await cluster.run("fan", "fanout", tags)
    assert [d["tag"] for d in out] == tags
    for done in out:
        allowed = {None: {"default", "cpu"}, "gpu": {"gpu"}, "cpu": {"cpu"}}[done["tag"]]
        assert done["worker"] in allowed, done


async def test_a_turn_claims_no_activity_its_runtime_would_not_fetch(
        cluster: Cluster) -> None:
    # The only runtime with turns accepts gpu work only: the untagged activity its turn
    # schedules waits for a runtime that takes untagged work.
    await cluster.start("gpu-only", worker_tag_filter=TagFilter.tags(["gpu"]))
    await cluster.client.start_orchestration("plain", "one", {"key": "plain"})
    assert (await cluster.run("gpu", "one", {"tag": "gpu"}))["worker"] == "gpu-only"
    status = await cluster.client.get_orchestration_status("plain")
    assert status.state is not OrchestrationState.COMPLETED
    await cluster.start("default", orchestrations=False)
    done = await cluster.client.wait_for_orchestration("plain", WAIT)
    assert done.output["worker"] == "default"


async def test_a_tagged_activity_nobody_accepts_loses_a_select_to_a_timer(
        cluster: Cluster) -> None:
    await cluster.start("default")
    assert await cluster.run("race", "race", {"tag": "nowhere", "timeout": 0.3}) == "timer"
    kinds = [e.kind for e in await cluster.client.read_history("race")]
    assert kinds == ["OrchestrationStarted", "ActivityScheduled", "TimerCreated",
                     "TimerFired", "WorkCancelled", "OrchestrationCompleted"]
    assert WORLD.ran == []


async def test_a_tagged_activity_without_a_registered_worker_waits_instead_of_failing(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "duroxy.runtime")
    empty = ActivityRegistry.builder().register("other", work).build()
    cluster.runtimes.append(await Runtime.start(
        cluster.store, empty, ORCHS, options(worker_id="any", max_attempts=2,
                                             not_registered_backoff=0.02,
                                             worker_tag_filter=TagFilter.ANY)))
    await cluster.client.start_orchestration("render", "one", {"tag": "gpu"})
    await wait_for(lambda: "waits until one starts" in caplog.text, "the warning")
    # offered again and again, far past max_attempts, and not failed
    await asyncio.sleep(0.5)
    status = await cluster.client.get_orchestration_status("render")
    assert status.state is OrchestrationState.RUNNING, status.error
    await cluster.start("gpu", orchestrations=False, worker_tag_filter=TagFilter.tags(["gpu"]))
    status = await cluster.client.wait_for_orchestration("render", WAIT)
    assert status.output["worker"] == "gpu"


# ====================================================================== split workers
async def test_an_orchestration_only_and_an_activity_only_runtime_work_together(
        cluster: Cluster) -> None:
    await cluster.start("turns", activities=False)
    assert (await cluster.client.list_workers())[0].tag_filter == "NONE"
    await cluster.client.start_orchestration("i1", "one", {"key": "x"})
    status = await cluster.client.get_orchestration_status("i1")
    assert status.state is not OrchestrationState.COMPLETED
    await cluster.start("acts", orchestrations=False)
    done = await cluster.client.wait_for_orchestration("i1", WAIT)
    assert done.output["worker"] == "acts"
    workers = {w.worker_id: w for w in await cluster.client.list_workers()}
    assert (workers["turns"].activity_concurrency, workers["turns"].tag_filter) == (0, "NONE")
    assert workers["turns"].activities == ()
    assert workers["acts"].orchestration_concurrency == 0
    assert workers["acts"].orchestrations == () and workers["acts"].activities == ("work",)


async def test_a_filter_of_none_makes_an_orchestration_only_runtime(cluster: Cluster) -> None:
    await cluster.start("turns", worker_tag_filter=TagFilter.NONE)
    await cluster.client.start_orchestration("i1", "one", {})
    await cluster.start("acts", orchestrations=False)
    assert (await cluster.client.wait_for_orchestration("i1", WAIT)).output["worker"] == "acts"


async def test_none_is_refused_for_a_registry_the_runtime_uses(cluster: Cluster) -> None:
    with pytest.raises(TypeError, match="activity_concurrency=0"):
        await Runtime.start(cluster.store, None, ORCHS, options())
    with pytest.raises(TypeError, match="orchestration_concurrency=0"):
        await Runtime.start(cluster.store, ACTS, None, options())
    with pytest.raises(ValueError, match="runs nothing"):
        RuntimeOptions(orchestration_concurrency=0, activity_concurrency=0)
    with pytest.raises(ValueError, match="runs nothing"):
        RuntimeOptions(orchestration_concurrency=0, worker_tag_filter=TagFilter.NONE)


async def test_time_skips_past_a_tagged_activity_nobody_in_the_environment_takes() -> None:
    """In the time-skipping environment, work its runtime's filter refuses does not keep
    the clock from moving: the five-minute timer wins the race at once."""
    from duroxy.testing import OrchestrationEnvironment

    for store_kind in ("memory", "sqlite"):
        async with OrchestrationEnvironment(ACTS, ORCHS, store=store_kind) as env:
            await env.client.start_orchestration("race", "race",
                                                 {"tag": "gpu", "timeout": 300})
            status = await env.client.wait_for_orchestration("race", WAIT)
            assert status.output == "timer", store_kind

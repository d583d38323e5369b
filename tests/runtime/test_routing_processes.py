"""Activity routing across worker processes, on SQLite and on PostgreSQL: sessions stay
on one worker while it lives, a killed owner's sessions move after their lease, an idle
session moves to another worker, ``max_sessions_per_runtime`` holds, tags reach only the
workers that accept them, a tagged activity nobody accepts loses a select to a timer,
and an activity-only and an orchestration-only worker run the example application
together.

Workers run ``tests/procapp.py``; its ``routed_step`` activity logs the worker's pid, the
session and the tag of every activity it runs. The tests wait for conditions with
generous timeouts; they assert on what ran where, never on how long it took."""

from __future__ import annotations

import os
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import procapp
from duroxy import Client, OrchestrationState
from duroxy.providers.base import Provider
from duroxy.providers.sqlite import SqliteProvider
from workerkit import Worker, Workers, drop_schema, store_url, wait_until

DSN = os.environ.get("DUROXY_TEST_PG_DSN")

pytestmark = pytest.mark.slow

WAIT = 60.0
STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@dataclass
class Env:
    workers: Workers
    client: Client

    def spawn(self, name: str, *args: str) -> Worker:
        return self.workers.spawn(name, "--heartbeat-interval", "0.5", *args)

    def log(self) -> list[dict[str, Any]]:
        return [r for r in procapp.read_log(self.workers.log) if r["act"] == "routed_step"]

    async def wait_all(self, ids: list[str]) -> list[Any]:
        outs = []
        for iid in ids:
            status = await self.client.wait_for_orchestration(iid, WAIT)
            assert status.state is OrchestrationState.COMPLETED, (
                iid, status.error, [w.text()[-2000:] for w in self.workers.started])
            outs.append(status.output)
        return outs


@pytest.fixture(params=STORES)
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Env]:
    store: Provider
    schema = None
    if request.param == "sqlite":
        path = tmp_path / "shared.db"
        workers = Workers(tmp_path, ("--db", str(path)), tmp_path / "effects.log")
        store = SqliteProvider(path)
    else:
        if not DSN:
            pytest.skip("DUROXY_TEST_PG_DSN not set: PostgreSQL tests need a server")
        from duroxy.providers.postgres import PostgresProvider

        schema = f"t_{uuid.uuid4().hex[:12]}"
        workers = Workers(tmp_path, ("--store", store_url(DSN, schema)),
                          tmp_path / "effects.log")
        store = PostgresProvider(DSN, schema=schema)
    try:
        yield Env(workers, Client(store))
    finally:
        try:
            workers.stop_all()
            await store.close()
        finally:
            if schema is not None and DSN:
                drop_schema(DSN, schema)


def pids_by_session(log: list[dict[str, Any]]) -> dict[str, set[int]]:
    found: dict[str, set[int]] = defaultdict(set)
    for r in log:
        if r["sid"] is not None:
            found[r["sid"]].add(r["pid"])
    return found


# ====================================================================== sessions
async def test_200_session_activities_over_10_sessions_stay_each_on_one_of_3_workers(
        env: Env) -> None:
    ws = [env.spawn(f"w{n}", "--max-sessions", "4", "--act-concurrency", "8")
          for n in range(3)]
    await env.workers.wait_ready(*ws)
    ids = [f"chain-{i}" for i in range(20)]
    for i, iid in enumerate(ids):  # two instances share each session
        await env.client.start_orchestration(iid, "session_chain", {
            "session": f"sess-{i % 10}", "steps": 10, "sleep": 0.01})
    outs = await env.wait_all(ids)
    log = env.log()
    ends = [r for r in log if r["phase"] == "end"]
    assert len(ends) == 200 and len(outs) == 20
    by_session = pids_by_session(log)
    assert set(by_session) == {f"sess-{n}" for n in range(10)}
    # every session's 20 activities ran on one worker ...
    assert all(len(pids) == 1 for pids in by_session.values()), by_session
    # ... which never held more than 4 sessions: 10 sessions need all three
    per_worker: dict[int, int] = defaultdict(int)
    for pids in by_session.values():
        per_worker[next(iter(pids))] += 1
    assert set(per_worker) == {w.pid for w in ws}
    assert all(2 <= n <= 4 for n in per_worker.values()), per_worker
    # each instance got its results from its session's worker
    for i, out in enumerate(outs):
        assert set(out) == by_session[f"sess-{i % 10}"]


async def test_a_killed_owners_sessions_are_taken_over_after_their_lease(env: Env) -> None:
    short = ("--session-lock", "2", "--act-lock", "1", "--orch-lock", "1",
             "--session-idle", "60")
    hold = env.workers.tmp / "hold"
    hold.write_text("")
    a = env.spawn("a", *short)
    await env.workers.wait_ready(a)
    ids = [f"chain-{i}" for i in range(6)]
    for i, iid in enumerate(ids):
        await env.client.start_orchestration(iid, "session_chain", {
            "session": f"k{i % 3}", "steps": 4, "hold": str(hold)})
    # a claims every session: each one's first steps run (held) on a
    await wait_until(lambda: {r["sid"] for r in env.log()} == {"k0", "k1", "k2"}, WAIT,
                     "a to start work of every session")
    b = env.spawn("b", *short)
    await env.workers.wait_ready(b)
    # b lives beside a while a holds the sessions: it takes none of their work
    await wait_until(lambda: len(env.log()) >= 6, WAIT, "a to start every first step")
    env.workers.kill(a)
    at_kill = env.log()
    assert {r["pid"] for r in at_kill} == {a.pid}, "b ran work of a session a held"
    assert not any(r["phase"] == "end" for r in at_kill)
    hold.unlink()
    await env.wait_all(ids)
    log = env.log()
    after = log[len(at_kill):]
    # after the kill only b ran them (once a's leases lapsed), the held steps again
    assert {r["pid"] for r in after} == {b.pid}
    assert pids_by_session(log) == {sid: {a.pid, b.pid} for sid in ("k0", "k1", "k2")}
    assert len([r for r in after if r["phase"] == "end"]) == 24


async def test_an_idle_session_is_released_and_another_worker_claims_it(env: Env) -> None:
    capped = ("--max-sessions", "1", "--session-idle", "2", "--act-lock", "1")
    a = env.spawn("a", *capped)
    await env.workers.wait_ready(a)
    await env.client.start_orchestration("i1", "session_chain", {"session": "s1", "steps": 1})
    assert await env.wait_all(["i1"]) == [[a.pid]]
    # At its cap of one, a takes s2 only once s1 idled out and was released. s2's one
    # activity runs long, so that a holds s2 while the rest happens.
    await env.client.start_orchestration("i2", "session_chain", {
        "session": "s2", "steps": 1, "sleep": 5})
    await wait_until(lambda: any(r["sid"] == "s2" for r in env.log()), WAIT,
                     "s2's activity to start")
    b = env.spawn("b", *capped)
    await env.workers.wait_ready(b)
    await env.client.start_orchestration("i3", "session_chain", {"session": "s1", "steps": 1})
    # a holds s2 and may own no other: b claims the released s1
    assert await env.wait_all(["i3", "i2"]) == [[b.pid], [a.pid]]
    assert pids_by_session(env.log()) == {"s1": {a.pid, b.pid}, "s2": {a.pid}}


# ====================================================================== tags
async def test_tagged_work_reaches_only_the_workers_that_accept_its_tag(env: Env) -> None:
    filters = {"plain": "DEFAULT_ONLY", "gpu": 'tags ["gpu"]', "cpu": 'default_and ["cpu"]'}
    ws = {name: env.spawn(name, "--tag-filter", f) for name, f in filters.items()}
    await env.workers.wait_ready(*ws.values())
    tags: list[str | None] = [None, "gpu", "cpu"] * 10
    await env.client.start_orchestration("fan", "tagged_fanout", {"tags": tags})
    [out] = await env.wait_all(["fan"])
    accepts = {None: {ws["plain"].pid, ws["cpu"].pid}, "gpu": {ws["gpu"].pid},
               "cpu": {ws["cpu"].pid}}
    for tag, pid in zip(tags, out, strict=True):
        assert pid in accepts[tag], (tag, pid)
    log = [r for r in env.log() if r["phase"] == "end"]
    assert sorted(r["tag"] or "" for r in log) == sorted(t or "" for t in tags)
    for r in log:
        assert r["pid"] in accepts[r["tag"]], r


async def test_a_tagged_activity_nobody_accepts_loses_a_select_to_a_timer(env: Env) -> None:
    w = env.spawn("plain")
    await env.workers.wait_ready(w)
    await env.client.start_orchestration("race", "tag_or_timer",
                                         {"tag": "nowhere", "timeout": 1.0})
    assert await env.wait_all(["race"]) == ["timer"]
    assert [e.kind for e in await env.client.read_history("race")] == [
        "OrchestrationStarted", "ActivityScheduled", "TimerCreated", "TimerFired",
        "WorkCancelled", "OrchestrationCompleted"]
    assert env.log() == []


# ====================================================================== split workers
async def test_an_activity_only_and_an_orchestration_only_worker_run_the_example_app(
        env: Env) -> None:
    from duroxy.examples.provisioning import demo

    acts = env.spawn("acts", "--app", "provisioning", "--orch-concurrency", "0")
    turns = env.spawn("turns", "--app", "provisioning", "--act-concurrency", "0")
    await env.workers.wait_ready(acts, turns)
    workers = {w.pid: w for w in await env.client.list_workers()}
    assert (workers[acts.pid].orchestration_concurrency, workers[acts.pid].orchestrations,
            workers[acts.pid].tag_filter) == (0, (), "DEFAULT_ONLY")
    assert (workers[turns.pid].activity_concurrency, workers[turns.pid].activities,
            workers[turns.pid].tag_filter) == (0, (), "NONE")
    expectations = await demo._run_scenarios(env.client)
    assert len(expectations) >= 7
    for exp in expectations:
        info = await env.client.get_instance_info(exp.instance_id)
        assert exp.check(info) == [], (exp.instance_id, info.error)
    assert acts.proc.poll() is None and turns.proc.poll() is None

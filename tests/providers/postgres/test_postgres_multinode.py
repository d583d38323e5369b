"""Several worker processes on one PostgreSQL schema: the work spreads over the nodes, a
node killed with work in hand is taken over once its leases lapse, and the survivors
stop cleanly.

Needs a server: set ``DUROXY_TEST_PG_DSN`` (a ``postgresql://`` URL). The test makes a
fresh schema and drops it afterwards. Workers run ``tests/procapp.py`` with
``--store postgresql://...?schema=...``; its activities append a line to a side-effect
log when they start and when they end, which lets the test see exactly which process
ran (and finished) which step.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import procapp
from duroxy import Client, OrchestrationState
from workerkit import Worker, Workers, drop_schema, store_url, wait_until

DSN = os.environ.get("DUROXY_TEST_PG_DSN")

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

# Short leases so that a dead node's work comes back within the test's time budget.
ORCH_LOCK, ACT_LOCK = 1.0, 2.0
ACT_CONCURRENCY = 4


# ====================================================================== helpers
@dataclass
class Env:
    cluster: Workers
    client: Client


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    if not DSN:
        pytest.skip("DUROXY_TEST_PG_DSN not set: PostgreSQL tests need a server")
    from duroxy.providers.postgres import PostgresProvider

    schema = f"t_{uuid.uuid4().hex[:12]}"
    cluster = Workers(tmp_path, ("--store", store_url(DSN, schema)), tmp_path / "effects.log")
    # The client uses the constructor, the nodes the URL: both must reach one schema.
    store = PostgresProvider(DSN, schema=schema)
    try:
        yield Env(cluster, Client(store))
    finally:
        try:
            cluster.stop_all()
            await store.close()
        finally:
            drop_schema(DSN, schema)


def step_key(r: dict[str, Any]) -> tuple[str, int]:
    return r["iid"], int(r["input"]["k"])


def keys(log: list[dict[str, Any]], phase: str, pids: set[int]) -> list[tuple[str, int]]:
    return [step_key(r) for r in log if r["phase"] == phase and r["pid"] in pids]


def in_flight(log: list[dict[str, Any]], pid: int) -> set[tuple[str, int]]:
    """Steps ``pid`` started and has not finished (as far as ``log`` shows)."""
    return set(keys(log, "start", {pid})) - set(keys(log, "end", {pid}))


# ====================================================================== the test
async def test_three_nodes_share_a_schema_and_take_over_a_killed_nodes_work(env: Env) -> None:
    instances, steps = 60, 5
    total = instances * steps
    cluster, client = env.cluster, env.client
    for i in range(3):
        cluster.spawn(f"n{i}", "--orch-lock", str(ORCH_LOCK), "--act-lock", str(ACT_LOCK),
                      "--act-concurrency", str(ACT_CONCURRENCY), "--shutdown-timeout", "2")
    await cluster.wait_ready(timeout=20.0)
    pids = {n.pid for n in cluster.started}

    ids = [f"mn-{n}" for n in range(instances)]
    for n, iid in enumerate(ids):
        # No explicit sleep: ``step`` sleeps 50 to 100 ms, so work is in flight.
        await client.start_orchestration(iid, "chain", {"start": n, "steps": steps})

    # Kill a node a fifth of the way in, once every node has finished a few activities
    # and some node holds a step it has started and not finished: that step is locked by
    # it at the moment of the kill.
    chosen: list[Worker] = []

    def spread_and_busy() -> bool:
        log = procapp.read_log(cluster.log)
        done = Counter(r["pid"] for r in log if r["phase"] == "end")
        if sum(done.values()) < total // 5 or min(done[pid] for pid in pids) < 3:
            return False
        busiest = max(cluster.started, key=lambda n: len(in_flight(log, n.pid)))
        if in_flight(log, busiest.pid):
            chosen.append(busiest)
        return bool(chosen)

    await wait_until(spread_and_busy, 20, "every node to run activities", interval=0.01)
    victim = chosen[0]
    killed_at = time.time()  # taken before the signal: nothing of it can run after this
    victim.proc.send_signal(signal.SIGKILL)
    assert victim.proc.wait(timeout=10) == -signal.SIGKILL
    at_kill = procapp.read_log(cluster.log)
    survivors = [n for n in cluster.started if n is not victim]
    live = {n.pid for n in survivors}

    # The run was in the middle, and the work was spread over all three nodes.
    assert len(keys(at_kill, "end", pids)) < total, "everything finished before the kill"
    for pid in pids:
        assert keys(at_kill, "end", {pid}), f"node {pid} ran no activity before the kill"

    # Every instance completes with exactly its output; none fails.
    deadline = time.monotonic() + 25
    for n, iid in enumerate(ids):
        st = await client.wait_for_orchestration(iid, max(0.1, deadline - time.monotonic()))
        assert st.state is OrchestrationState.COMPLETED, (
            iid, st.error, [s.text() for s in survivors])
        assert st.output == procapp.chain_output(n, steps), iid
    assert await client.list_instances(state="FAILED") == []
    for iid in ids:
        kinds = Counter(e.kind for e in await client.read_history(iid))
        assert (kinds["ActivityScheduled"], kinds["ActivityCompleted"]) == (steps, steps), iid

    log = procapp.read_log(cluster.log)
    assert {r["pid"] for r in log} <= pids
    everything = {(iid, k) for iid in ids for k in range(steps)}
    assert set(keys(log, "end", pids)) == everything

    # The victim can write nothing after its death, so what the final log shows it
    # started and not finished is exactly the work it held when it died.
    held = in_flight(log, victim.pid)
    assert held, "the killed node held no started activity"
    live_ends = Counter(keys(log, "end", live))
    # No step finished twice by the live nodes, and each was started by them at most once.
    assert max(live_ends.values()) == 1, [k for k, c in live_ends.items() if c > 1]
    live_starts = Counter(keys(log, "start", live))
    assert max(live_starts.values()) == 1, [k for k, c in live_starts.items() if c > 1]
    # Every held step was finished by another node ...
    assert held <= set(live_ends), sorted(held - set(live_ends))
    # ... which started it only after the kill, only once the lease the victim took when
    # it fetched the step could have lapsed (the lease runs on the database clock, the
    # fetch precedes the "start" line by a little: hence the margin), and promptly after
    # that: work of a dead runtime comes back within its lock timeout.
    victim_start = {step_key(r): r["t"] for r in log
                    if r["phase"] == "start" and r["pid"] == victim.pid}
    rerun = set(victim_start) & set(live_starts)
    for r in log:
        if r["phase"] == "start" and r["pid"] in live and step_key(r) in victim_start:
            key = step_key(r)
            assert r["t"] >= killed_at, (key, "taken while the victim was alive")
            since = r["t"] - victim_start[key]
            assert since >= ACT_LOCK - 0.5, (key, since, "taken before the lease lapsed")
            assert since <= ACT_LOCK + 3.0, (key, since, "taken long after the lease lapsed")
    # Only the work in flight at the kill ran again, which the victim's slots bound:
    # the held steps, plus steps it had finished but not yet acknowledged.
    assert held <= rerun and len(rerun) <= ACT_CONCURRENCY, sorted(rerun)

    # A clean stop: SIGTERM shuts each survivor down and it exits 0.
    for node in survivors:
        assert node.proc.poll() is None, node.text()
        node.proc.send_signal(signal.SIGTERM)
    for node in survivors:
        assert node.proc.wait(timeout=15) == 0, node.text()

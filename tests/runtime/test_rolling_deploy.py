"""A rolling deploy, in real processes: two workers on one store (a SQLite file, or a
PostgreSQL schema), one of which has not registered an orchestration or an activity.

Work the older worker lacks goes to the live worker that has it, and none of it fails or
uses up an attempt: every worker runs with ``max_attempts=1``, so a single fetch of an
instance or activity by the worker that lacks its code, counted as an attempt, would
fail it (``not_registered`` from the worker that lacks it, ``poison`` from the other at
its second fetch). Once the worker that has the code shuts down (its heartbeat row
marked stopped), nobody live can run that work, and new instances end
``not_registered`` as before.

Workers run ``tests/procapp.py``; its activities append a line to a side-effect log,
which tells which process ran each step.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import procapp
from duroxy import Client, OrchestrationState, WorkerInfo
from duroxy.providers.sqlite import SqliteProvider
from workerkit import Worker, Workers, drop_schema, store_url

pytestmark = pytest.mark.slow

HEARTBEAT = 0.2  # seconds: the workers learn of each other within a few of these
ROUNDS, INSTANCES, STEPS = 3, 20, 2
# Any attempt used up fails the work; a backoff that never delays the test.
STRICT = ("--max-attempts", "1", "--not-registered-backoff", "0.05",
          "--heartbeat-interval", str(HEARTBEAT))


@dataclass
class Deploy:
    cluster: Workers
    client: Client


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workers]:
    log = tmp_path / "effects.log"
    if request.param == "sqlite":
        ws = Workers(tmp_path, ("--db", str(tmp_path / "shared.db")), log)
        schema = None
    else:
        dsn = os.environ.get("DUROXY_TEST_PG_DSN")
        if not dsn:
            pytest.skip("DUROXY_TEST_PG_DSN not set: PostgreSQL tests need a server")
        schema = f"t_{uuid.uuid4().hex[:12]}"
        ws = Workers(tmp_path, ("--store", store_url(dsn, schema)), log)
    try:
        yield ws
    finally:
        try:
            ws.stop_all()
        finally:
            if schema is not None:
                drop_schema(os.environ["DUROXY_TEST_PG_DSN"], schema)


@pytest.fixture
async def deploy(cluster: Workers) -> AsyncIterator[Deploy]:
    if cluster.store_args[0] == "--db":
        store: Any = SqliteProvider(cluster.store_args[1])
    else:
        from duroxy import connect

        store = connect(cluster.store_args[1])
    try:
        yield Deploy(cluster, Client(store))
    finally:
        await store.close()


async def workers_by_pid(client: Client) -> dict[int, WorkerInfo]:
    return {w.pid: w for w in await client.list_workers(include_stopped=True)}


async def until_heard(client: Client, listener: Worker, other: Worker,
                      timeout: float = 20.0) -> None:
    """Wait until ``listener`` has reread the workers' rows since ``other``'s row showed
    its present state: a heartbeat is a write and then a reread, so once ``listener``
    wrote twice after that row was visible here, the reread after its first write saw
    it."""
    deadline = time.monotonic() + timeout
    seen_at: float | None = None
    writes: list[float] = []
    while len(writes) < 2:
        assert time.monotonic() < deadline, "the workers did not hear of each other"
        rows = await workers_by_pid(client)
        now = time.time()
        if seen_at is None:
            if other.pid in rows:
                seen_at = now
        elif listener.pid in rows:
            last = rows[listener.pid].last_seen_at.timestamp()
            if last > seen_at and last not in writes and (not writes or last > writes[-1]):
                writes.append(last)
        await asyncio.sleep(HEARTBEAT / 4)


def kinds_ok(kinds: list[str]) -> bool:
    return kinds == ["OrchestrationStarted", *["ActivityScheduled", "ActivityCompleted"]
                     * STEPS, "OrchestrationCompleted"]


@pytest.mark.parametrize("lacking", ["chain", "step"])
async def test_work_a_worker_lacks_is_run_by_the_live_worker_that_has_it(
        deploy: Deploy, lacking: str) -> None:
    cluster, client = deploy.cluster, deploy.client
    old = cluster.spawn("old", *STRICT, "--without", lacking)
    await cluster.wait_ready(old)
    new = cluster.spawn("new", *STRICT)
    await cluster.wait_ready(new)
    await until_heard(client, old, new)
    rows = await workers_by_pid(client)
    assert all(not k.startswith(f"{lacking}@") for k in rows[old.pid].orchestrations)
    assert lacking not in rows[old.pid].activities
    assert rows[new.pid].alive and rows[old.pid].alive

    ids: list[str] = []
    for r in range(ROUNDS):
        batch = [f"{lacking}-{r}-{n}" for n in range(INSTANCES)]
        ids += batch
        for n, iid in enumerate(batch):
            await client.start_orchestration(iid, "chain",
                                             {"start": n, "steps": STEPS, "sleep": 0.01})
        for n, iid in enumerate(batch):
            st = await client.wait_for_orchestration(iid, 30)
            assert st.state is OrchestrationState.COMPLETED, (iid, st.error, old.text(),
                                                              new.text())
            assert st.output == procapp.chain_output(n, STEPS)
            kinds = [e.kind for e in await client.read_history(iid)]
            assert kinds_ok(kinds), (iid, kinds)
    # Every step ran exactly once to its end, and a step the old worker lacks only on
    # the new one.
    log = procapp.read_log(cluster.log)
    ends = Counter((r["iid"], r["input"]["k"]) for r in log if r["phase"] == "end")
    assert set(ends) == {(iid, k) for iid in ids for k in range(STEPS)}
    assert max(ends.values()) == 1
    if lacking == "step":
        assert {r["pid"] for r in log} == {new.pid}
    for w in (old, new):
        assert w.proc.poll() is None, w.text()
        w.proc.send_signal(signal.SIGTERM)
    for w in (old, new):
        assert w.proc.wait(timeout=20) == 0, w.text()
        assert "Traceback" not in w.text(), w.text()


async def test_work_nobody_live_can_run_fails_not_registered_once_its_worker_stops(
        deploy: Deploy) -> None:
    cluster, client = deploy.cluster, deploy.client
    new = cluster.spawn("new", *STRICT)
    await cluster.wait_ready(new)
    old = cluster.spawn("old", *STRICT, "--without", "chain")
    await cluster.wait_ready(old)
    await until_heard(client, old, new)
    await client.start_orchestration("before", "chain", {"start": 1, "steps": 1, "sleep": 0})
    assert (await client.wait_for_orchestration("before", 30)).state is \
        OrchestrationState.COMPLETED

    new.proc.send_signal(signal.SIGTERM)
    assert new.proc.wait(timeout=20) == 0, new.text()
    gone = (await workers_by_pid(client))[new.pid]
    assert gone.stopped_at is not None and not gone.alive
    assert new.pid not in {w.pid for w in await client.list_workers()}
    await until_heard(client, old, new)

    for n in range(3):
        iid = f"after-{n}"
        await client.start_orchestration(iid, "chain", {"start": n, "steps": 1})
        st = await client.wait_for_orchestration(iid, 30)
        assert st.state is OrchestrationState.FAILED, (iid, st.state, old.text())
        assert st.error is not None and st.error.kind == "not_registered", st.error
        assert "'chain'" in st.error.message
        assert [e.kind for e in await client.read_history(iid)] == [
            "OrchestrationStarted", "OrchestrationFailed"]
    old.proc.send_signal(signal.SIGTERM)
    assert old.proc.wait(timeout=20) == 0, old.text()

"""A key-value read-modify-write loop survives a worker process killed mid-way, on
SQLite and PostgreSQL: the worker that takes over replays each instance from its history
and the KV its execution started with, so no increment is lost or made twice."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import procapp
from duroxy import Client, OrchestrationState, connect
from duroxy.history import KeyValueSet
from duroxy.providers.sqlite import SqliteProvider
from workerkit import Workers, drop_schema, store_url, wait_until

INSTANCES, TARGET, EVERY, CONCURRENCY = 6, 20, 5, 4


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workers]:
    log = tmp_path / "effects.log"
    schema = None
    if request.param == "sqlite":
        ws = Workers(tmp_path, ("--db", str(tmp_path / "shared.db")), log)
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
async def client(cluster: Workers) -> AsyncIterator[Client]:
    kind, where = cluster.store_args
    store = SqliteProvider(where) if kind == "--db" else connect(where)
    try:
        yield Client(store)
    finally:
        await store.close()


def ends(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in log if r["phase"] == "end"]


@pytest.mark.slow
async def test_a_kv_read_modify_write_loop_survives_a_killed_worker(
        cluster: Workers, client: Client) -> None:
    locks = ["--orch-lock", "1", "--act-lock", "2"]
    a = cluster.spawn("a", *locks, "--act-concurrency", str(CONCURRENCY))
    await cluster.wait_ready(a)
    ids = [f"counter-{n}" for n in range(INSTANCES)]
    for iid in ids:
        await client.start_orchestration(iid, "kv_counter", {"target": TARGET, "every": EVERY})
    total = INSTANCES * TARGET
    await wait_until(lambda: len(ends(procapp.read_log(cluster.log))) >= total // 3, 30,
                     "a third of the increments")
    cluster.kill(a)
    assert len(ends(procapp.read_log(cluster.log))) < total, "all done before the kill"

    b = cluster.spawn("b", *locks)
    await cluster.wait_ready(b)
    for iid in ids:
        status = await client.wait_for_orchestration(iid, 60)
        assert status.state is OrchestrationState.COMPLETED, (iid, status.error, b.text())
        assert status.output == TARGET, iid
        assert await client.get_kv_all_values(iid) == {"count": TARGET}
        # every increment once, in order, across the executions the counter continued into
        sets: list[str] = []
        for execution in await client.list_executions(iid):
            sets += [e.value for e in await client.read_history(iid, execution)
                     if isinstance(e, KeyValueSet)]
        assert sets == [str(v) for v in range(1, TARGET + 1)], iid

    log = procapp.read_log(cluster.log)
    assert {r["pid"] for r in log} == {a.pid, b.pid}
    # every step of every counter ran to its end at least once; only the work in flight
    # at the kill ran again
    finished = Counter((r["iid"], r["input"]["v"]) for r in ends(log))
    assert set(finished) == {(iid, v) for iid in ids for v in range(TARGET)}
    by_a = {(r["iid"], r["input"]["v"]) for r in log if r["pid"] == a.pid}
    by_b = {(r["iid"], r["input"]["v"]) for r in log if r["pid"] == b.pid}
    assert len(by_a & by_b) <= CONCURRENCY

"""SQLite provider specifics: locations and URLs, migrations, PRAGMAs, threads and
event loops, group commit, busy handling, and the SQL loader."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from duroxy.errors import ConfigurationError, LockLost, ProviderError
from duroxy.history import OrchestrationStarted
from duroxy.providers.sqlite import SqliteProvider
from duroxy.providers.sqlite._sql import migrations, parse_queries, queries, split_statements
from duroxy.providers.sqlite._tx import Op, Tx, provider_error
from duroxy.testing.provider_suite.support import (
    HOLD,
    activity_completion,
    commit,
    create,
    raised,
    scheduled,
    started,
    uid,
    work,
)

# ------------------------------------------------------------------ helpers


def _sql(store: SqliteProvider, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Run a statement on a separate connection to the store's file."""
    assert store.path is not None
    with closing(sqlite3.connect(store.path)) as conn:
        return conn.execute(sql, params).fetchall()


async def _on_writer(store: SqliteProvider, sql: str) -> Any:
    """Run a statement on the store's own write connection."""
    return await store._write(lambda tx: tx.conn.execute(sql).fetchall())


def _block_writer(store: SqliteProvider) -> threading.Event:
    """Park the writer thread inside an operation until the returned event is set, so
    that what is submitted meanwhile lands in one batch."""
    release = threading.Event()
    entered = threading.Event()

    def hold(tx: Tx) -> None:
        entered.set()
        release.wait(10)

    store._writer.submit(Op(hold, True, None, None))
    assert entered.wait(10)
    return release


async def _settle(store: SqliteProvider) -> None:
    """Wait until everything submitted to the writer so far has committed."""
    await store._write(lambda tx: None)


# ------------------------------------------------------------------ locations and URLs
async def test_plain_path_and_pathlike(tmp_path: Path) -> None:
    for target in (str(tmp_path / "a.db"), tmp_path / "b.db"):
        store = SqliteProvider(target)
        assert store.path == str(target)
        await create(store, uid())
        await store.close()
        assert Path(target).exists()


async def test_relative_url_resolves_against_cwd(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = SqliteProvider("sqlite:///relative.db")
    assert store.path == "relative.db"
    await create(store, uid())
    await store.close()
    assert (tmp_path / "relative.db").exists()


async def test_absolute_url(tmp_path: Path) -> None:
    target = tmp_path / "sub dir" / "abs.db"
    target.parent.mkdir()
    store = SqliteProvider("sqlite:///" + str(target).replace(" ", "%20"))
    assert store.path == str(target)
    iid = uid()
    await create(store, iid)
    await store.close()
    assert _sql(SqliteProvider(target), "SELECT instance_id FROM instances") == [(iid,)]


@pytest.mark.parametrize("location", ["sqlite::memory:", ":memory:", "sqlite://",
                                      "sqlite:///:memory:"])
async def test_memory_locations(location: str) -> None:
    store = SqliteProvider(location)
    assert store.path is None
    iid = uid()
    await create(store, iid)
    rec = await store.get_instance(iid)
    assert rec is not None and rec.state == "PENDING"
    await store.close()


async def test_in_memory_stores_are_private() -> None:
    a, b = SqliteProvider.in_memory(), SqliteProvider.in_memory()
    iid = uid()
    await create(a, iid)
    assert await a.get_instance(iid) is not None
    assert await b.get_instance(iid) is None
    await a.close()
    await b.close()


def test_url_options(tmp_path: Path) -> None:
    store = SqliteProvider(f"sqlite:///{tmp_path}/x.db?synchronous=normal&busy_timeout=2.5")
    assert "synchronous=NORMAL" in repr(store)
    assert store._config.busy_timeout == 2.5


@pytest.mark.parametrize("bad", [
    "",
    "postgresql://localhost/db",
    "sqlite://host/db.sqlite",
    "sqlite:relative.db",
    "sqlite:///",
    "sqlite:///x.db?journal=off",
    "sqlite:///x.db?busy_timeout=soon",
    "sqlite:///x.db?a=1&&",
    "/no/such/directory/store.db",
])
def test_bad_locations_raise_value_error_naming_them(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        SqliteProvider(bad)
    assert isinstance(info.value, ConfigurationError)
    assert repr(bad) in str(info.value)


def test_directory_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="directory"):
        SqliteProvider(tmp_path)


def test_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SqliteProvider(tmp_path / "x.db", synchronous="SOMETIMES")
    with pytest.raises(ValueError, match="busy_timeout"):
        SqliteProvider(tmp_path / "x.db", busy_timeout=-1)
    with pytest.raises(ValueError):
        SqliteProvider(42)  # type: ignore[arg-type]


def test_constructor_opens_nothing(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    store = SqliteProvider(tmp_path / "lazy.db")
    assert not (tmp_path / "lazy.db").exists()
    assert set(threading.enumerate()) == before
    assert not store._writer.started


# ------------------------------------------------------------------ migrations
async def test_migrations_recorded_and_reopen_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    iid = uid()
    store = SqliteProvider(path)
    await create(store, iid)
    await store.close()
    latest = migrations()[-1]
    rows = _sql(store, "SELECT version, name FROM schema_version ORDER BY version")
    assert rows == [(m.version, m.name) for m in migrations()]
    assert rows[-1] == (latest.version, latest.name)
    for _ in range(2):  # reopening applies nothing again and keeps the data
        again = SqliteProvider(path)
        assert await again.get_instance(iid) is not None
        await again.close()
    assert _sql(store, "SELECT count(*) FROM schema_version") == [(len(migrations()),)]
    tables = {r[0] for r in _sql(store, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"instances", "history", "orchestrator_queue", "instance_locks",
            "activity_queue", "schema_version"} <= tables


async def test_concurrent_first_opens_apply_migrations_once(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    stores = [SqliteProvider(path) for _ in range(4)]
    await asyncio.gather(*(create(s, uid()) for s in stores))
    for s in stores:
        await s.close()
    assert _sql(stores[0], "SELECT count(*) FROM schema_version") == [(len(migrations()),)]
    assert _sql(stores[0], "SELECT count(*) FROM instances") == [(4,)]


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    store = SqliteProvider(path)
    await create(store, uid())
    await store.close()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("INSERT INTO schema_version VALUES (999, '0999_future.sql', 0)")
        conn.commit()
    newer = SqliteProvider(path)
    with pytest.raises(ProviderError, match="newer"):
        await newer.get_instance("x")
    await newer.close()


async def test_a_store_of_the_previous_schema_opens_and_migrates(tmp_path: Path) -> None:
    """A file made by schema 1 (no workers table, no activity name column) with work in
    it: opening migrates it, the queued rows get their activity names, and everything
    of the new schema works on it."""
    from duroxy.history import ActivityWork
    from duroxy.providers.base import ExcludedWork, WorkerRecord

    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for stmt in migrations()[0].statements:
        conn.execute(stmt)
    conn.execute(queries()["create_schema_version"])
    conn.execute(queries()["record_migration"], (1, migrations()[0].name, time.time()))
    conn.execute("INSERT INTO instances (instance_id, name, version, state, execution_id, "
                 "created_at, updated_at, history_len) "
                 "VALUES ('old', 'flow', '1.0.0', 'RUNNING', 1, 0, 0, 0)")
    rows = [(2, ActivityWork("old", 1, 2, "lacking", '"x"', "flow", "1.0.0").to_json()),
            (3, ActivityWork("old", 1, 3, "known", '"y"', "flow", "1.0.0").to_json()),
            (4, '{"corrupt": ')]
    for event_id, payload in rows:
        conn.execute("INSERT INTO activity_queue (instance_id, execution_id, event_id, "
                     "payload, visible_at, enqueued_at) VALUES ('old', 1, ?, ?, 0, 0)",
                     (event_id, payload))
    conn.execute("INSERT INTO orchestrator_queue (instance_id, payload, visible_at) "
                 "VALUES ('old', '{}', 0)")
    conn.close()

    store = SqliteProvider(path)
    try:
        assert await store.list_workers() == []  # opening migrated the file
        assert _sql(store, "SELECT max(version) FROM schema_version") == [
            (migrations()[-1].version,)]
        assert _sql(store, "SELECT event_id, name FROM activity_queue ORDER BY event_id") == [
            (2, "lacking"), (3, "known"), (4, "")]
        skip = ExcludedWork(activities=frozenset({"lacking"}))
        items = await store.fetch_activity_items(HOLD, limit=10, exclude=skip)
        assert [i.work.name for i in items] == ["known"]  # the corrupt row is set aside
        assert [i.work.name for i in await store.fetch_activity_items(HOLD, limit=10)] == [
            "lacking"]
        assert await store.fetch_orchestration_items(HOLD, limit=10, exclude=ExcludedWork(
            orchestrations=frozenset({"flow"}))) == []
        w = WorkerRecord("w", "h", 1, "0.1.0", 1.0, time.time(), 10.0, 1, 1, "DEFAULT_ONLY")
        await store.record_heartbeat(w)
        assert await store.list_workers() == [w]
    finally:
        await store.close()


# ------------------------------------------------------------------ PRAGMAs
async def test_wal_and_full_sync_by_default(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "p.db")
    assert await _on_writer(store, "PRAGMA synchronous") == [(2,)]
    assert await _on_writer(store, "PRAGMA journal_mode") == [("wal",)]
    assert _sql(store, "PRAGMA journal_mode") == [("wal",)]  # persistent in the file
    await store.close()


async def test_normal_sync_opt_out(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "p.db", synchronous="NORMAL")
    await create(store, uid())
    assert await _on_writer(store, "PRAGMA synchronous") == [(1,)]
    await store.close()


async def test_lock_only_transactions_skip_the_fsync(tmp_path: Path) -> None:
    """Fetch, renew and abandon commit at NORMAL; anything that records results at FULL."""
    store = SqliteProvider(tmp_path / "p.db")
    iid = uid()
    await create(store, iid)
    (item,) = await store.fetch_orchestration_items(HOLD)
    level = await store._lock_op(lambda tx: tx.conn.execute("PRAGMA synchronous").fetchall())
    assert level == [(1,)]
    await store.ack_orchestration_item(item.lock_token, commit(started()))
    assert await _on_writer(store, "PRAGMA synchronous") == [(2,)]
    await store.close()


async def test_heartbeats_skip_the_fsync(tmp_path: Path) -> None:
    """A heartbeat is a background write: it commits at NORMAL, never at FULL."""
    from duroxy.providers.base import WorkerRecord

    store = SqliteProvider(tmp_path / "p.db")
    await create(store, uid())  # a durable commit: the connection is at FULL
    levels: list[str] = []
    store._writer.before_commit = lambda: levels.append(store._writer._sync_now)
    w = WorkerRecord("w", "h", 1, "0.1.0", 1.0, time.time(), 10.0, 1, 1, "DEFAULT_ONLY")
    await store.record_heartbeat(w, forget_before=time.time() - 86400)
    await store.record_heartbeat(w)
    assert levels == ["NORMAL", "NORMAL"]
    await store.close()


# ------------------------------------------------------------------ loops and threads
async def _one_turn(store: SqliteProvider, iid: str) -> None:
    await create(store, iid)
    (item,) = await store.fetch_orchestration_items(HOLD)
    await store.ack_orchestration_item(item.lock_token, commit(started()))


def test_usable_from_one_event_loop_after_another(tmp_path: Path) -> None:
    for store in (SqliteProvider(tmp_path / "loops.db"), SqliteProvider.in_memory()):
        ids = [uid(), uid()]
        asyncio.run(_one_turn(store, ids[0]))
        asyncio.run(_one_turn(store, ids[1]))

        async def check(s: SqliteProvider = store, ids: list[str] = ids) -> list[str | None]:
            states = [(await s.get_instance(i)) for i in ids]
            await s.close()
            return [r.state if r else None for r in states]

        assert asyncio.run(check()) == ["RUNNING", "RUNNING"]


def test_unclosed_store_does_not_keep_the_process_alive(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import asyncio, threading
        from duroxy.providers.sqlite import SqliteProvider
        from duroxy.testing.provider_suite.support import start_message
        stores = [SqliteProvider({str(tmp_path / "alive.db")!r}), SqliteProvider.in_memory()]
        async def main():
            for s in stores:
                await s.create_instance(start_message("i1"))
                assert (await s.get_instance("i1")) is not None
                assert (await s.read_history("i1")) == []  # on the file's reader thread
                await s.fetch_orchestration_items(60.0)
        asyncio.run(main())
        assert sum(t.name.startswith("duroxy-sqlite") for t in threading.enumerate()) == 3
        print("done", flush=True)
    """)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done"
    assert time.monotonic() - t0 < 10


async def test_close_is_idempotent_and_stops_threads(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "c.db")
    await create(store, uid())
    await store.list_executions("x")  # starts the reader thread
    threads = [store._writer.thread, store._reader.thread]
    assert all(t is not None and t.is_alive() for t in threads)
    await store.close()
    await store.close()
    for t in threads:
        assert t is not None
        t.join(5)
        assert not t.is_alive()
    with pytest.raises(ProviderError, match="closed"):
        await store.get_instance("x")
    with pytest.raises(ProviderError, match="closed"):
        await create(store, uid())


async def test_close_lets_queued_work_finish(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "c.db")
    release = _block_writer(store)
    ids = [uid() for _ in range(5)]
    pending = [asyncio.ensure_future(create(store, i)) for i in ids]
    await asyncio.sleep(0)  # let them submit
    closing = asyncio.ensure_future(store.close())
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*pending)
    await closing
    rows = _sql(store, "SELECT count(*) FROM instances")
    assert rows == [(5,)]


async def test_garbage_collected_store_stops_its_threads(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "gc.db")
    await create(store, uid())
    await store.list_executions("x")  # starts the reader thread
    threads = [store._writer.thread, store._reader.thread]
    del store
    gc.collect()
    for t in threads:
        assert t is not None
        t.join(5)
        assert not t.is_alive()


# ------------------------------------------------------------------ group commit
async def test_many_concurrent_acks_group_commit(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "g.db")
    n = 200
    ids = [uid() for _ in range(n)]
    await asyncio.gather(*(create(store, i) for i in ids))
    items = await store.fetch_orchestration_items(HOLD, limit=n)
    assert sorted(i.instance_id for i in items) == sorted(ids)
    await store.flush()
    before = store._writer.commits
    await asyncio.gather(*(
        store.ack_orchestration_item(it.lock_token, commit(
            started(), scheduled(2, input=f'"{it.instance_id}"'),
            activities=[work(it.instance_id, 2, input=f'"{it.instance_id}"')]))
        for it in items))
    await store.flush()
    commits = store._writer.commits - before
    assert 1 <= commits < n // 2, commits  # acks were grouped
    for iid in ids:
        rec = await store.get_instance(iid)
        assert rec is not None and (rec.state, rec.history_len) == ("RUNNING", 2)
        hist = await store.read_history(iid)
        assert [e.event_id for e in hist] == [1, 2]
        assert getattr(hist[1], "input", None) == f'"{iid}"'
    acts = await store.fetch_activity_items(HOLD, limit=n + 1)
    assert sorted(a.work.input or "" for a in acts) == sorted(f'"{i}"' for i in ids)
    await store.close()


def _hold_first_op(store: SqliteProvider, durable: bool) -> tuple[threading.Event,
                                                                   threading.Event]:
    """Start a write transaction whose first operation waits inside it until released;
    returns (entered, release)."""
    entered, release = threading.Event(), threading.Event()

    def hold(tx: Tx) -> None:
        entered.set()
        release.wait(10)

    store._writer.submit(Op(hold, True, None, None, durable=durable))
    assert entered.wait(10)
    return entered, release


async def _queued(store: SqliteProvider, n: int) -> None:
    """Let the event loop run until the writer's queue holds ``n`` operations."""
    for _ in range(1000):
        if store._writer._queue.qsize() >= n:
            return
        await asyncio.sleep(0.001)
    raise AssertionError("operations were not submitted")


async def test_writes_queued_while_a_transaction_runs_join_its_commit(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "late.db")
    await store.flush()
    before = store._writer.commits
    _entered, release = _hold_first_op(store, durable=True)
    ids = [uid() for _ in range(3)]
    first = [asyncio.ensure_future(create(store, i)) for i in ids[:2]]
    await _queued(store, 2)
    # a flush cannot join: it and everything after it wait for the next transaction
    flushed = asyncio.ensure_future(store.flush())
    await _queued(store, 3)
    last = asyncio.ensure_future(create(store, ids[2]))
    await _queued(store, 4)
    release.set()
    await asyncio.wait_for(asyncio.gather(*first, flushed, last), 10)
    assert store._writer.commits - before == 2  # (hold + 2 creates), (the last create)
    assert _sql(store, "SELECT count(*) FROM instances") == [(3,)]
    await store.close()


async def test_a_durable_write_does_not_join_a_transaction_that_skips_the_sync(
        tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "lazy.db")
    await store.flush()
    before = store._writer.commits
    _entered, release = _hold_first_op(store, durable=False)  # a lock-only transaction
    created = asyncio.ensure_future(create(store, uid()))
    await _queued(store, 1)
    release.set()
    await asyncio.wait_for(created, 10)
    assert store._writer.commits - before == 2  # the start got a synced commit of its own
    assert store._writer._sync_now == "FULL"
    await store.close()


async def test_failing_operation_in_a_group_rolls_back_only_itself(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "g.db")
    good, dup = uid(), uid()
    await create(store, good)
    await create(store, dup)
    items = {i.instance_id: i for i in await store.fetch_orchestration_items(HOLD, limit=5)}
    await store.flush()  # the fetch's locks came back before its commit landed
    before = store._writer.commits
    release = _block_writer(store)
    ops = [
        asyncio.ensure_future(store.ack_orchestration_item(
            items[good].lock_token, commit(started(), scheduled(2)))),
        # event id 2 twice: its history insert fails halfway and must leave nothing
        asyncio.ensure_future(store.ack_orchestration_item(
            items[dup].lock_token, commit(started(), scheduled(2), scheduled(2),
                                          messages=[raised(good)]))),
        asyncio.ensure_future(store.ack_orchestration_item("no-such-token", commit(started()))),
        asyncio.ensure_future(store.enqueue_orchestrator_message(raised(good, "late"))),
    ]
    await asyncio.sleep(0)  # each task runs up to its await: every op is queued
    release.set()
    results = await asyncio.gather(*ops, return_exceptions=True)
    assert results[0] == [] and results[3] is None  # the ack claimed no activity
    assert isinstance(results[1], ProviderError) and not isinstance(results[1], LockLost)
    assert isinstance(results[2], LockLost)
    # one transaction: the group, queued while the blocker ran, joined its commit
    assert store._writer.commits - before == 1
    assert [e.event_id for e in await store.read_history(good)] == [1, 2]
    assert await store.read_history(dup) == []
    rec = await store.get_instance(dup)
    assert rec is not None and rec.state == "PENDING"
    # the failed ack kept its lock and sent nothing; the good instance got the late event
    await store.ack_orchestration_item(items[dup].lock_token, commit(started()))
    (again,) = await store.fetch_orchestration_items(HOLD, limit=5)
    assert again.instance_id == good
    assert [getattr(m.message.event, "name", None) for m in again.messages
            if m.message is not None] == ["late"]
    await store.close()


@pytest.mark.parametrize("memory", [False, True])
async def test_writer_recovers_from_a_broken_transaction(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, memory: bool) -> None:
    store = SqliteProvider.in_memory() if memory else SqliteProvider(tmp_path / "r.db")
    before = uid()
    await create(store, before)
    release = _block_writer(store)
    # An operation that ends the group's transaction behind the worker's back.
    rogue = asyncio.ensure_future(store._write(lambda tx: tx.conn.execute("COMMIT")))
    victim = asyncio.ensure_future(create(store, uid()))
    await asyncio.sleep(0)  # both are queued behind the blocker
    with caplog.at_level(logging.ERROR, logger="duroxy.providers.sqlite"):
        release.set()
        results = await asyncio.gather(rogue, victim, return_exceptions=True)
    assert all(isinstance(r, ProviderError) and r.retryable for r in results), results
    assert "batch failed" in caplog.text
    iid = uid()
    await create(store, iid)  # the store carries on, with its data
    assert await store.get_instance(iid) is not None
    assert await store.get_instance(before) is not None
    await store.close()


async def test_cancelled_fetch_gives_its_locks_back(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "f.db")
    iid = uid()
    await create(store, iid)
    # 1. cancelled before the writer got to it: the fetch never runs
    release = _block_writer(store)
    task = asyncio.ensure_future(store.fetch_orchestration_items(HOLD))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.sleep(0)
    release.set()
    await _settle(store)
    # 2. cancelled while the writer was at its batch: the result is handed back at once
    entered, hold = threading.Event(), threading.Event()

    def hold_commit(tx: Tx) -> None:
        entered.set()
        hold.wait(10)

    release = _block_writer(store)
    store._writer.submit(Op(hold_commit, True, None, None))
    task = asyncio.ensure_future(store.fetch_orchestration_items(HOLD))
    await asyncio.sleep(0)
    release.set()
    while not entered.is_set():
        await asyncio.sleep(0.001)
    task.cancel()
    await asyncio.sleep(0)
    hold.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Outcomes reach the loop in commit order: once a later write has answered, the
    # fetch's result was handed back; once another has, that abandon is committed too.
    await _settle(store)
    await _settle(store)
    items = await store.fetch_orchestration_items(HOLD)
    assert [i.instance_id for i in items] == [iid]
    # fetched once by the cancelled call, whose lock was given back unused: that
    # delivery is not counted as an attempt
    assert items[0].attempt == 1
    await store.close()


async def test_fetch_finds_every_instance_behind_a_burst(tmp_path: Path) -> None:
    """A fetch reads a bounded number of queue rows per scan; one instance with many
    messages must not hide the instances behind it."""
    store = SqliteProvider(tmp_path / "burst.db")
    busy, quiet = uid("busy"), uid("quiet")
    await create(store, busy)
    for n in range(40):
        await store.enqueue_orchestrator_message(raised(busy, f"e{n}"))
    await create(store, quiet)
    items = await store.fetch_orchestration_items(HOLD, limit=2)
    assert [i.instance_id for i in items] == [busy, quiet]
    assert len(items[0].messages) == 41 and len(items[1].messages) == 1
    await store.close()


async def test_empty_fetches_commit_nothing(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "e.db")
    await _settle(store)
    before = store._writer.commits
    assert await store.fetch_orchestration_items(HOLD, limit=5) == []
    assert await store.fetch_activity_items(HOLD, limit=5) == []
    assert store._writer.commits == before
    await create(store, uid())
    assert len(await store.fetch_orchestration_items(HOLD, limit=5)) == 1
    await store.flush()  # the fetch's locks come back before its commit lands
    assert store._writer.commits == before + 2
    await store.close()


async def test_fetch_behind_an_ack_in_one_batch_sees_its_work(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "b.db")
    iid = uid()
    await create(store, iid)
    (item,) = await store.fetch_orchestration_items(HOLD)
    release = _block_writer(store)
    ack = asyncio.ensure_future(store.ack_orchestration_item(
        item.lock_token, commit(started(), scheduled(2), activities=[work(iid, 2)])))
    fetch = asyncio.ensure_future(store.fetch_activity_items(HOLD, limit=5))
    await asyncio.sleep(0)  # both are queued behind the blocker
    release.set()
    await ack
    acts = await fetch
    assert [(a.work.instance_id, a.work.event_id) for a in acts] == [(iid, 2)]
    await store.close()


# ------------------------------------------------------------------ listeners
async def test_listeners_run_after_commit_and_may_fail(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    store = SqliteProvider(tmp_path / "l.db")
    seen: list[tuple[str | None, int]] = []

    def visible(instance_id: str | None) -> None:
        # Runs after the commit: another connection already sees the row.
        assert instance_id is not None
        n = _sql(store, "SELECT count(*) FROM orchestrator_queue WHERE instance_id = ?",
                 (instance_id,))[0][0]
        seen.append((instance_id, n))

    def broken(instance_id: str | None) -> None:
        raise RuntimeError("listener bug")

    store.listen("orchestrator", broken)
    unlisten = store.listen("orchestrator", visible)
    iid = uid()
    with caplog.at_level(logging.ERROR, logger="duroxy.providers.sqlite"):
        await create(store, iid)
    assert seen == [(iid, 1)]
    assert "listener failed" in caplog.text
    unlisten()
    await create(store, uid())
    assert len(seen) == 1
    with pytest.raises(ValueError):
        store.listen("nowhere", visible)  # type: ignore[arg-type]
    await store.close()


async def test_ack_announces_messages_that_arrived_during_the_lock(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "l.db")
    iid = uid()
    await create(store, iid)
    (item,) = await store.fetch_orchestration_items(HOLD)
    await store.enqueue_orchestrator_message(raised(iid))
    calls: list[str | None] = []
    store.listen("orchestrator", calls.append)
    await store.ack_orchestration_item(item.lock_token, commit(started()))
    await store.flush()  # listeners hear of a commit once it landed
    assert calls == [iid]
    await store.close()


# ------------------------------------------------------------------ other processes
async def test_waits_for_another_writer_instead_of_failing(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "busy.db", busy_timeout=5)
    await create(store, uid())
    with closing(sqlite3.connect(tmp_path / "busy.db", isolation_level=None,
                                 check_same_thread=False)) as other:
        other.execute("BEGIN IMMEDIATE")
        release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
        release.start()
        t0 = time.monotonic()
        await create(store, uid())
        assert time.monotonic() - t0 >= 0.25
        release.join()
    await store.close()


async def test_busy_beyond_the_timeout_is_a_retryable_provider_error(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "busy.db", busy_timeout=0.1)
    await create(store, uid())
    with closing(sqlite3.connect(tmp_path / "busy.db", isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(ProviderError) as info:
            await create(store, uid())
        assert info.value.retryable
        other.execute("ROLLBACK")
    await create(store, uid())  # works again once the lock is gone
    await store.close()


def test_a_full_disk_is_a_retryable_provider_error(tmp_path: Path) -> None:
    # Room may come back (as with PostgreSQL's disk_full, retryable too); a constraint
    # violated does not.
    with closing(sqlite3.connect(tmp_path / "full.db", isolation_level=None)) as conn:
        conn.execute("CREATE TABLE t (x BLOB PRIMARY KEY)")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages + 1}")
        with pytest.raises(sqlite3.OperationalError) as full:
            conn.execute("INSERT INTO t VALUES (zeroblob(100000))")
        conn.execute("INSERT INTO t VALUES (x'01')")
        with pytest.raises(sqlite3.IntegrityError) as duplicate:
            conn.execute("INSERT INTO t VALUES (x'01')")
    err = provider_error(full.value)
    assert isinstance(err, ProviderError) and err.retryable, err
    assert "full" in str(err) and err.__cause__ is full.value
    err = provider_error(duplicate.value)
    assert isinstance(err, ProviderError) and not err.retryable, err


async def test_two_stores_on_one_file_share_work(tmp_path: Path) -> None:
    a, b = SqliteProvider(tmp_path / "two.db"), SqliteProvider(tmp_path / "two.db")
    ids = [uid() for _ in range(20)]
    for i in ids:
        await create(a, i)
    got_a = await a.fetch_orchestration_items(HOLD, limit=10)
    got_b = await b.fetch_orchestration_items(HOLD, limit=50)
    assert len(got_a) == 10 and len(got_b) == 10
    assert sorted(i.instance_id for i in got_a + got_b) == sorted(ids)
    with pytest.raises(LockLost):  # b cannot ack what a holds under a wrong token
        await b.ack_orchestration_item(got_a[0].lock_token + "x", commit(started()))
    await b.ack_orchestration_item(got_a[0].lock_token, commit(started()))  # tokens are global
    await b.flush()  # an ack may return before its commit lands; a's reads see it then
    rec = await a.get_instance(got_a[0].instance_id)
    assert rec is not None and rec.state == "RUNNING"
    await a.close()
    await b.close()


# ------------------------------------------------------------------ stored data
async def test_undecodable_activity_row_is_set_aside(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    store = SqliteProvider(tmp_path / "a.db")
    iid = uid()
    await create(store, iid)
    (item,) = await store.fetch_orchestration_items(HOLD)
    await store.ack_orchestration_item(item.lock_token, commit(
        started(), scheduled(2), scheduled(3),
        activities=[work(iid, 2), work(iid, 3)]))
    await store._write(lambda tx: tx.conn.execute(
        "UPDATE activity_queue SET payload = 'garbage' WHERE event_id = 2"))
    with caplog.at_level(logging.ERROR, logger="duroxy.providers.sqlite"):
        acts = await store.fetch_activity_items(HOLD, limit=10)
    assert [a.work.event_id for a in acts] == [3]
    assert "does not decode" in caplog.text
    await store.ack_activity(acts[0].lock_token, activity_completion(acts[0].work))
    assert await store.fetch_activity_items(0.0, limit=10) == []
    await store.close()


async def test_history_len_follows_the_current_execution(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "h.db")
    iid = uid()
    await create(store, iid)
    (item,) = await store.fetch_orchestration_items(HOLD)
    await store.ack_orchestration_item(item.lock_token, commit(started(), scheduled(2)))
    await store.enqueue_orchestrator_message(raised(iid))
    (item,) = await store.fetch_orchestration_items(HOLD)
    # continue-as-new: execution 2 starts with its own history
    await store.ack_orchestration_item(item.lock_token, commit(
        started(execution_id=2), execution_id=2))
    rec = await store.get_instance(iid)
    assert rec is not None and (rec.execution_id, rec.history_len) == (2, 1)
    assert await store.list_executions(iid) == [1, 2]
    first = await store.read_history(iid, 1)
    assert [e.event_id for e in first] == [1, 2]
    latest = await store.read_history(iid)
    assert isinstance(latest[0], OrchestrationStarted) and latest[0].execution_id == 2
    await store.close()


# ------------------------------------------------------------------ the SQL loader
def test_named_queries_parse() -> None:
    text = "-- header\n-- name: a\n-- about a\nSELECT 1;\n\n-- name: b\nSELECT\n  2;\n"
    assert parse_queries(text) == {"a": "SELECT 1", "b": "SELECT\n  2"}
    with pytest.raises(ValueError, match="twice"):
        parse_queries("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;")
    with pytest.raises(ValueError, match="empty"):
        parse_queries("-- name: a\n-- nothing\n")
    assert {"orchestration_candidates", "claim_messages", "claim_plain"} <= set(queries())


def test_scripts_split_into_complete_statements() -> None:
    script = textwrap.dedent("""
        -- comment; with a semicolon
        CREATE TABLE t (x TEXT DEFAULT ';');
        CREATE TRIGGER tr AFTER INSERT ON t BEGIN
            UPDATE t SET x = 'a;b';
        END;
    """)
    stmts = split_statements(script)
    assert len(stmts) == 2 and stmts[1].startswith("CREATE TRIGGER")
    with closing(sqlite3.connect(":memory:")) as conn:
        for s in stmts:
            conn.execute(s)
    with pytest.raises(ValueError, match="incomplete"):
        split_statements("SELECT 1")


def test_migrations_are_numbered_from_one() -> None:
    found = migrations()
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert found[0].name == "0001_initial.sql" and found[0].statements


def test_statements_bind_plain_or_named_parameters_never_numbered() -> None:
    """Numbered placeholders (``?1``) bound to a tuple draw a DeprecationWarning on
    Python 3.12 (an error from 3.14); plain ``?`` bound to a tuple and ``:name`` bound
    to a dict work on every version. A statement uses one of the two."""
    statements = dict(queries())
    for mig in migrations():
        statements.update({f"{mig.name}#{i}": s for i, s in enumerate(mig.statements)})
    for name, sql in statements.items():
        code = re.sub(r"'(?:[^']|'')*'", "''", sql)  # string literals hold no parameter
        assert not re.search(r"\?\d|[$@][A-Za-z_]", code), f"{name}: {sql}"
        assert "?" not in code or not re.search(r"(?<![:\w]):[A-Za-z_]", code), \
            f"{name} mixes ? and :name parameters"

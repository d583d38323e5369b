"""The SQLite writer: nothing a transaction produced leaves it before its COMMIT
returned (commit first, then effects), reads on the caller's thread, and fetches parked
in the writer thread (long polling)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from duroxy.errors import ProviderError
from duroxy.history import EventRaised, OrchestrationCompleted
from duroxy.providers.base import InstanceRecord
from duroxy.providers.sqlite import SqliteProvider, _admin_ops, _ops, _tx, _worker
from duroxy.providers.sqlite import provider as sqlite_provider
from duroxy.providers.sqlite._inline import DECLINED, InlineReader
from duroxy.testing.provider_suite.support import (
    HOLD,
    commit,
    create,
    raised,
    scheduled,
    started,
    uid,
    work,
)


def _hold_commits(store: SqliteProvider) -> tuple[threading.Event, threading.Event]:
    """Hold every write transaction open right before its COMMIT until released;
    returns (entered, release)."""
    entered, release = threading.Event(), threading.Event()
    # The held commit must block the writer thread, never the test's own event loop.
    store._inline_writes = False

    def hold() -> None:
        entered.set()
        release.wait(10)

    store._writer.before_commit = hold
    return entered, release


async def _parked(store: SqliteProvider, wait: float) -> asyncio.Future[list[Any]]:
    """A poll of an open store, parked in its writer by the time this returns."""
    await store.flush()
    poll = asyncio.ensure_future(store.poll_orchestration_items(HOLD, 5, wait=wait))
    await asyncio.sleep(0.05)
    assert not poll.done()
    return poll


# ------------------------------------------------------------------ commit first
async def test_an_ack_and_its_claims_come_back_only_once_committed(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "e.db")
    iid = uid()
    await create(store, iid)
    (item,) = await store.fetch_orchestration_items(HOLD)
    entered, release = _hold_commits(store)
    turn = commit(started(), scheduled(2), activities=[work(iid, 2)])
    turn.claim_activities, turn.claim_lock_timeout = 1, HOLD
    ack = asyncio.ensure_future(store.ack_orchestration_item(item.lock_token, turn))
    assert await asyncio.to_thread(entered.wait, 5)
    await asyncio.sleep(0.05)
    assert not ack.done()  # its claimed activity must not run before the commit
    before = store._writer.commits
    release.set()
    (claimed,) = await asyncio.wait_for(ack, 5)
    assert store._writer.commits == before + 1
    assert claimed.work.instance_id == iid
    rec = await store.get_instance(iid)
    assert rec is not None and rec.state == "RUNNING"
    await store.close()


async def test_client_writes_come_back_only_once_durable(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "d.db")
    iid = uid()
    entered, release = _hold_commits(store)
    created = asyncio.ensure_future(create(store, iid))
    while not entered.is_set():
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.05)
    assert not created.done()  # still inside the uncommitted transaction
    release.set()
    await asyncio.wait_for(created, 5)
    other = SqliteProvider(tmp_path / "d.db")  # another connection sees it at once
    rec = await other.get_instance(iid)
    assert rec is not None and rec.state == "PENDING"
    await other.close()
    await store.close()


async def test_a_fetch_comes_back_only_once_its_locks_are_committed(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "f.db")
    iid = uid()
    await create(store, iid)
    entered, release = _hold_commits(store)
    fetch = asyncio.ensure_future(store.fetch_orchestration_items(HOLD))
    assert await asyncio.to_thread(entered.wait, 5)
    await asyncio.sleep(0.05)
    assert not fetch.done()
    release.set()
    (item,) = await asyncio.wait_for(fetch, 5)
    assert item.instance_id == iid
    other = SqliteProvider(tmp_path / "f.db")
    assert await other.fetch_orchestration_items(HOLD) == []  # the lock is committed
    await other.close()
    await store.close()


# ------------------------------------------------------------------ inline reads
async def test_a_one_row_read_runs_on_the_callers_thread_when_nothing_is_pending(
        tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "i.db")
    iid = uid()
    await create(store, iid)
    rec = await store.get_instance(iid)
    assert rec is not None and rec.state == "PENDING" and rec.instance_id == iid
    assert await store.get_instance("nobody") is None
    # Neither read went through the reader thread; a history read (unbounded) does.
    assert not store._reader.started
    assert [type(e).__name__ for e in await store.read_history(iid)] == []
    assert store._reader.started
    await store.close()
    with pytest.raises(ProviderError, match="closed"):
        await store.get_instance(iid)


async def test_inline_reads_decline_rather_than_wait(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "j.db")
    iid = uid()
    await create(store, iid)
    inline = store._inline
    assert inline is not None

    def busy(tx: Any) -> None:
        raise sqlite3.OperationalError("database is locked")

    assert inline.read(busy) is DECLINED
    # In use by this very thread (or any other): decline, never wait for the lock.
    assert inline.read(lambda tx: inline.read(lambda tx2: 1)) is DECLINED
    assert inline.read(lambda tx: tx.conn.execute("SELECT 7").fetchone()[0]) == 7

    def broken(tx: Any) -> None:
        tx.conn.execute("SELECT * FROM no_such_table")

    with pytest.raises(ProviderError, match="no such table"):
        inline.read(broken)
    # While a transaction is open, an inline read sees the last committed state.
    (item,) = await store.fetch_orchestration_items(HOLD)
    entered, release = _hold_commits(store)
    ack = asyncio.ensure_future(store.ack_orchestration_item(item.lock_token,
                                                             commit(started())))
    assert await asyncio.to_thread(entered.wait, 5)
    rec = inline.read(lambda tx: _admin_ops.get_instance(tx, iid))
    assert isinstance(rec, InstanceRecord) and rec.state == "PENDING"  # not DECLINED
    release.set()
    await asyncio.wait_for(ack, 5)
    rec = await asyncio.wait_for(store.get_instance(iid), 5)
    assert rec is not None and rec.state == "RUNNING"
    inline.close()
    assert inline.read(lambda tx: 1) is DECLINED
    await store.close()


async def test_an_inline_connection_that_cannot_open_declines_or_raises(
        tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "o.db")
    failures = [sqlite3.OperationalError("database is locked"),
                sqlite3.OperationalError("unable to open database file")]

    def opener() -> sqlite3.Connection:
        raise failures.pop(0)

    inline = InlineReader(opener)
    assert inline.read(lambda tx: 1) is DECLINED  # busy: the reader thread takes it
    with pytest.raises(ProviderError, match="unable to open") as err:
        inline.read(lambda tx: 1)
    assert isinstance(err.value.__cause__, sqlite3.OperationalError)
    await store.close()


async def test_inline_reads_from_many_threads_all_answer(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "k.db")
    ids = [uid() for _ in range(5)]
    for iid in ids:
        await create(store, iid)

    def reads() -> list[str | None]:
        async def go() -> list[str | None]:
            recs = [await store.get_instance(iid) for iid in ids * 40]
            return [r.instance_id if r else None for r in recs]
        return asyncio.run(go())

    results: list[list[str | None]] = []
    threads = [threading.Thread(target=lambda: results.append(reads())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [ids * 40] * 4
    await store.close()


# ------------------------------------------------------------------ parked fetches
async def test_poll_without_wait_is_a_fetch(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "p.db")
    assert store.long_poll
    t0 = time.monotonic()
    assert await store.poll_orchestration_items(HOLD, 5, wait=0) == []
    assert time.monotonic() - t0 < 1.0
    iid = uid()
    await create(store, iid)
    assert [i.instance_id for i in await store.poll_orchestration_items(HOLD, 5)] == [iid]
    await store.close()


async def test_parked_poll_takes_a_start_in_the_same_commit(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "p.db")
    poll = await _parked(store, 30)
    before = store._writer.commits
    iid = uid()
    t0 = time.monotonic()
    await create(store, iid)
    items = await asyncio.wait_for(poll, 5)
    assert time.monotonic() - t0 < 5
    assert [i.instance_id for i in items] == [iid]
    assert items[0].instance is not None and items[0].instance.state == "PENDING"
    await store.flush()
    assert store._writer.commits == before + 1  # the start and the lock: one commit
    # The lock holds: nobody else gets the instance.
    assert await store.fetch_orchestration_items(HOLD) == []
    await store.close()


async def _due_later(store: SqliteProvider, delay: float) -> tuple[str, float]:
    """An instance, not locked, whose one queued message ("later") falls due ``delay``
    seconds from now; and that due time."""
    iid = uid()
    await create(store, iid)
    (item,) = await store.fetch_orchestration_items(HOLD)
    due = time.time() + delay
    await store.ack_orchestration_item(item.lock_token, commit(
        started(), messages=[raised(iid, "later", visible_at=due)]))
    return iid, due


def _calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[tuple[float, Any]]:
    """Wraps ``_ops.<name>``: each call's time and result, in order (patch it before the
    store is built: the writer takes some of these functions when it is created)."""
    calls: list[tuple[float, Any]] = []
    fn = getattr(_ops, name)

    def recorded(tx: Any) -> Any:
        at = time.time()
        calls.append((at, result := fn(tx)))
        return result

    monkeypatch.setattr(_ops, name, recorded)
    return calls


async def test_parked_poll_wakes_when_a_delayed_message_falls_due(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "t.db")
    iid, due = await _due_later(store, 0.3)
    t0 = time.monotonic()
    items = await asyncio.wait_for(
        store.poll_orchestration_items(HOLD, 5, wait=20), 10)
    woke = time.time()
    assert time.monotonic() - t0 < 5  # long before the poll's own deadline
    assert woke >= due
    assert [i.instance_id for i in items] == [iid]
    events = [m.message.event for m in items[0].messages if m.message]
    assert len(events) == 1 and isinstance(events[0], EventRaised)
    assert events[0].name == "later"
    await store.close()


async def test_a_poll_woken_by_a_message_falling_due_fetches_without_probing_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SqliteProvider(tmp_path / "t.db")
    iid, _ = await _due_later(store, 0.2)
    probes = _calls(monkeypatch, "probe_orchestration_items")
    items = await asyncio.wait_for(store.poll_orchestration_items(HOLD, 5, wait=20), 10)
    assert [i.instance_id for i in items] == [iid]
    # the first look, which parked it; none once the message fell due
    assert [answer for _, answer in probes] == [[]]
    await store.close()


async def test_the_writer_warms_up_a_moment_before_a_message_falls_due(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    warmed = _calls(monkeypatch, "warm_up")
    # The thread wakes 0.6 ms before the due time to warm up, and skips the warm-up
    # when it wakes after the due time. A thread on a busy machine often wakes more
    # than 0.6 ms late: here it wakes 50 ms ahead (after an idle spell of 100 ms), so
    # that only a wake-up later than that misses the warm-up.
    monkeypatch.setattr(_worker, "_WARM_UP_AHEAD_S", 0.05)
    monkeypatch.setattr(_worker, "_WARM_UP_IDLE_S", 0.1)
    store = SqliteProvider(tmp_path / "t.db")
    for _attempt in range(3):
        warmed.clear()
        iid, due = await _due_later(store, 0.2)
        items = await asyncio.wait_for(store.poll_orchestration_items(HOLD, 5, wait=20), 10)
        assert [i.instance_id for i in items] == [iid]
        assert len(warmed) <= 1  # never more than once
        if warmed:
            break
        await store.ack_orchestration_item(items[0].lock_token, commit())
    # once, just before (the bound after allows for a slow thread wake-up)
    assert len(warmed) == 1 and due - 0.1 < warmed[0][0] < due + 0.05
    # a poll whose deadline comes before the next due time sleeps to its deadline only
    await store.ack_orchestration_item(items[0].lock_token, commit(
        messages=[raised(iid, "much later", visible_at=time.time() + 30)]))
    assert await store.poll_orchestration_items(HOLD, 5, wait=0.1) == []
    assert len(warmed) == 1
    await store.close()


async def test_a_warm_up_lead_longer_than_the_idle_spell_warms_once_and_the_writer_lives(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # After the warm-up the due time is nearer than the lead: the writer sleeps to it
    # (it once computed a negative sleep there, and its thread died).
    warmed = _calls(monkeypatch, "warm_up")
    monkeypatch.setattr(_worker, "_WARM_UP_AHEAD_S", 0.05)
    monkeypatch.setattr(_worker, "_WARM_UP_IDLE_S", 0.002)
    store = SqliteProvider(tmp_path / "t.db")
    iid, _due = await _due_later(store, 0.2)
    items = await asyncio.wait_for(store.poll_orchestration_items(HOLD, 5, wait=20), 10)
    assert [i.instance_id for i in items] == [iid]
    assert len(warmed) <= 1
    await asyncio.wait_for(store.ack_orchestration_item(items[0].lock_token, commit()), 5)
    thread = store._writer._thread
    assert thread is not None and thread.is_alive()
    await store.close()


def test_a_warm_up_never_waits_for_another_writer_and_leaves_no_transaction(
        tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with (closing(sqlite3.connect(path, isolation_level=None, timeout=30)) as conn,
          closing(sqlite3.connect(path, isolation_level=None)) as other):
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE orchestrator_queue (visible_at REAL)")
        conn.execute("PRAGMA busy_timeout = 30000")
        other.execute("BEGIN IMMEDIATE")  # another process's write lock
        t0 = time.monotonic()
        _ops.warm_up(_tx.Tx(conn))
        assert time.monotonic() - t0 < 1
        assert not conn.in_transaction
        assert conn.execute("PRAGMA busy_timeout").fetchall() == [(30000,)]
        other.execute("ROLLBACK")
        _ops.warm_up(_tx.Tx(conn))  # with the lock free: taken and given back
        assert not conn.in_transaction
        other.execute("BEGIN IMMEDIATE")  # free again
        other.execute("ROLLBACK")


async def test_parked_poll_answers_empty_at_its_deadline(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "d.db")
    t0 = time.monotonic()
    assert await store.poll_orchestration_items(HOLD, 5, wait=0.2) == []
    assert 0.15 <= time.monotonic() - t0 < 3
    await store.close()


async def test_parked_poll_finds_work_of_another_process_at_its_deadline(
        tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "o.db")
    other = SqliteProvider(tmp_path / "o.db")  # its commits do not wake our writer
    poll = await _parked(store, 0.3)
    iid = uid()
    await create(other, iid)
    items = await asyncio.wait_for(poll, 5)
    assert [i.instance_id for i in items] == [iid]
    await other.close()
    await store.close()


async def test_cancelled_poll_takes_no_lock(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "c.db")
    poll = await _parked(store, 30)
    poll.cancel()
    with pytest.raises(asyncio.CancelledError):
        await poll
    iid = uid()
    await create(store, iid)
    items = await store.fetch_orchestration_items(HOLD)
    assert [i.instance_id for i in items] == [iid]
    assert items[0].attempt == 1
    await store.close()


async def test_close_answers_a_parked_poll(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "x.db")
    poll = await _parked(store, 30)
    await store.close()
    assert await asyncio.wait_for(poll, 5) == []


def _fail_commits(store: SqliteProvider, times: int) -> list[bool]:
    """Make the next ``times`` COMMITs fail as a full disk would; returns the record."""
    failed: list[bool] = []

    def fail() -> None:
        if len(failed) < times:
            failed.append(True)
            raise sqlite3.OperationalError("database or disk is full")

    store._writer.before_commit = fail
    return failed


async def test_a_fetch_whose_commit_fails_hands_out_no_lock(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "x.db")
    iid = uid()
    await create(store, iid)
    failed = _fail_commits(store, 1)
    with pytest.raises(ProviderError, match="disk is full") as err:
        await store.fetch_orchestration_items(HOLD)
    assert failed and err.value.retryable
    # Nothing changed: the start message is still there for the next fetch.
    (again,) = await store.fetch_orchestration_items(HOLD)
    assert again.instance_id == iid and again.attempt == 1
    rec = await store.get_instance(iid)
    assert rec is not None and rec.state == "PENDING"
    await store.close()


async def test_an_ack_whose_commit_fails_claims_nothing_and_keeps_the_lock(
        tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "y.db")
    iid = uid()
    await create(store, iid)
    (item,) = await store.fetch_orchestration_items(HOLD)
    turn = commit(started(), scheduled(2), scheduled(3),
                  activities=[work(iid, 2), work(iid, 3)])
    turn.claim_activities, turn.claim_lock_timeout = 2, HOLD
    _fail_commits(store, 1)
    with pytest.raises(ProviderError, match="disk is full"):
        await store.ack_orchestration_item(item.lock_token, turn)
    # No activity row, no history: a worker can only ever run what was committed.
    assert await store.fetch_activity_items(HOLD, 10) == []
    assert await store.read_history(iid) == []
    # The turn is still locked by its worker, which may commit it again.
    claimed = await store.ack_orchestration_item(item.lock_token, turn)
    assert len(claimed) == 2
    assert [e.kind for e in await store.read_history(iid)] == [
        "OrchestrationStarted", "ActivityScheduled", "ActivityScheduled"]
    await store.close()


# ------------------------------------------------------------------ the end of an instance
async def _finish(store: SqliteProvider, iid: str) -> None:
    (item,) = await store.fetch_orchestration_items(HOLD)
    await store.ack_orchestration_item(item.lock_token, commit(
        started(), OrchestrationCompleted(event_id=2, ts=1, output='"done"'),
        state="COMPLETED", output='"done"'))
    await store.flush()


async def test_a_waiter_woken_by_the_end_gets_the_final_record_without_a_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SqliteProvider(tmp_path / "t.db")
    iid = uid()
    await create(store, iid)
    woken: list[str | None] = []
    unlisten = store.listen("terminal", woken.append)
    await _finish(store, iid)
    assert woken == [iid]
    reads: list[str] = []
    read = _admin_ops.get_instance

    def counted(tx: _tx.Tx, i: str) -> InstanceRecord | None:
        reads.append(i)
        return read(tx, i)

    monkeypatch.setattr(_admin_ops, "get_instance", counted)
    rec = await store.get_instance(iid)
    assert rec is not None and rec.state == "COMPLETED" and rec.output == '"done"'
    assert rec.history_len == 2 and reads == []
    again = await store.get_instance(iid)  # kept for one read only
    assert again == rec and len(reads) == 1
    unlisten()
    await store.close()


async def test_a_delete_drops_the_kept_final_record(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "d.db")
    iid = uid()
    await create(store, iid)
    unlisten = store.listen("terminal", lambda _iid: None)
    await _finish(store, iid)
    assert await store.delete_instance(iid) == 1
    assert await store.get_instance(iid) is None
    unlisten()
    await store.close()


async def test_without_a_terminal_listener_nothing_is_kept(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "n.db")
    iid = uid()
    await create(store, iid)
    await _finish(store, iid)
    assert store._listeners.finals.take(iid) is None
    rec = await store.get_instance(iid)
    assert rec is not None and rec.state == "COMPLETED"
    await store.close()


async def test_a_lock_given_back_does_not_count_as_an_attempt(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "g.db")
    iid = uid()
    await create(store, iid)
    (item,) = await store.fetch_orchestration_items(HOLD)
    assert item.attempt == 1
    store._give_back_orchestration_items([item])  # its fetch's caller went away
    await store.flush()
    (again,) = await store.fetch_orchestration_items(HOLD)
    assert again.instance_id == iid and again.attempt == 1
    await store.abandon_orchestration_item(again.lock_token)  # a real abandon counts
    (third,) = await store.fetch_orchestration_items(HOLD)
    assert third.attempt == 2
    await store.close()


# ------------------------------------------------------------------ writes on the caller's thread
async def _thread_of_write(store: SqliteProvider) -> Any:
    # Once the writer thread is asleep (it takes its lock back for a moment after each
    # batch, and a write arriving right then is handed to it instead).
    for _ in range(500):
        if not store._writer._busy.locked():
            break
        await asyncio.sleep(0.001)
    return await store._write(lambda tx: threading.get_ident())


async def test_a_write_runs_on_the_callers_thread_when_the_writer_is_idle(
        tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "w.db")
    await create(store, uid())  # the first write opens the connection on the writer
    writer = store._writer.thread
    assert writer is not None
    assert await _thread_of_write(store) == threading.get_ident()
    # Committed like any other write: another connection sees it at once.
    iid = uid()
    await create(store, iid)
    other = SqliteProvider(tmp_path / "w.db", inline_writes=False)
    rec = await other.get_instance(iid)
    assert rec is not None and rec.state == "PENDING"
    await other.close()
    # Switched off, every write goes to the writer thread.
    store._inline_writes = False
    assert await _thread_of_write(store) == writer.ident
    await store.close()


async def test_a_write_goes_to_the_writer_while_the_loop_has_other_work(
        tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "w.db")
    await create(store, uid())
    writer = store._writer.thread
    assert writer is not None
    # A burst of other work ready to run (a fan-in's completions, say): the write goes
    # to the writer thread, where it may share a commit with theirs.
    loop = asyncio.get_running_loop()
    for _ in range(sqlite_provider.IDLE_READY + 1):
        loop.call_soon(lambda: None)
    assert await _thread_of_write(store) == writer.ident
    await store.close()


async def test_a_write_goes_to_the_writer_while_the_writer_works(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "w.db")
    await create(store, uid())
    writer = store._writer.thread
    assert writer is not None
    entered, release = threading.Event(), threading.Event()

    def hold(tx: Any) -> None:
        entered.set()
        release.wait(10)

    loop = asyncio.get_running_loop()
    held: asyncio.Future[Any] = loop.create_future()
    store._writer.submit(_tx.Op(hold, True, loop, held))  # straight to the writer thread
    assert await asyncio.to_thread(entered.wait, 5)
    second = asyncio.ensure_future(store._write(lambda tx: threading.get_ident()))
    await asyncio.sleep(0.02)
    assert not second.done()  # queued behind the held operation, not run here
    release.set()
    await held
    assert await second == writer.ident
    await store.close()


async def test_a_write_meeting_another_process_lock_never_blocks_the_loop(
        tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "w.db", busy_timeout=5)
    await create(store, uid())
    writer = store._writer.thread
    assert writer is not None
    other = sqlite3.connect(tmp_path / "w.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    try:
        write = asyncio.ensure_future(_thread_of_write(store))
        ticks = 0
        for _ in range(10):  # the loop keeps running while the writer waits for the lock
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 10 and not write.done()
    finally:
        other.execute("COMMIT")
        other.close()
    assert await asyncio.wait_for(write, 5) == writer.ident
    await store.close()


async def test_a_start_written_on_the_callers_thread_goes_to_a_parked_fetch(
        tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "w.db")
    poll = await _parked(store, 30)
    iid = uid()
    commits = store._writer.commits
    await create(store, iid)
    (item,) = await asyncio.wait_for(poll, 5)
    assert item.instance_id == iid
    assert store._writer.commits == commits + 1  # one transaction: the start and its lock
    await store.close()


async def test_a_timer_written_on_the_callers_thread_wakes_a_parked_fetch_on_time(
        tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "w.db")
    iid, due = await _due_later(store, 0.2)  # an ack on this thread, with a delayed message
    poll = await _parked(store, 30)
    (item,) = await asyncio.wait_for(poll, 5)
    assert item.instance_id == iid and time.time() >= due
    await store.close()


async def test_writes_from_many_loops_and_threads_all_commit(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "w.db")
    await create(store, uid())
    ids = [uid() for _ in range(40)]

    def in_thread(chunk: list[str]) -> None:
        async def go() -> None:
            for iid in chunk:
                await create(store, iid)
        asyncio.run(go())

    await asyncio.gather(*(asyncio.to_thread(in_thread, ids[i::4]) for i in range(4)),
                         *(create(store, uid()) for _ in range(10)))
    for iid in ids:
        rec = await store.get_instance(iid)
        assert rec is not None and rec.state == "PENDING"
    await store.close()


async def test_a_poll_cancelled_after_its_items_came_gives_them_back(tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "w.db")
    poll = await _parked(store, 30)
    iid = uid()
    await create(store, iid)  # written here: the parked poll's items are already set
    assert not poll.done()  # ... but the poll's task has not run since
    poll.cancel()
    with pytest.raises(asyncio.CancelledError):
        await poll
    await store.flush()
    (item,) = await store.fetch_orchestration_items(HOLD)  # given back, not held
    assert item.instance_id == iid and item.attempt == 1
    await store.close()


async def test_a_fetch_parked_on_the_callers_thread_is_answered_at_its_deadline(
        tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "w.db")
    await create(store, uid())
    (_item,) = await store.fetch_orchestration_items(HOLD)  # nothing left to fetch
    await _thread_of_write(store)  # the writer thread is asleep
    t0 = time.monotonic()
    assert await asyncio.wait_for(store.poll_orchestration_items(HOLD, 5, wait=0.3), 5) == []
    assert 0.3 <= time.monotonic() - t0 < 3
    await store.close()


async def test_a_message_falling_due_wakes_a_fetch_parked_on_the_callers_thread(
        tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "w.db")
    iid, due = await _due_later(store, 0.4)
    await _thread_of_write(store)
    t0 = time.monotonic()
    (item,) = await asyncio.wait_for(store.poll_orchestration_items(HOLD, 5, wait=30), 5)
    assert item.instance_id == iid and time.time() >= due
    assert time.monotonic() - t0 < 3  # woken when it fell due, not at its deadline
    await store.close()


# ------------------------------------------------------------------ the latency switches
async def test_every_latency_switch_off_changes_speed_not_results(tmp_path: Path) -> None:
    from duroxy import ActivityRegistry, Client, OrchestrationRegistry, Runtime

    async def step(ctx: Any, x: int) -> int:
        return x + 1

    async def flow(ctx: Any, n: int) -> int:
        for _ in range(n):
            n = await ctx.schedule_activity("step", n)
        await ctx.schedule_timer(0.05)
        return n

    store = SqliteProvider(tmp_path / "off.db", inline_writes=False, inline_reads=False,
                           preallocate_wal=False, warm_up=False)
    calls = _calls_of(store)
    acts = ActivityRegistry.builder().register("step", step).build()
    orchs = OrchestrationRegistry.builder().register("flow", flow).build()
    async with store, await Runtime.start(store, acts, orchs):
        client = Client(store)
        await client.start_orchestration("f", "flow", 3)
        status = await client.wait_for_orchestration("f", 10)
        wal = (tmp_path / "off.db-wal").stat().st_size
    assert status.output == 6
    assert store._inline is None  # no read on the caller's thread
    assert calls == {"inline": 0}  # no write on the caller's thread
    assert store._writer._warm_up_fn is None  # no warm-up before the timer fell due
    assert wal < 1 << 20  # not preallocated (padded, it holds 1.25 x wal_autocheckpoint)


def _calls_of(store: SqliteProvider) -> dict[str, int]:
    calls = {"inline": 0}
    run_inline = store._writer.run_inline

    def counting(op: _tx.Op) -> bool:
        calls["inline"] += 1
        return run_inline(op)

    store._writer.run_inline = counting  # type: ignore[method-assign]
    return calls

"""Every SQLite connection is closed by whoever opened it: the store's threads, its
inline reader, a store garbage-collected unclosed, a connection whose setup failed.

``sqlitekit`` (installed by ``conftest.py``) fails any test that drops a connection
open; these tests check that detector itself and the store's paths that are not
taken by the other tests."""

from __future__ import annotations

import asyncio
import gc
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any, NoReturn

import pytest

import sqlitekit
from duroxy.errors import ProviderError
from duroxy.providers.sqlite import SqliteProvider
from duroxy.providers.sqlite import _open as sqlite_open
from duroxy.providers.sqlite._tx import Op, Tx
from duroxy.testing.provider_suite.support import create, uid


def _is_closed(conn: sqlite3.Connection) -> bool:
    try:
        conn.in_transaction  # noqa: B018 - raises once closed
    except sqlite3.ProgrammingError:
        return True
    return False


def test_a_connection_dropped_open_is_reported(request: pytest.FixtureRequest) -> None:
    closed = sqlite3.connect(":memory:")
    assert isinstance(closed, sqlitekit.TrackedConnection)
    closed.close()
    del closed
    dropped = sqlite3.connect(":memory:")
    del dropped  # freed at once
    cyclic: Any = sqlite3.connect(":memory:")
    cyclic.me = cyclic  # freed only by the collector
    del cyclic
    gc.collect()
    leaks = sqlitekit.take_leaks()
    assert len(leaks) == 2, leaks
    assert all("test_a_connection_dropped_open_is_reported" in leak for leak in leaks)
    assert sqlitekit.still_open(request.node.nodeid) == 0


async def test_a_garbage_collected_store_closes_every_connection(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    store = SqliteProvider(tmp_path / "gc.db")
    iid = uid()
    before = sqlitekit.opened()
    await create(store, iid)  # the writer's connection
    await store.list_executions(iid)  # the reader thread's
    assert await store.get_instance(iid) is not None  # the inline reader's
    assert sqlitekit.opened() - before == 3
    threads = [store._writer.thread, store._reader.thread]
    del store
    gc.collect()
    for t in threads:
        assert t is not None
        t.join(5)
        assert not t.is_alive()
    assert sqlitekit.take_leaks() == []
    assert sqlitekit.still_open(request.node.nodeid) == 0


async def test_a_closed_store_starts_no_thread_for_a_late_read(tmp_path: Path) -> None:
    """A read past its open check when the store closed must not start the reader
    thread (and open its connection) with nobody left to stop it."""
    store = SqliteProvider(tmp_path / "late.db")
    await create(store, uid())
    await store.close()
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()
    store._reader.submit(Op(lambda tx: None, False, loop, fut))
    with pytest.raises(ProviderError, match="closed"):
        await fut
    assert not store._reader.started


def test_a_connection_whose_setup_fails_is_closed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[sqlite3.Connection] = []

    class Refusing(sqlitekit.TrackedConnection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if "query_only" in sql:
                raise sqlite3.OperationalError("disk I/O error")
            return super().execute(sql, *args)

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = sqlitekit.real_connect(*args, factory=Refusing, **kwargs)
        opened.append(conn)
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)  # the module _open connects with
    config = sqlite_open.Config(str(tmp_path / "s.db"), "FULL", 1.0)
    for open_reader in (config.open_reader, config.open_inline_reader):
        with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
            open_reader()
    assert len(opened) == 2 and all(_is_closed(c) for c in opened)


async def test_a_batch_that_cannot_roll_back_closes_its_connection_and_reopens(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = SqliteProvider(tmp_path / "b.db")
    await create(store, uid())
    old: list[sqlite3.Connection] = []

    def break_connection(tx: Tx) -> None:
        # From now on every statement fails, the savepoint's RELEASE and the batch's
        # ROLLBACK included: the worker must give the connection up.
        old.append(tx.conn)

        def failing(*_args: Any) -> NoReturn:
            raise sqlite3.OperationalError("disk I/O error")

        tx.conn.execute = failing  # type: ignore[method-assign]

    release, entered = threading.Event(), threading.Event()

    def hold(tx: Tx) -> None:
        entered.set()
        release.wait(10)

    store._writer.submit(Op(hold, True, None, None))
    assert entered.wait(10)
    # Both join the transaction of ``hold``, each in a savepoint.
    breaker = asyncio.ensure_future(store._write(break_connection))
    victim = asyncio.ensure_future(create(store, uid()))
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="duroxy.providers.sqlite"):
        release.set()
        results = await asyncio.gather(breaker, victim, return_exceptions=True)
    assert "batch failed" in caplog.text
    assert all(isinstance(r, ProviderError) and r.retryable for r in results), results
    assert len(old) == 1 and _is_closed(old[0])
    iid = uid()
    await create(store, iid)  # on a new connection
    assert await store.get_instance(iid) is not None
    await store.close()

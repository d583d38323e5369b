"""The SQLite store preallocates its write-ahead log (``_wal.preallocate_wal``): commits
then overwrite blocks the file has, the database is unchanged, and a crash image taken
after the padding recovers every commit."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from duroxy.providers.sqlite import SqliteProvider
from duroxy.providers.sqlite._wal import preallocate_wal, wal_target_bytes
from duroxy.testing.provider_suite.support import HOLD, commit, create, started, uid


def _wal_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (a)")
    return conn


def _default_target() -> int:
    """The WAL size a store with SQLite's default settings pads to."""
    with closing(sqlite3.connect(":memory:")) as conn:
        return wal_target_bytes(conn)


def _pragmas(conn: sqlite3.Connection) -> tuple[int, int]:
    ((busy,),) = conn.execute("PRAGMA busy_timeout").fetchall()
    ((cache,),) = conn.execute("PRAGMA cache_size").fetchall()
    return busy, cache


async def _turns(store: SqliteProvider, n: int) -> list[str]:
    ids = [uid() for _ in range(n)]
    for iid in ids:
        await create(store, iid)
        (item,) = await store.fetch_orchestration_items(HOLD)
        await store.ack_orchestration_item(item.lock_token, commit(started()))
    return ids


async def test_a_new_store_preallocates_its_wal_and_commits_overwrite_it(
        tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    store = SqliteProvider(path)
    await _turns(store, 1)
    wal = Path(f"{path}-wal")
    with closing(sqlite3.connect(path)) as probe:
        target = wal_target_bytes(probe)
        tables = {name for (name,) in probe.execute("SELECT name FROM sqlite_master")}
    size = wal.stat().st_size
    assert size >= target
    assert "duroxy_wal_padding" not in tables  # rolled back
    assert "instances" in tables
    await _turns(store, 40)
    assert wal.stat().st_size == size  # the commits wrote into the padding
    await store.close()


async def test_commits_after_the_padding_survive_a_crash(tmp_path: Path) -> None:
    """A copy of the files taken while the store is open is what a crash leaves."""
    path = tmp_path / "p.db"
    store = SqliteProvider(path)
    ids = await _turns(store, 25)
    crash = tmp_path / "crash"
    crash.mkdir()
    for suffix in ("", "-wal"):  # the -shm index is rebuilt from the WAL
        shutil.copyfile(f"{path}{suffix}", crash / f"p.db{suffix}")
    await store.close()
    assert (crash / "p.db-wal").stat().st_size >= _default_target()
    with closing(sqlite3.connect(crash / "p.db")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        found = {iid for (iid,) in conn.execute("SELECT instance_id FROM instances")}
    assert found == set(ids)
    reopened = SqliteProvider(crash / "p.db")
    record = await reopened.get_instance(ids[-1])
    assert record is not None and record.instance_id == ids[-1]
    await reopened.close()


def test_padding_never_waits_for_another_writer(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with (closing(_wal_db(path)) as holder,
          closing(sqlite3.connect(path, isolation_level=None, timeout=10.0)) as conn):
        holder.execute("BEGIN IMMEDIATE")
        before = _pragmas(conn)
        started_at = time.monotonic()
        assert preallocate_wal(conn, str(path)) is False
        assert time.monotonic() - started_at < 5.0  # its own busy timeout is 10 s
        assert _pragmas(conn) == before
        assert not conn.in_transaction
        holder.execute("ROLLBACK")
        assert preallocate_wal(conn, str(path)) is True
        assert _pragmas(conn) == before
        assert preallocate_wal(conn, str(path)) is False  # large enough already


def test_a_failed_padding_leaves_the_database_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with closing(_wal_db(path)) as conn:
        conn.execute("INSERT INTO t VALUES (1)")
        ((pages,),) = conn.execute("PRAGMA page_count").fetchall()
        conn.execute(f"PRAGMA max_page_count = {pages + 8}")  # the blob cannot fit
        before = _pragmas(conn)
        assert preallocate_wal(conn, str(path)) is False
        assert not conn.in_transaction
        assert _pragmas(conn) == before
        assert conn.execute("SELECT a FROM t").fetchall() == [(1,)]
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert os.path.getsize(f"{path}-wal") < wal_target_bytes(conn)


async def test_no_padding_without_a_sync_per_commit(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    store = SqliteProvider(path, synchronous="NORMAL")
    await _turns(store, 1)
    assert os.path.getsize(f"{path}-wal") < _default_target()
    await store.close()

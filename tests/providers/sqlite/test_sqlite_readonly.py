"""``SqliteProvider(path, read_only=True)``: opens with SQLite's ``mode=ro``, never
creates, migrates or changes a file (bytes, modification time, journal mode, files
beside it), says clearly what is wrong with a file it cannot read, and reads what a
writer in another process commits meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import duroxy
from duroxy import ActivityRegistry, Client, OrchestrationRegistry, Runtime
from duroxy.errors import (
    ConfigurationError,
    ProviderError,
    SchemaVersionError,
    StoreNotFound,
    StoreReadOnly,
)
from duroxy.providers.sqlite import SqliteProvider, _schema
from duroxy.testing.provider_suite.support import create, uid


@dataclass(frozen=True)
class FileState:
    """Everything a read must leave as it was: the bytes and modification time of the
    database file, its journal mode (file header byte 18: 1 rollback, 2 WAL) and the
    files in its folder."""

    digest: str
    mtime_ns: int
    header_mode: int
    folder: tuple[str, ...]


def state_of(path: Path) -> FileState:
    data = path.read_bytes()
    return FileState(hashlib.sha256(data).hexdigest(), path.stat().st_mtime_ns, data[18],
                     tuple(sorted(os.listdir(path.parent))))


def tables_of(path: Path) -> set[str]:
    # immutable: no locks, and so no -wal/-shm files made for a WAL-mode file (whose
    # content is all in the database file while no -wal file exists)
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


def journal_mode(path: Path) -> str:
    """``PRAGMA journal_mode`` as SQLite reports it (run last: this opens the file as
    any application would)."""
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchall()[0][0])
    finally:
        conn.close()


def other_application(path: Path, mode: str) -> None:
    """Another application's database with a table of its own, left closed."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode = {mode}")
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('ada'), ('bob')")
    conn.close()


async def duroxy_store(path: Path, *ids: str) -> None:
    """A duroxy store holding instances ``ids``, closed (WAL mode, no -wal file)."""
    store = SqliteProvider(path)
    for iid in ids:
        await Client(store).start_orchestration(iid, "hello", {"n": 1})
    await store.close()


def set_schema_version(path: Path, version: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_version VALUES (?, ?, 0)", (version, f"{version:04d}_x.sql"))
    conn.commit()
    conn.close()


def settle() -> None:
    """A modification a read made would show in st_mtime_ns at this resolution."""
    time.sleep(0.01)


# ------------------------------------------------------------------ files left as found
@pytest.mark.parametrize("mode", ["delete", "truncate", "wal"])
async def test_another_applications_file_is_refused_and_left_as_it_was(
        tmp_path: Path, mode: str) -> None:
    db = tmp_path / "app.db"
    other_application(db, mode)
    settle()
    before = state_of(db)
    assert "app.db-wal" not in before.folder  # its last close removed the -wal file
    store = SqliteProvider(db, read_only=True)
    with pytest.raises(StoreNotFound) as e:
        await store.get_instance("x")
    assert str(e.value) == f"not a duroxy store: {db} holds no duroxy tables"
    assert e.value.store == str(db) and e.value.retryable is False
    with pytest.raises(StoreNotFound):  # every read, not just the first
        await store.list_instances()
    await store.close()
    assert state_of(db) == before
    assert tables_of(db) == {"users"}
    # (Of the rollback-journal modes only the default is what a new connection reports.)
    assert journal_mode(db) == ("wal" if mode == "wal" else "delete")


async def test_reading_a_duroxy_store_leaves_it_as_it_was(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    await duroxy_store(db, "a", "b")
    settle()
    before = state_of(db)
    tables = tables_of(db)
    store = SqliteProvider(db, read_only=True)
    assert store.read_only
    rec = await store.get_instance("a")
    assert rec is not None and (rec.name, rec.state) == ("hello", "PENDING")
    assert [r.instance_id for r in await store.list_instances()] == ["a", "b"]
    assert await store.read_history("a") == [] and await store.list_executions("a") == []
    assert await store.get_instance("a") == rec  # the inline reader, once open
    await store.close()
    assert state_of(db) == before
    assert tables_of(db) == tables
    assert journal_mode(db) == "wal"


async def test_files_a_writer_left_are_used_and_kept(tmp_path: Path) -> None:
    """A store a writer has open (its -wal and -shm files there): the read-only store
    reads through them, sees the writer's uncheckpointed commits, and removes nothing."""
    db = tmp_path / "s.db"
    writer = SqliteProvider(db)
    await create(writer, "first")
    files = set(os.listdir(tmp_path))
    assert {"s.db-wal", "s.db-shm"} <= files
    store = SqliteProvider(db, read_only=True)
    assert await store.get_instance("first") is not None
    await create(writer, "second")
    assert await store.get_instance("second") is not None
    await store.close()
    assert set(os.listdir(tmp_path)) == files
    assert await writer.get_instance("second") is not None  # the writer is unaffected
    await writer.close()


# ------------------------------------------------------------------ what is wrong, said
async def test_missing_file_is_not_created(tmp_path: Path) -> None:
    db = tmp_path / "absent.db"
    store = SqliteProvider(f"sqlite:///{db}?mode=ro")
    with pytest.raises(StoreNotFound, match=f"^{re.escape(f'no such store file: {db}')}$"):
        await store.get_instance("x")
    await store.close()
    assert os.listdir(tmp_path) == []


async def test_a_file_that_is_no_database(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database, but long enough to have a header. " * 4)
    before = state_of(notes)
    store = SqliteProvider(notes, read_only=True)
    with pytest.raises(StoreNotFound, match="is not a SQLite database"):
        await store.list_instances()
    await store.close()
    assert state_of(notes) == before


async def test_another_applications_schema_version_table(tmp_path: Path) -> None:
    """Refused by name, not mistaken for a newer duroxy schema, by both openings."""
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE schema_version (version INTEGER, name TEXT, applied_at REAL)")
    conn.execute("INSERT INTO schema_version VALUES (1, 'create users', 0), (7, 'more', 0)")
    conn.commit()
    conn.close()
    before = state_of(db)
    store = SqliteProvider(db, read_only=True)
    with pytest.raises(StoreNotFound, match="schema_version table that is not duroxy's"):
        await store.get_instance("x")
    await store.close()
    writer = SqliteProvider(db)
    with pytest.raises(ProviderError, match=r"cannot keep a duroxy store in .* not duroxy's"):
        await writer.get_instance("x")
    await writer.close()
    assert tables_of(db) == {"schema_version"}
    assert state_of(db).digest == before.digest


@pytest.mark.parametrize("read_only", [True, False])
async def test_a_newer_schema_names_both_versions(tmp_path: Path, read_only: bool) -> None:
    db = tmp_path / "future.db"
    await duroxy_store(db, "a")
    latest = _schema.latest_version()
    set_schema_version(db, latest + 1)
    settle()
    before = state_of(db)
    store = SqliteProvider(db, read_only=read_only)
    with pytest.raises(SchemaVersionError) as e:
        await store.get_instance("a")
    assert str(e.value) == (f"{db} has schema version {latest + 1}, newer than this duroxy "
                            f"knows (schema version {latest}): upgrade duroxy")
    assert (e.value.store_version, e.value.supported_version) == (latest + 1, latest)
    assert not e.value.retryable
    await store.close()
    if read_only:
        assert state_of(db) == before


async def test_runtime_start_names_a_newer_schema(tmp_path: Path) -> None:
    db = tmp_path / "future.db"
    await duroxy_store(db, "a")
    set_schema_version(db, _schema.latest_version() + 1)
    store = SqliteProvider(db)
    with pytest.raises(SchemaVersionError, match="upgrade duroxy"):
        await Runtime.start(store, ActivityRegistry.builder().build(),
                            OrchestrationRegistry.builder().build())
    await store.close()


async def test_an_older_schema_is_not_migrated_by_a_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store of an older duroxy: reading it would need the migration a read-only
    opening may not run. (Stands in for a later duroxy with a second migration.)"""
    db = tmp_path / "old.db"
    await duroxy_store(db, "a")
    before = state_of(db)
    newer = _schema.latest_version() + 1
    monkeypatch.setattr(_schema, "latest_version", lambda: newer)
    store = SqliteProvider(db, read_only=True)
    with pytest.raises(SchemaVersionError, match=r"older than this duroxy's .* open it "
                       r"once for writing"):
        await store.get_instance("a")
    await store.close()
    assert state_of(db) == before


# ------------------------------------------------------------------ writes refused
async def test_writes_and_runtimes_are_refused(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    await duroxy_store(db, "a")
    store = SqliteProvider(db, read_only=True)
    client = Client(store)
    with pytest.raises(StoreReadOnly, match=r"create_instance refused: .* opened read-only"):
        await client.start_orchestration("b", "hello")
    with pytest.raises(StoreReadOnly, match="delete_instance"):
        await client.delete_instance("a", force=True)
    with pytest.raises(StoreReadOnly, match="a runtime needs a store it can write"):
        await Runtime.start(store, ActivityRegistry.builder().build(),
                            OrchestrationRegistry.builder().build())
    assert (await client.get_instance_info("a")).state.value == "PENDING"
    await store.flush()  # nothing to make durable: returns
    await store.close()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert [r[0] for r in conn.execute("SELECT instance_id FROM instances")] == ["a"]


def test_read_only_options_and_their_conflicts(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    assert SqliteProvider(f"sqlite:///{db}?mode=ro").read_only
    assert not SqliteProvider(f"sqlite:///{db}?mode=rwc").read_only
    assert not SqliteProvider(db).read_only
    assert duroxy.connect(f"sqlite:///{db}", read_only=True).read_only
    assert duroxy.connect(str(db), read_only=True).read_only
    assert "read-only" in repr(SqliteProvider(db, read_only=True))
    with pytest.raises(ConfigurationError, match=r"must be ro .* or rwc"):
        SqliteProvider(f"sqlite:///{db}?mode=rw")
    with pytest.raises(ConfigurationError, match="contradicts mode=rwc"):
        SqliteProvider(f"sqlite:///{db}?mode=rwc", read_only=True)
    with pytest.raises(ConfigurationError, match="nothing to open read-only"):
        SqliteProvider(":memory:", read_only=True)
    with pytest.raises(ConfigurationError, match="nothing to open read-only"):
        SqliteProvider("sqlite::memory:?mode=ro")
    with pytest.raises(ConfigurationError, match="nothing to open read-only"):
        duroxy.connect("memory://", read_only=True)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ beside a writer process
WRITER = textwrap.dedent("""
    import asyncio, sys
    from duroxy.providers.sqlite import SqliteProvider
    from duroxy.testing.provider_suite.support import create

    async def main():
        store = SqliteProvider(sys.argv[1])
        for line in sys.stdin:
            await create(store, line.strip())
            print("created", line.strip(), flush=True)
        await store.close()

    asyncio.run(main())
""")


async def test_a_writer_process_keeps_writing_and_is_seen(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    await duroxy_store(db, "first")
    store = SqliteProvider(db, read_only=True)
    assert await store.get_instance("first") is not None  # open before the writer is
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdin is not None and writer.stdout is not None
    try:
        for n in range(5):
            iid = f"w{n}-{uid()}"
            writer.stdin.write(iid + "\n")
            writer.stdin.flush()
            reply = await asyncio.to_thread(writer.stdout.readline)
            assert reply.split() == ["created", iid]  # committed while we are open
            rec = await store.get_instance(iid)
            assert rec is not None and rec.state == "PENDING"
        writer.stdin.close()
        assert await asyncio.to_thread(writer.wait, 30) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        writer.stdout.close()
    assert len(await store.list_instances()) == 6
    await store.close()


# ------------------------------------------------------------------ a folder it may not write
@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder outside pytest's private ones, which another user can reach."""
    d = Path(tempfile.mkdtemp(prefix="duroxy-ro-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        d.chmod(0o755)
        shutil.rmtree(d)


READ = textwrap.dedent("""
    import asyncio, sys
    from duroxy.providers.sqlite import SqliteProvider

    async def main():
        store = SqliteProvider(sys.argv[1], read_only=True)
        try:
            print(len(await store.list_instances()))
        except Exception as e:
            print(type(e).__name__, e)
        await store.close()

    asyncio.run(main())
""")


def run_as_reader(db: Path) -> str:
    """Run READ on ``db`` as a user who may not write its folder: ``nobody`` when this is
    root (root may write anywhere), else this user with the folder made read-only."""
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv to drop privileges")
        prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        probe = subprocess.run([*prefix, sys.executable, "-c", "import duroxy"],
                               capture_output=True, text=True)
        if probe.returncode != 0:
            pytest.skip(f"user nobody cannot run this Python: {probe.stderr.strip()}")
    else:
        prefix = []
    db.parent.chmod(0o555)
    try:
        proc = subprocess.run([*prefix, sys.executable, "-c", READ, str(db)],
                              capture_output=True, text=True, timeout=60)
    finally:
        db.parent.chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


async def test_a_folder_it_may_not_write(shared_dir: Path) -> None:
    db = shared_dir / "s.db"
    await duroxy_store(db, "a")
    db.chmod(0o644)
    settle()
    before = state_of(db)
    # WAL mode, no -wal or -shm file, which SQLite cannot create there: said clearly.
    said = run_as_reader(db)
    assert said.startswith(f"ProviderError cannot read {db}: it is in WAL mode"), said
    assert f"{shared_dir} is not writable for this user" in said
    assert state_of(db) == before
    # A rollback-journal file is read where it is.
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    settle()
    before = state_of(db)
    assert run_as_reader(db) == "1"
    assert state_of(db) == before

"""The reading commands of the ``duroxy`` executable open the store read-only: pointed at
another application's database, a missing file or schema, or a store of a newer
schema, they exit 5 with one line naming the store and what is wrong, and leave
everything as it was; on a real store they read it and change nothing. Commands that
write say the same of a newer schema. Run as a user runs them: the venv's ``duroxy``
executable in a subprocess."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from duroxy import Client, Runtime, RuntimeOptions
from duroxy.providers.sqlite import SqliteProvider

TESTS = Path(__file__).resolve().parents[1]
READING = [["status", "x"], ["list"], ["history", "x"], ["wait", "x", "--timeout", "1"]]
EXIT_ERROR = 5


def executable() -> list[str]:
    script = Path(sys.executable).with_name("duroxy")
    return [str(script)] if script.exists() else [sys.executable, "-m", "duroxy"]


def duroxy(*args: str, store: str, cwd: Path | None = None
           ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DUROXY_STORE", "DUROXY_DEBUG")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])
    return subprocess.run([*executable(), "--store", store, *args], capture_output=True,
                          text=True, timeout=60, env=env, cwd=cwd)


def refused(proc: subprocess.CompletedProcess[str]) -> str:
    """The message of the one error line of a command that exited 5 (no traceback,
    nothing on stdout): ``duroxy: error: ...``, or under ``--json`` a JSON object."""
    assert proc.returncode == EXIT_ERROR, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    if "--json" in proc.args:
        error = json.loads(lines[0])["error"]
        assert error["kind"] == "store" and error["exit_code"] == EXIT_ERROR, error
        return str(error["message"])
    assert lines[0].startswith("duroxy: error: "), proc.stderr
    return lines[0].removeprefix("duroxy: error: ")


@dataclass(frozen=True)
class FileState:
    digest: str
    mtime_ns: int
    header_mode: int  # file header byte 18: 1 rollback journal, 2 WAL
    folder: tuple[str, ...]


def state_of(path: Path) -> FileState:
    data = path.read_bytes()
    return FileState(hashlib.sha256(data).hexdigest(), path.stat().st_mtime_ns, data[18],
                     tuple(sorted(os.listdir(path.parent))))


def tables_of(path: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)  # makes no -wal/-shm
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


def journal_mode(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchall()[0][0])
    finally:
        conn.close()


# ------------------------------------------------------------------ (1) another application's
@pytest.mark.parametrize("json", [False, True])
def test_another_applications_database_is_refused_and_left_as_it_was(
        tmp_path: Path, json: bool) -> None:
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)  # rollback-journal mode, the default
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.commit()
    conn.close()
    time.sleep(0.01)  # a write would show in st_mtime_ns
    before = state_of(db)
    assert before.folder == ("app.db",) and before.header_mode == 1
    for args in READING:
        said = refused(duroxy(*args, *(["--json"] if json else []), store=str(db)))
        assert said == (f"not a duroxy store: {db} holds no duroxy tables (pass --store URL "
                        "or set DUROXY_STORE)"), args
    assert state_of(db) == before
    assert tables_of(db) == {"users"}
    assert journal_mode(db) == "delete"


# ------------------------------------------------------------------ (2) a missing path
def test_a_missing_store_file_is_named_and_not_created(tmp_path: Path) -> None:
    db = tmp_path / "absent.db"
    for args in READING:
        for store in (f"sqlite:///{db}", str(db)):
            said = refused(duroxy(*args, store=store))
            assert said == (f"no such store file: {db} (pass --store URL or set "
                            "DUROXY_STORE)"), (args, store)
    # relative to the working directory, named in full
    said = refused(duroxy("list", store="sqlite:///absent.db", cwd=tmp_path))
    assert said.startswith(f"no such store file: {db} ")
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ (3) a real store
async def _run_hello(db: Path) -> None:
    """Write a store as an application does: a runtime runs an instance to its end."""
    from cli_app import registries

    store = SqliteProvider(db)
    rt = await Runtime.start(store, *registries, RuntimeOptions())
    try:
        client = Client(store)
        await client.start_orchestration("h1", "hello", {"name": "ro"})
        status = await client.wait_for_orchestration("h1", timeout=30)
        assert status.output == {"greeting": "hello ro"}
        await client.start_orchestration("w1", "waits")
        for _ in range(500):  # its first turn ran: it waits, RUNNING
            if (await client.get_orchestration_status("w1")).state.value == "RUNNING":
                break
            await asyncio.sleep(0.01)
    finally:
        await rt.shutdown()
        await store.close()


def test_reading_a_real_store_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "real.db"
    asyncio.run(_run_hello(db))
    time.sleep(0.01)
    before = state_of(db)
    tables = tables_of(db)
    assert before.folder == ("real.db",) and before.header_mode == 2  # WAL, closed
    url = f"sqlite:///{db}"

    status = duroxy("status", "h1", "--json", store=url)
    assert status.returncode == 0, status.stderr
    assert '"state": "COMPLETED"' in status.stdout
    listed = duroxy("list", store=url)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == [
        "INSTANCE", "h1", "w1"]
    history = duroxy("history", "h1", store=url)
    assert history.returncode == 0, history.stderr
    assert "OrchestrationCompleted" in history.stdout
    waited = duroxy("wait", "w1", "--timeout", "0.2", store=url)
    assert waited.returncode == 4 and "still RUNNING" in waited.stderr
    assert duroxy("status", "nobody", store=url).returncode == 3

    assert state_of(db) == before
    assert tables_of(db) == tables
    assert journal_mode(db) == "wal"


# ------------------------------------------------------------------ (4) a newer schema
#: a schema version no duroxy has yet
FUTURE = 999


def _newer(said: str, store: str) -> None:
    from duroxy.providers.sqlite._schema import latest_version

    assert said == (f"{store} has schema version {FUTURE}, newer than this duroxy knows "
                    f"(schema version {latest_version()}): upgrade duroxy")


def test_a_newer_sqlite_schema_is_named_by_reading_and_writing_commands(
        tmp_path: Path) -> None:
    db = tmp_path / "future.db"
    asyncio.run(_run_hello(db))
    conn = sqlite3.connect(db)
    conn.execute(f"INSERT INTO schema_version VALUES ({FUTURE}, 'future.sql', 0)")
    conn.commit()
    conn.close()
    time.sleep(0.01)
    before = state_of(db)
    url = f"sqlite:///{db}"
    for args in READING:  # read-only opening
        _newer(refused(duroxy(*args, store=url)), str(db))
    assert state_of(db) == before
    for args in (["start", "hello", "--id", "n1"], ["cancel", "w1"],
                 ["worker", "cli_app:registries"]):  # normal opening, Runtime.start
        _newer(refused(duroxy(*args, store=url)), str(db))


@pytest.fixture
def pg_store(dsn: str) -> Callable[[str], str]:
    """The CLI's store URL of a schema."""
    return lambda schema: f"{dsn}?schema={schema}"


async def _pg(dsn: str, text: str, *params: Any) -> list[tuple[Any, ...]]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(text.encode(), params or None)
        return await cur.fetchall() if cur.description else []


@pytest.mark.postgres
def test_a_newer_postgres_schema_is_named_by_reading_and_writing_commands(
        dsn: str, schemas: Callable[[], str], pg_store: Callable[[str], str]) -> None:
    schema = schemas()
    url = pg_store(schema)
    assert duroxy("start", "hello", "--id", "p1", store=url).returncode == 0
    asyncio.run(_pg(dsn, f'INSERT INTO "{schema}".schema_version (version, name) '
                    f"VALUES ({FUTURE}, 'future')"))
    where = f"schema {schema!r} of PostgreSQL database 'test' on 127.0.0.1"
    for args in [*READING, ["start", "hello", "--id", "p2"], ["worker", "cli_app:registries"]]:
        _newer(refused(duroxy(*args, store=url)), where)
    assert asyncio.run(_pg(dsn, f'SELECT instance_id FROM "{schema}".instances')) == [("p1",)]


# ------------------------------------------------------------------ (5) no such schema
@pytest.mark.postgres
def test_a_missing_postgres_schema_is_named_and_not_created(
        dsn: str, schemas: Callable[[], str], pg_store: Callable[[str], str]) -> None:
    schema = schemas()  # dropped after the test, should a bug create it
    for args in READING:
        said = refused(duroxy(*args, store=pg_store(schema)))
        assert said == (f"no duroxy store in schema {schema!r} of PostgreSQL database "
                        "'test' on 127.0.0.1: the schema does not exist (pass --store URL "
                        "or set DUROXY_STORE)"), args
    assert asyncio.run(_pg(dsn, "SELECT 1 FROM pg_namespace WHERE nspname = %s",
                           schema)) == []

"""Shared pytest configuration for duroxy's tests (fixtures used by several modules).

PostgreSQL: ``dsn`` (skips the test when ``DUROXY_TEST_PG_DSN`` is not set), ``schemas``
(fresh schema names, dropped after the test) and ``providers`` (PostgreSQL providers on
a given or fresh schema, closed after the test).

SQLite: every connection a test opens (its own or a store's) must be closed; a test
that leaves one open fails (see ``sqlitekit``).

Fault injection (``tests/faults``): ``private_pg``, a PostgreSQL server that tests may cut
off and restart, and ``tmpfs``, a small tmpfs that tests may fill. The shared server of
``DUROXY_TEST_PG_DSN`` serves other people's tests at the same time: nothing here
terminates its backends or restarts it. Tests that do that to a server get their own
(``private_pg``): ``initdb`` into a temporary directory and ``pg_ctl start`` on a free
loopback port, run as the ``postgres`` OS user when the tests run as root (``initdb``
refuses root), stopped and removed after the session."""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from mountkit import mount_tmpfs, unmount
from pgserver import PG_BIN_GLOB, PG_OS_USER, PrivatePg, free_port, pg_bin

import sqlitekit

if TYPE_CHECKING:
    from duroxy.providers.postgres import PostgresProvider

DSN = os.environ.get("DUROXY_TEST_PG_DSN")


def _drop_schemas(dsn: str, names: list[str]) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def dsn() -> str:
    if not DSN:
        pytest.skip("DUROXY_TEST_PG_DSN not set: PostgreSQL tests need a server")
    return DSN


@pytest.fixture
def schemas(dsn: str) -> Iterator[Callable[[], str]]:
    """Hands out fresh schema names; drops them all after the test."""
    made: list[str] = []

    def make() -> str:
        made.append(f"t_{uuid.uuid4().hex[:12]}")
        return made[-1]

    yield make
    _drop_schemas(dsn, made)


@pytest.fixture
async def providers(dsn: str, schemas: Callable[[], str]
                    ) -> AsyncIterator[Callable[..., PostgresProvider]]:
    """Builds providers (on a given or fresh schema) and closes them after the test."""
    from duroxy.providers.postgres import PostgresProvider

    made: list[PostgresProvider] = []

    def make(schema: str | None = None, **kw: Any) -> PostgresProvider:
        made.append(PostgresProvider(dsn, schema or schemas(), **kw))
        return made[-1]

    yield make
    for p in made:
        await p.close()


# ------------------------------------------------------------------ unclosed SQLite connections
sqlitekit.install()


def _leak_report(leaks: list[str]) -> str:
    return ("SQLite connections were garbage-collected without close() (close every "
            "connection where it is opened, also when the code using it fails):\n  "
            + "\n  ".join(leaks))


@pytest.fixture(autouse=True)
def _sqlite_connections_closed(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails the test when a SQLite connection was dropped open. The collector runs
    after every test that left one of its connections open, so that one kept only by
    a reference cycle is found here rather than in whichever later test the collector
    happens to run in."""
    test = sqlitekit.current_test = request.node.nodeid
    yield
    if sqlitekit.still_open(test):
        gc.collect()
    leaks = sqlitekit.take_leaks()
    sqlitekit.current_test = "(between tests)"
    if leaks:
        pytest.fail(_leak_report(leaks), pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    gc.collect()
    leaks = sqlitekit.take_leaks()
    if leaks:
        print("\n" + _leak_report(leaks))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# ------------------------------------------------------------------ fault injection
@pytest.fixture(scope="session")
def private_pg() -> Iterator[PrivatePg]:
    """A PostgreSQL server of this session, on a free loopback port, database ``faults``.
    Skips (saying why) without the server binaries, or as root without the ``postgres``
    OS user to run them as."""
    pytest.importorskip("psycopg", reason="the postgres extra (psycopg) is not installed")
    bin_dir = pg_bin()
    if bin_dir is None:
        pytest.skip(f"no PostgreSQL server binaries (initdb, pg_ctl) under {PG_BIN_GLOB} "
                    "or on PATH: the private-server fault tests need them")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="duroxy-faults-pg-"))
    if os.geteuid() == 0:
        import pwd

        try:
            owner = pwd.getpwnam(PG_OS_USER)
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            pytest.skip(f"running as root and there is no {PG_OS_USER!r} OS user: initdb "
                        "refuses to run as root")
        runuser = shutil.which("runuser")
        if runuser is None:
            shutil.rmtree(root, ignore_errors=True)
            pytest.skip("running as root without runuser: cannot run initdb as "
                        f"{PG_OS_USER!r}")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_user = [runuser, "-u", PG_OS_USER, "--"]
    pg = PrivatePg(bin_dir, root, free_port(), as_user)
    try:
        done = pg.run(str(bin_dir / "initdb"), "-D", str(pg.data), "-A", "trust",
                      "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync",
                      timeout=120)
        if done.returncode != 0:
            pytest.skip(f"initdb failed, so no private PostgreSQL server: {done.stderr[-500:]}")
        for attempt in range(3):  # the free port may be taken meanwhile
            try:
                pg.start()
                break
            except RuntimeError:
                if attempt == 2:
                    raise
                pg.port = free_port()
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg.port}/postgres",
                             autocommit=True, connect_timeout=10) as conn:
            conn.execute("CREATE DATABASE faults")
        yield pg
    finally:
        with contextlib.suppress(Exception):
            pg.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A freshly mounted 24 MiB tmpfs (skips, saying why, where mounting is refused:
    it needs root, or CAP_SYS_ADMIN in a container)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    mount_tmpfs(mnt, "size=24m,mode=0755")
    try:
        yield mnt
    finally:
        unmount(mnt)

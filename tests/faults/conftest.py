"""Fixtures of the fault-injection suite: a private PostgreSQL server that tests may cut
off and restart, and a small tmpfs that tests may fill.

The shared server of ``DUROXY_TEST_PG_DSN`` serves other people's tests at the same time:
nothing here terminates its backends or restarts it. Tests that do that to a server get
their own (``private_pg``): ``initdb`` into a temporary directory and ``pg_ctl start`` on
a free loopback port, run as the ``postgres`` OS user when the tests run as root
(``initdb`` refuses root), stopped and removed after the session.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Where Debian and Ubuntu install the server binaries (``postgresql-NN`` packages).
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
PG_OS_USER = "postgres"


def _pg_bin() -> Path | None:
    """The newest server binary directory holding ``initdb`` and ``pg_ctl``, or the one
    of the ``pg_ctl`` on ``PATH``."""
    found = sorted(Path("/").glob(PG_BIN_GLOB.lstrip("/")),
                   key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    for d in reversed(found):
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    on_path = shutil.which("pg_ctl")
    if on_path and (Path(on_path).parent / "initdb").exists():
        return Path(on_path).parent
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrivatePg:
    """A PostgreSQL server of this test session alone."""

    bin: Path
    root: Path
    port: int
    as_user: list[str]  # the command prefix that runs a binary as the server's owner

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/faults"

    def run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.as_user, *args], capture_output=True, text=True,
                              timeout=timeout, check=False, stdin=subprocess.DEVNULL)

    def _ctl(self, *args: str) -> None:
        done = self.run(str(self.bin / "pg_ctl"), "-D", str(self.data), *args)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl {' '.join(args)} failed: {done.stdout}{done.stderr}"
                               f"\nserver log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.root / "server.log").read_text().splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def start(self) -> None:
        # fsync off: the server's own durability is not under test here, and the tests
        # must not load the shared machine's disk. max_connections: several pools and
        # listening connections at once, plus the cuts' own connections.
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200 -c shared_buffers=32MB")
        self._ctl("-w", "-t", "60", "-l", str(self.root / "server.log"), "-o", opts, "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-w", "-t", "60", "-m", mode, "stop")

    def restart(self) -> None:
        """Stop (fast: every session is cut) and start again on the same port."""
        self.stop("fast")
        self.start()

    def terminate_backends(self) -> int:
        """``pg_terminate_backend`` every client backend of the test database but the
        one asking; returns how many were terminated."""
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as conn:
            rows = conn.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend'").fetchall()
        return int(rows[0][0])


@pytest.fixture(scope="session")
def private_pg() -> Iterator[PrivatePg]:
    """A PostgreSQL server of this session, on a free loopback port, database ``faults``.
    Skips (saying why) without the server binaries, or as root without the ``postgres``
    OS user to run them as."""
    pytest.importorskip("psycopg", reason="the postgres extra (psycopg) is not installed")
    bin_dir = _pg_bin()
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
    pg = PrivatePg(bin_dir, root, _free_port(), as_user)
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
                pg.port = _free_port()
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
    mount = shutil.which("mount")
    if mount is None:
        pytest.skip("no mount command: cannot mount a tmpfs to fill")
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    done = subprocess.run([mount, "-t", "tmpfs", "-o", "size=24m,mode=0755", "tmpfs",
                           str(mnt)], capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs to fill (needs root or CAP_SYS_ADMIN): "
                    f"{(done.stderr or done.stdout).strip()}")
    try:
        yield mnt
    finally:
        for _ in range(50):  # a store thread may hold a file a moment longer
            if subprocess.run(["umount", str(mnt)], capture_output=True,
                              check=False).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)

"""A PostgreSQL server of one test session: ``initdb`` into a temporary directory,
``pg_ctl start`` on a free loopback port; the fault tests cut its backends off and
restart it (see the ``private_pg`` fixture in tests/conftest.py)."""

from __future__ import annotations

import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: Where Debian and Ubuntu install the server binaries (``postgresql-NN`` packages).
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
PG_OS_USER = "postgres"


def pg_bin() -> Path | None:
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


def free_port() -> int:
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

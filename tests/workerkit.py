"""Worker processes for the multi-process tests: each runs ``tests/procapp.py`` on one
store, writes its output to a file, and none outlives the test (``stop_all``)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

TESTS_DIR = Path(__file__).resolve().parent


def store_url(dsn: str, schema: str) -> str:
    """The DSN as a store URL that names ``schema`` (``duroxy.connect`` reads ``?schema=``)."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        pytest.skip("DUROXY_TEST_PG_DSN must be a postgresql:// URL for the worker processes")
    query = [*parse_qsl(parts.query), ("schema", schema)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def drop_schema(dsn: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        # Bounded: a backend of a killed node that the server has not noticed yet must
        # not hold the drop forever.
        conn.execute("SET lock_timeout = '10s'")
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


async def wait_until(pred: Callable[[], bool], timeout: float, what: str,
                     interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    ready: Path
    output: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""


@dataclass
class Workers:
    """``procapp`` workers on one store, named by ``store_args`` (``--db PATH`` or
    ``--store URL``), all logging their side effects to ``log``."""

    tmp: Path
    store_args: tuple[str, ...]
    log: Path
    started: list[Worker] = field(default_factory=list)

    def spawn(self, name: str, *args: str) -> Worker:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(TESTS_DIR), env.get("PYTHONPATH", "")) if p)
        ready, output = self.tmp / f"{name}.ready", self.tmp / f"{name}.out"
        with output.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "procapp", *self.store_args, "--log", str(self.log),
                 "--ready", str(ready), *args],
                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        worker = Worker(proc, ready, output)
        self.started.append(worker)
        return worker

    async def wait_ready(self, *workers: Worker, timeout: float = 15.0) -> None:
        """Wait until the given workers (default: all started) are up."""
        for w in workers or tuple(self.started):
            def up(w: Worker = w) -> bool:
                return w.ready.exists() or w.proc.poll() is not None

            await wait_until(up, timeout, f"worker {w.pid} to start")
            assert w.proc.poll() is None, f"worker exited early:\n{w.text()}"

    def kill(self, worker: Worker) -> None:
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait(timeout=10)

    def stop_all(self) -> None:
        for w in self.started:
            if w.proc.poll() is None:
                w.proc.kill()
        for w in self.started:
            try:
                w.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - last resort
                pass

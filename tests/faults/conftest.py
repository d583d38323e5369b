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
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pgserver import PG_BIN_GLOB, PG_OS_USER, PrivatePg, free_port, pg_bin


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

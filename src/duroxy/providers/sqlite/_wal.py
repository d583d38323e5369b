"""Preallocation of the write-ahead log, so that a commit's fsync overwrites blocks the
file already has instead of growing it.

An ``fdatasync`` that grows a file must also write the file's new size and block map
to the filesystem's journal; one that overwrites allocated blocks writes the data only.
On the disks measured, a commit of a few pages took 0.2-0.3 ms of sync while the WAL
grew and 0.13-0.19 ms once it overwrote (``benchmarks/`` and docs/performance.md).
SQLite itself reuses the WAL after each checkpoint (it restarts at frame 1 and never
shrinks the file below ``journal_size_limit``), so a long-running store overwrites
already; but the WAL is deleted when the last connection closes, and a freshly opened
store would append for its first ``wal_autocheckpoint`` pages.

The padding is written by SQLite, under the write lock: a transaction with a tiny page
cache writes a large blob, SQLite spills the dirty pages into the WAL as frames of that
transaction, and the transaction rolls back. Frames past the last commit are ignored by
readers and by recovery (their checksums chain from no committed frame), exactly as
after any rolled-back transaction that spilled; the database itself is unchanged.
Writing the file by hand would race with another process's writer.
"""

from __future__ import annotations

import logging
import os
import sqlite3

__all__ = ["preallocate_wal"]

log = logging.getLogger("duroxy.providers.sqlite")

#: Frames preallocated, as a multiple of ``wal_autocheckpoint``: the WAL restarts after
#: a checkpoint that ran past the threshold by up to one transaction.
_HEADROOM = 1.25
#: Never preallocate more than this (a store configured with a huge autocheckpoint).
_MAX_BYTES = 32 * 1024 * 1024
_WAL_HEADER = 32
_FRAME_HEADER = 24
#: Pages the padding transaction may keep in its cache; every other page spills.
_PAD_CACHE_PAGES = 16


def _pragma(conn: sqlite3.Connection, name: str) -> int:
    ((value,),) = conn.execute(f"PRAGMA {name}").fetchall()
    return int(value)


def wal_target_bytes(conn: sqlite3.Connection) -> int:
    """The WAL size that holds ``_HEADROOM`` times the autocheckpoint threshold."""
    page = _pragma(conn, "page_size")
    frames = _pragma(conn, "wal_autocheckpoint")
    if frames <= 0:  # checkpoints are the application's business: pad for the default
        frames = 1000
    size = _WAL_HEADER + int(frames * _HEADROOM) * (page + _FRAME_HEADER)
    return min(size, _MAX_BYTES)


def preallocate_wal(conn: sqlite3.Connection, path: str) -> bool:
    """Grow the WAL of the database at ``path`` (open on ``conn``, in WAL mode, no
    transaction open) to :func:`wal_target_bytes`, and sync it. Returns whether it did.

    Best effort: a WAL already that large, another process's write lock (never waited
    for) or any SQLite error leaves things as they were."""
    wal = path + "-wal"
    target = wal_target_bytes(conn)
    try:
        if os.path.getsize(wal) >= target:
            return False
    except OSError:  # no WAL yet: the first write transaction creates it
        pass
    busy_ms = _pragma(conn, "busy_timeout")
    cache = _pragma(conn, "cache_size")
    page = _pragma(conn, "page_size")
    conn.execute("PRAGMA busy_timeout = 0")
    conn.execute(f"PRAGMA cache_size = {_PAD_CACHE_PAGES}")
    try:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return False
        try:
            # Overflow pages hold page_size - 4 bytes of a blob each; the pages left in
            # the cache at the rollback are never written.
            frames = (target - _WAL_HEADER) // (page + _FRAME_HEADER) + 2 * _PAD_CACHE_PAGES
            conn.execute("CREATE TABLE duroxy_wal_padding (b BLOB)")
            conn.execute("INSERT INTO duroxy_wal_padding VALUES (zeroblob(?))",
                         (frames * (page - 4),))
        finally:
            if conn.in_transaction:  # SQLite rolls back by itself on some errors (full)
                conn.execute("ROLLBACK")
        # Sync now: else the first durable commit's fdatasync would write the padding.
        fd = os.open(wal, os.O_RDONLY)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)
        return True
    except (sqlite3.Error, OSError) as e:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        log.debug("preallocating the WAL of %s failed: %s", path, e)
        return False
    finally:
        conn.execute(f"PRAGMA cache_size = {cache}")
        conn.execute(f"PRAGMA busy_timeout = {busy_ms}")

"""Opening a SQLite file read-only, leaving it as it was found.

Connections are opened with SQLite's URI ``mode=ro``: SQLite then never writes the
database file, never creates it, and cannot change its journal mode. A file in
rollback-journal mode is read under a shared lock, with nothing created beside it.

A file in WAL mode is read through its ``-wal`` and ``-shm`` files, and SQLite creates
them when they are absent (a store whose last connection closed cleanly has neither),
even on a read-only connection. A read-write connection deletes them when it is the
last one to close; a read-only one cannot, and leaves them behind. So when the first
connection of a read-only store found no ``-wal`` file, :meth:`ReadOnlyFile.tidy_up`
opens one more connection once the read-only ones are closed (``mode=rw``: it never
creates the database), reads, and closes it: SQLite itself then deletes what it
created, if and only if no other connection, in any process, still uses the file. Its
close checkpoints nothing of ours: the write-ahead log holds only what writers
committed meanwhile, which their own last close would have checkpointed. A ``-wal``
file that was there before (a writer running, or one that crashed) is left alone:
checkpointing it would change the database file.

Those files must be creatable, though: a WAL-mode file without them, in a folder this
user may not write, cannot be read at all (:meth:`ReadOnlyFile.unreadable` says so).
Reading it ``immutable`` instead would ignore the locks of a writer that starts
meanwhile, and miss whatever it commits.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from urllib.parse import quote

from ...errors import ProviderError, StoreNotFound

__all__ = ["ReadOnlyFile"]

log = logging.getLogger("duroxy.providers.sqlite")


def _uri(path: str, mode: str) -> str:
    # Percent-encoding keeps '?', '#' and '%' in a file name from being read as URI syntax.
    return f"file:{quote(os.path.abspath(path))}?mode={mode}"


class ReadOnlyFile:
    """The database file of a store opened read-only (shared by its connections)."""

    def __init__(self, path: str) -> None:
        self.path = path
        #: how errors name the file
        self.where = os.path.abspath(path)
        self._lock = threading.Lock()
        # Whether the first connection since the last tidy-up found no -wal file: then
        # whatever -wal and -shm files there are at the end were created meanwhile.
        self._wal_was_absent: bool | None = None

    def connect(self, timeout: float) -> sqlite3.Connection:
        """A ``mode=ro`` connection. Raises :class:`StoreNotFound` when there is no file."""
        if not os.path.isfile(self.path):
            raise StoreNotFound(f"no such store file: {self.where}", store=self.where)
        with self._lock:
            if self._wal_was_absent is None:
                self._wal_was_absent = not os.path.exists(self.path + "-wal")
        try:
            return sqlite3.connect(_uri(self.path, "ro"), uri=True, timeout=timeout,
                                   isolation_level=None, cached_statements=256,
                                   check_same_thread=False)
        except sqlite3.OperationalError:
            if not os.path.isfile(self.path):  # deleted meanwhile
                raise StoreNotFound(f"no such store file: {self.where}",
                                    store=self.where) from None
            raise

    def unreadable(self, exc: sqlite3.Error) -> ProviderError | None:
        """A clearer error than ``exc`` when the file could not be read because it is in
        WAL mode and its ``-wal`` and ``-shm`` files, absent, cannot be created."""
        folder = os.path.dirname(self.where)
        if ("readonly" not in str(exc) or os.path.exists(self.path + "-wal")
                or os.access(folder, os.W_OK)):
            return None
        return ProviderError(
            f"cannot read {self.where}: it is in WAL mode, and SQLite must create its "
            f"-wal and -shm files to read it, but {folder} is not writable for this user: "
            "read it as a user who may write there, or while a process that has the "
            "store open (a worker) runs")

    def tidy_up(self, timeout: float = 1.0) -> None:
        """Remove the ``-wal`` and ``-shm`` files that opening this store created, once
        its connections are closed (see the module docstring). Best effort: a file that
        cannot be opened for writing keeps them, as does one still in use elsewhere."""
        with self._lock:
            created, self._wal_was_absent = self._wal_was_absent, None
        if not created or not os.path.exists(self.path + "-wal"):
            return
        try:
            conn = sqlite3.connect(_uri(self.path, "rw"), uri=True, timeout=timeout,
                                   isolation_level=None)
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
            finally:
                conn.close()
        except sqlite3.Error as e:
            log.debug("leaving the -wal and -shm files of %s: %s", self.where, e)

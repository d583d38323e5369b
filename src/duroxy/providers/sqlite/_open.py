"""Where a SQLite store lives and how its connections are opened: file paths and
``sqlite:`` URLs, the writer connection (WAL mode, migrations, the preallocated WAL),
reader connections, and read-only opening (see ``_readonly``)."""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
import time
from pathlib import Path
from urllib.parse import parse_qsl, unquote

from ...errors import ConfigurationError, ProviderError
from ._readonly import ReadOnlyFile
from ._schema import check_schema, migrate, usable_version
from ._tx import is_busy
from ._wal import preallocate_wal

__all__ = ["MEMORY", "SYNC_MODES", "Config", "parse_location"]

log = logging.getLogger("duroxy.providers.sqlite")

SYNC_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
MEMORY = ":memory:"
_OTHER_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


# ------------------------------------------------------------------ locations
def parse_location(path_or_url: str | os.PathLike[str]) -> tuple[str, dict[str, str]]:
    """``(path, options)`` for a file path or ``sqlite:`` URL; path ``":memory:"`` for
    an in-memory store. URL query parameters (``?synchronous=NORMAL``) become options.
    Raises :class:`~duroxy.errors.ConfigurationError` (a ``ValueError``) naming the
    input when it is neither."""
    if isinstance(path_or_url, os.PathLike):
        path_or_url = os.fspath(path_or_url)
    if not isinstance(path_or_url, str):
        raise ConfigurationError(
            f"SQLite location must be a path or a sqlite: URL, not {path_or_url!r}")
    text = path_or_url
    if not text or "\x00" in text:
        raise ConfigurationError(f"invalid SQLite path {text!r}")
    options: dict[str, str] = {}
    if text.startswith("sqlite:"):
        rest = text[len("sqlite:"):]
        rest, _, query = rest.partition("?")
        if query:
            try:
                options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=True))
            except ValueError:
                raise ConfigurationError(f"malformed query in SQLite URL {text!r}") from None
        if rest in (":memory:", "//", "///:memory:", "//:memory:"):
            return MEMORY, options
        if not rest.startswith("///") or len(rest) == 3:
            raise ConfigurationError(
                f"malformed SQLite URL {text!r}: use sqlite:///relative/path.db, "
                "sqlite:////absolute/path.db or sqlite::memory:")
        path = unquote(rest[3:])
    elif _OTHER_URL.match(text):
        raise ConfigurationError(f"not a SQLite location: {text!r}")
    else:
        path = text
    if path == MEMORY:
        return MEMORY, options
    parent = Path(path).parent
    if Path(path).is_dir():
        raise ConfigurationError(f"SQLite path {path!r} is a directory")
    if not parent.is_dir():
        raise ConfigurationError(
            f"SQLite path {path!r}: directory {str(parent)!r} does not exist")
    return path, options


# ------------------------------------------------------------------ opening
class Config:
    """How to open connections; shared by the worker threads (holds no provider).

    Read-only (``read_only`` set): no writer connection is ever opened; the reader
    connections open with ``mode=ro`` (see ``_readonly``), and the first one checks
    that the file holds a duroxy store of this version instead of migrating it."""

    def __init__(self, path: str, synchronous: str, busy_timeout: float,
                 read_only: bool = False, *, preallocate_wal: bool = True) -> None:
        self.path = path
        self.preallocate_wal = preallocate_wal
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.memory = path == MEMORY
        self.wal = False
        #: set once the file holds this version's schema (created, migrated or checked)
        self.schema_ready = threading.Event()
        self.read_only = ReadOnlyFile(path) if read_only else None

    def _connect(self, busy_timeout: float | None = None, query_only: bool = False
                 ) -> sqlite3.Connection:
        timeout = self.busy_timeout if busy_timeout is None else busy_timeout
        # Each connection is used by one thread at a time; the inline reader's by
        # whichever thread holds its lock.
        conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None,
                               cached_statements=256, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            if query_only:
                conn.execute("PRAGMA query_only = 1")
        except BaseException:
            conn.close()  # a connection nobody will own is closed here, not left to gc
            raise
        return conn

    def open_writer(self) -> sqlite3.Connection:
        if sqlite3.sqlite_version_info < (3, 35, 0):
            raise ProviderError(
                f"the SQLite store needs SQLite 3.35 or newer; this Python links "
                f"{sqlite3.sqlite_version}")
        conn = self._connect()
        try:
            if not self.memory:
                # A file duroxy cannot use is refused before it is switched to WAL.
                usable_version(conn, os.path.abspath(self.path))
                deadline = time.monotonic() + self.busy_timeout
                while True:  # switching to WAL needs a moment of exclusive access
                    try:
                        ((mode,),) = conn.execute("PRAGMA journal_mode = WAL").fetchall()
                        break
                    except sqlite3.OperationalError as e:
                        if not is_busy(e) or time.monotonic() > deadline:
                            raise
                        time.sleep(0.01)
                self.wal = str(mode).lower() == "wal"
                if not self.wal:
                    log.warning("SQLite file %s could not switch to WAL (journal mode %s)",
                                self.path, mode)
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            # After a burst, truncate the WAL file back to this size once checkpointed.
            conn.execute("PRAGMA journal_size_limit = 67108864")
            migrate(conn, self.busy_timeout, os.path.abspath(self.path))
            if self.preallocate_wal and self.wal and self.synchronous in ("FULL", "EXTRA"):
                preallocate_wal(conn, self.path)
            # From here on the writer waits for another process's write lock only in
            # ``begin_immediate``, which knows how long it may: a write run on a
            # caller's thread never waits (see ``ConnectionWorker.run_inline``).
            conn.execute("PRAGMA busy_timeout = 0")
        except BaseException:
            conn.close()
            raise
        self.schema_ready.set()
        return conn

    def open_reader(self) -> sqlite3.Connection:
        ro = self.read_only
        if ro is None:
            return self._connect(query_only=True)
        conn = ro.connect(self.busy_timeout)
        try:
            check_schema(conn, ro.where)
        except BaseException as e:
            conn.close()
            # Normally the store's first connection (the inline reader opens after a
            # check passed): with it closed, nothing of this store uses the files.
            # (If something still does, tidying up finds them in use and keeps them.)
            ro.tidy_up()
            if isinstance(e, sqlite3.Error) and (clear := ro.unreadable(e)) is not None:
                raise clear from None
            raise
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA query_only = 1")
        except BaseException:
            conn.close()  # a connection nobody will own is closed here, not left to gc
            raise
        self.schema_ready.set()
        return conn

    def open_inline_reader(self) -> sqlite3.Connection:
        """A reader that never waits for a lock (``InlineReader`` declines instead)."""
        if self.read_only is None:
            return self._connect(busy_timeout=0.0, query_only=True)
        # (opened once the reader thread's connection has checked the schema)
        conn = self.read_only.connect(0.0)
        try:
            conn.execute("PRAGMA busy_timeout = 0")
            conn.execute("PRAGMA query_only = 1")
        except BaseException:
            conn.close()
            raise
        return conn

"""What an operation of a SQLite worker sees (:class:`Tx`), what it is (:class:`Op`), and
how SQLite's failures reach its caller."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from ...errors import DuroxyError, ProviderError

__all__ = ["STOP", "Details", "Future", "Notes", "Op", "Tx", "begin_immediate", "given_up",
           "is_busy", "provider_error"]


#: (channel, instance id) pairs collected by a write, announced after its commit.
Notes = list[tuple[str, str | None]]
#: what a note carries beyond its instance id (see ``Tx.notify``)
Details = dict[tuple[str, str | None], Any]


class Tx:
    """What an operation sees: the connection, the time it started (provider clock)
    and the notifications it wants sent once its changes are committed."""

    __slots__ = ("conn", "details", "notes", "now", "wake_at")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.now = 0.0
        self.notes: Notes = []
        self.details: Details = {}
        #: the earliest time a delayed message enqueued by this operation falls due
        self.wake_at: float | None = None

    def notify(self, channel: str, instance_id: str | None, detail: Any = None) -> None:
        """Announce ``(channel, instance_id)`` once committed; ``detail`` goes with it to
        the commit listener (the final record of an instance that ended)."""
        self.notes.append((channel, instance_id))
        if detail is not None:
            self.details[(channel, instance_id)] = detail

    def due(self, at: float) -> None:
        """A message enqueued now becomes visible at ``at`` (provider clock)."""
        if self.wake_at is None or at < self.wake_at:
            self.wake_at = at


Future = asyncio.Future[Any] | concurrent.futures.Future[Any]


class Op:
    """One submitted operation. ``fn`` runs on the worker thread. ``fut`` receives the
    outcome: an asyncio future of ``loop``, or (``loop`` None) a thread-safe
    ``concurrent.futures.Future``; ``None`` for fire-and-forget work. ``discard`` is
    called with a successful result nobody received (the caller was cancelled or its
    loop closed): fetches use it to give their locks back at once."""

    __slots__ = ("deadline", "delivered", "discard", "durable", "fn", "fut", "loop", "probe",
                 "write")

    def __init__(
        self,
        fn: Callable[[Tx], Any] | None,
        write: bool,
        loop: asyncio.AbstractEventLoop | None,
        fut: Future | None,
        discard: Callable[[Any], None] | None = None,
        durable: bool = True,
        probe: Callable[[Tx], Any] | None = None,
        deadline: float | None = None,
    ) -> None:
        self.fn = fn
        self.write = write
        self.loop = loop
        self.fut = fut
        self.discard = discard
        #: False for writes that only take, extend or give back locks (see
        #: ``ConnectionWorker``): their commit may skip the fsync.
        self.durable = durable
        #: a read run before the write transaction: a result other than ``None`` is the
        #: answer, and the write is skipped (a fetch that finds nothing to lock)
        self.probe = probe
        #: a fetch that waits for work until this ``time.monotonic()``: an empty result
        #: parks it instead of being delivered
        self.deadline = deadline
        #: set once the outcome went out (worker thread only): exactly one per operation
        self.delivered = False


#: ``fn`` of the operation that stops a worker (its future resolves once closed).
STOP: Callable[[Tx], Any] = lambda tx: None  # noqa: E731 - a sentinel, by identity


def given_up(op: Op) -> bool:
    """The operation's caller was cancelled before its outcome went out."""
    return op.fut is not None and op.fut.cancelled()


def is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: another connection holds a lock we need."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    msg = str(exc)
    return "locked" in msg or "busy" in msg


def begin_immediate(conn: sqlite3.Connection, timeout: float) -> None:
    """``BEGIN IMMEDIATE``, retried while another process holds the write lock beyond
    the connection's own busy timeout (SQLite skips the busy handler in some cases,
    e.g. while another connection recovers the WAL)."""
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as e:
            if not is_busy(e) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def is_full(exc: BaseException) -> bool:
    """SQLITE_FULL: the disk (or the database's page limit) is full; room may come back,
    as with PostgreSQL's disk_full, which is retryable too."""
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return (code & 0xFF) == sqlite3.SQLITE_FULL  # (extended codes keep it low)
    return "database or disk is full" in str(exc)


def provider_error(exc: BaseException) -> BaseException:
    """What the caller sees: duroxy errors as raised, SQLite errors as ProviderError
    (retryable when another connection held a lock, or the disk was full)."""
    if isinstance(exc, DuroxyError):
        return exc
    if isinstance(exc, sqlite3.Error):
        err = ProviderError(f"SQLite error: {type(exc).__name__}: {exc}",
                            retryable=is_busy(exc) or is_full(exc))
        err.__cause__ = exc
        return err
    return exc

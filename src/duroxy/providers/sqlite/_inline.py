"""Short reads run on the caller's own thread, when that costs less than a hand-off.

A read handed to the reader thread costs two thread wake-ups (the reader's, then the
caller's event loop's), several times the read itself for a one-row lookup. An
:class:`InlineReader` runs such a read at once, on a connection of its own, when
nothing stands in the way; otherwise it declines and the caller hands the read over as
usual. It declines when

* another thread is using its connection (it never waits for it);
* SQLite reports the file busy (the connection has no busy timeout, so it never sleeps).

Only reads of bounded size belong here: the caller's event loop runs nothing else
meanwhile.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from ._tx import Tx, is_busy, provider_error

__all__ = ["DECLINED", "Declined", "InlineReader"]

T = TypeVar("T")


class Declined:
    """The type of :data:`DECLINED` (one instance)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DECLINED"


#: what :meth:`InlineReader.read` returns when the read must go to the reader thread
DECLINED = Declined()


class InlineReader:
    """A read-only connection for reads on the caller's thread, opened by ``opener`` on
    first use (usable from any thread, with no busy timeout); ``now`` is the store's
    clock."""

    def __init__(self, opener: Callable[[], sqlite3.Connection],
                 now: Callable[[], float] = time.time) -> None:
        self._opener = opener
        self._now = now
        self._lock = threading.Lock()
        self._tx: Tx | None = None
        self._closed = False

    def read(self, fn: Callable[[Tx], T]) -> T | Declined:
        """``fn``'s result, or :data:`DECLINED`. Errors other than a busy file are raised
        as the reader thread would raise them."""
        if not self._lock.acquire(blocking=False):
            return DECLINED
        try:
            if self._closed:
                return DECLINED
            try:
                if self._tx is None:
                    self._tx = Tx(self._opener())
                self._tx.now = self._now()
                return fn(self._tx)
            except sqlite3.OperationalError as e:
                if is_busy(e):
                    return DECLINED
                raise provider_error(e) from e
            except sqlite3.Error as e:
                raise provider_error(e) from e
        finally:
            self._lock.release()

    def close(self) -> None:
        """Close the connection; later reads decline. Waits for a read in progress."""
        with self._lock:
            self._closed = True
            if self._tx is not None:
                self._tx.conn.close()
                self._tx = None

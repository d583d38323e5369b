"""Every SQLite connection opened while the tests run must be closed.

A connection dropped open keeps its file handle until the garbage collector finds it,
which may be during any later test; Python 3.13+ then also emits ``ResourceWarning:
unclosed database``, which fails whichever test it lands in. Older Pythons say nothing.

:func:`install` makes ``sqlite3.connect`` (in this process: the stores' own connections
and the tests') return a :class:`TrackedConnection`, which records itself when it is
finalized while still open, with the test and the lines that opened it. ``conftest.py``
runs the collector after every test that opened a connection, so a leak is found in
the test that caused it, on every Python version, and fails that test.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
from collections import Counter
from types import FrameType
from typing import Any, cast

__all__ = ["TrackedConnection", "current_test", "install", "opened", "real_connect", "still_open",
           "take_leaks"]

_HERE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_SRC = os.path.join(os.path.dirname(os.path.dirname(_HERE)), "src") + os.sep
real_connect = sqlite3.connect
_lock = threading.Lock()
_opened = 0
#: connections still open, by the test that opened them
_open_by_test: Counter[str] = Counter()
_leaks: list[str] = []
#: the test running now (set by conftest), named in a leak's report
current_test = "(outside any test)"


def _opening_site() -> str:
    """The project's frames (tests and duroxy) on the stack that opens a connection,
    innermost first."""
    frames: list[str] = []
    f: FrameType | None = sys._getframe(2)
    while f is not None and len(frames) < 6:
        name = f.f_code.co_filename
        if name.startswith((_HERE, _SRC)) and f.f_globals.get("__name__") != __name__:
            frames.append(f"{os.path.basename(name)}:{f.f_lineno} in {f.f_code.co_name}")
        f = f.f_back
    return " <- ".join(frames) or "(no project frame)"


class TrackedConnection(sqlite3.Connection):
    """A connection that counts itself open until closed, and reports itself when it
    is finalized while still open."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        global _opened
        super().__init__(*args, **kwargs)
        self.opened_in = current_test
        self.opened_at = _opening_site()
        self.tracked_open = True
        with _lock:
            _opened += 1
            _open_by_test[self.opened_in] += 1

    def _closed(self) -> None:
        with _lock:
            if self.tracked_open:
                self.tracked_open = False
                _open_by_test[self.opened_in] -= 1

    def close(self) -> None:
        super().close()  # raises (and the connection stays open) on a wrong thread
        if getattr(self, "tracked_open", False):
            self._closed()

    def __del__(self) -> None:
        try:
            self.in_transaction  # noqa: B018 - raises once closed (from any thread)
        except sqlite3.ProgrammingError:
            return
        with _lock:
            _leaks.append(f"{self.opened_at} (opened in {self.opened_in})")
        try:
            self.close()  # so that Python 3.13 does not warn about it a second time
        except sqlite3.Error:  # another thread's connection: its own finalizer closes it
            self._closed()
        finalize = getattr(super(), "__del__", None)  # Python 3.12+ closes it there
        if finalize is not None:
            finalize()


def _connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
    if "factory" in kwargs:  # a caller's own connection class is left alone
        return cast(sqlite3.Connection, real_connect(*args, **kwargs))
    return real_connect(*args, factory=TrackedConnection, **kwargs)


def install() -> None:
    sqlite3.connect = _connect  # type: ignore[assignment]


def opened() -> int:
    """How many connections were opened so far."""
    return _opened


def still_open(test: str) -> int:
    """How many connections opened during ``test`` are not closed yet."""
    with _lock:
        return _open_by_test[test]


def take_leaks() -> list[str]:
    """The connections finalized open since the last call (where each was opened)."""
    with _lock:
        found = list(_leaks)
        _leaks.clear()
    return found

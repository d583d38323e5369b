"""The ``trace_*`` methods both contexts offer; each context says how it logs."""

from __future__ import annotations

import logging

__all__ = ["TraceMethods"]


class TraceMethods:
    """``trace_info/warn/error/debug(msg)`` on top of the class's ``_trace``."""

    def _trace(self, level: int, msg: str) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def trace_info(self, msg: str) -> None:
        self._trace(logging.INFO, msg)

    def trace_warn(self, msg: str) -> None:
        self._trace(logging.WARNING, msg)

    trace_warning = trace_warn

    def trace_error(self, msg: str) -> None:
        self._trace(logging.ERROR, msg)

    def trace_debug(self, msg: str) -> None:
        self._trace(logging.DEBUG, msg)

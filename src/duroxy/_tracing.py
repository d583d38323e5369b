"""The ``trace_*`` methods both contexts offer (each context says how it logs), and
``init_tracing``, which sends duroxy's log records to a file or stderr."""

from __future__ import annotations

import logging
import os
import sys
import threading

__all__ = ["TraceMethods", "init_tracing"]


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


# ------------------------------------------------------------------ init_tracing
_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO,
           "warn": logging.WARNING, "warning": logging.WARNING, "error": logging.ERROR,
           "critical": logging.CRITICAL}
_installed: logging.Handler | None = None
_install_lock = threading.Lock()


class _Format(logging.Formatter):
    """The record's text, and the instance it concerns when duroxy says so."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        iid = getattr(record, "instance_id", None)
        return f"{text} [{iid}]" if iid else text


def init_tracing(path: str | os.PathLike[str] | None = None, log_level: str = "info") -> None:
    """Write duroxy's log records to the file at ``path`` (appended to; its directory
    must exist) or, without a path, to stderr: one handler on the ``duroxy`` logger,
    which with the handler is set to ``log_level`` (``"debug"``, ``"info"``, ``"warn"``,
    ``"error"``; ``"trace"`` is ``"debug"``), so records at that level are written
    whatever the root logger's level is. A second call replaces the handler the first
    one installed. A convenience: duroxy logs through :mod:`logging` either way.

    Raises ``ValueError`` for an unknown level and ``RuntimeError("Failed to open log
    file: ...")`` when the file cannot be opened."""
    global _installed
    level = _LEVELS.get(log_level.lower()) if isinstance(log_level, str) else None
    if level is None:
        raise ValueError(f"unknown log level {log_level!r}: use one of "
                         f"{', '.join(sorted(_LEVELS))}")
    handler: logging.Handler
    if path is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        try:
            handler = logging.FileHandler(os.fspath(path), mode="a", encoding="utf-8")
        except OSError as e:
            raise RuntimeError(f"Failed to open log file: {os.fspath(path)!r}: "
                               f"{e.strerror or e}") from e
    handler.setLevel(level)
    handler.setFormatter(_Format("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logger = logging.getLogger("duroxy")
    with _install_lock:
        old, _installed = _installed, handler
        if old is not None:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(level)
    if old is not None:
        old.close()

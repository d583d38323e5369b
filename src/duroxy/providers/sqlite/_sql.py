"""The SQL of the SQLite store, read from the ``sql/`` folder beside this module.

``queries.sql`` holds named statements (``-- name: NAME`` sections); files named
``NNNN_description.sql`` are schema migrations, applied in number order. Both are read
once per process with :mod:`importlib.resources`, so they work from a wheel or a zip.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from dataclasses import dataclass
from importlib import resources

__all__ = ["Migration", "migrations", "queries", "split_statements"]

_NAME_LINE = re.compile(r"^--\s*name:\s*([A-Za-z_][A-Za-z0-9_]*)\s*$")
_MIGRATION_FILE = re.compile(r"^(\d{4})_[A-Za-z0-9_]+\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def _sql_dir() -> resources.abc.Traversable:
    return resources.files(__package__ or "duroxy.providers.sqlite").joinpath("sql")


def parse_queries(text: str) -> dict[str, str]:
    """Split a ``-- name:`` file into ``{name: statement}``. Comment lines and the
    trailing semicolon are dropped (``sqlite3`` runs one statement per call)."""
    out: dict[str, str] = {}
    name: str | None = None
    body: list[str] = []

    def flush() -> None:
        if name is None:
            return
        sql = "\n".join(body).strip().rstrip(";").strip()
        if not sql:
            raise ValueError(f"query {name!r} is empty")
        if name in out:
            raise ValueError(f"query {name!r} is defined twice")
        out[name] = sql

    for line in text.splitlines():
        m = _NAME_LINE.match(line.strip())
        if m:
            flush()
            name, body = m.group(1), []
        elif name is not None and not line.lstrip().startswith("--"):
            body.append(line)
    flush()
    return out


def split_statements(script: str) -> list[str]:
    """Cut a script into complete statements (``sqlite3.complete_statement`` decides
    where one ends, so semicolons inside strings or triggers are safe)."""
    out: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        if not pending and (not line.strip() or line.lstrip().startswith("--")):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            out.append(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement at end of script: {pending.strip()[:60]!r}")
    return out


@functools.cache
def queries() -> dict[str, str]:
    return parse_queries(_sql_dir().joinpath("queries.sql").read_text(encoding="utf-8"))


@functools.cache
def migrations() -> tuple[Migration, ...]:
    found: list[Migration] = []
    for entry in _sql_dir().iterdir():
        m = _MIGRATION_FILE.match(entry.name)
        if m:
            text = entry.read_text(encoding="utf-8")
            found.append(Migration(int(m.group(1)), entry.name, tuple(split_statements(text))))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if len(set(versions)) != len(versions) or versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"SQLite migrations must be numbered 1..n without gaps: {versions}")
    return tuple(found)

"""The SQL of the PostgreSQL store: named statements and numbered migrations.

Statements live in ``sql/*.sql`` next to this module. A file named ``NNNN_<what>.sql``
is migration number ``NNNN``, run as one script, with ``{schema}`` replaced by the
quoted tenant schema. Every other file holds named statements, each starting at a
``-- name: <name>`` line, with ``%(name)s`` parameters. They name tables without a
schema: every pooled connection has the tenant schema as its ``search_path``.

Each named statement is prepared for psycopg once per process:

* compacted: comments dropped, whitespace runs made one space, no spaces around commas
  and parentheses;
* its named parameters turned into positional ``%b`` ones (:attr:`Statement.params`
  lists the name of each): every parameter is sent in binary format, which psycopg
  encodes several times faster than text (no quoting or escaping of array elements);
* checked to stay within psycopg's limits for caching the parsed form of a query (4 KiB,
  50 parameters), so that psycopg parses each statement once per process rather than
  on every execution;
* prefixed with a comment naming the schema, which shows in ``pg_stat_activity`` and
  the server log (the table names do not).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from psycopg import sql

__all__ = [
    "Migration",
    "Statement",
    "advisory_key",
    "channel_name",
    "load_migrations",
    "load_statements",
    "validate_schema",
]

_MIGRATION_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")
_NAME_LINE = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
#: psycopg parses a query with parameters once and caches the result only up to this
#: length and number of parameters (psycopg._queries.MAX_CACHED_STATEMENT_LENGTH and
#: MAX_CACHED_STATEMENT_PARAMS); others are parsed anew on every execution. The length
#: limit leaves room for the schema comment (at most 80 bytes).
_PARSE_CACHE_LIMIT = 4096 - 80
_PARAMS_CACHE_LIMIT = 50
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
_SPACE = re.compile(r"\s+")
_PUNCTUATION = re.compile(r" ?([(),]) ?")
# A plain PostgreSQL identifier: quoting keeps its case, and the length limit (63 bytes,
# NAMEDATALEN - 1) keeps the server from truncating it silently.
_SCHEMA = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


@dataclass(frozen=True, slots=True)
class Statement:
    """A named statement ready to execute: ``sql`` with positional ``%b`` parameters,
    the ``n``-th taking the value named ``params[n]``."""

    name: str
    sql: bytes
    params: tuple[str, ...]

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        """The positional parameters from named ``values``."""
        return [values[n] for n in self.params]

    def for_schema(self, schema: str) -> Statement:
        # schema names are validated identifiers: they cannot close the comment
        return Statement(self.name, f"/* duroxy {schema} */ ".encode() + self.sql,
                         self.params)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    script: bytes


def validate_schema(schema: str) -> str:
    """Return ``schema`` if it is a usable schema name, else raise ``ValueError``."""
    if not isinstance(schema, str) or not _SCHEMA.fullmatch(schema):
        raise ValueError(
            f"invalid schema name {schema!r}: use 1 to 63 ASCII letters, digits and "
            "underscores, not starting with a digit")
    if schema.lower().startswith("pg_"):
        raise ValueError(f"invalid schema name {schema!r}: names starting with pg_ are "
                         "reserved by PostgreSQL")
    return schema


def channel_name(schema: str) -> str:
    """The LISTEN/NOTIFY channel of a schema. Channel names are identifiers (at most 63
    bytes), so a long schema name is replaced by a digest instead of being cut, which
    could make two schemas share a channel."""
    name = f"duroxy_{schema}"
    if len(name) <= 63:
        return name
    return "duroxy_" + hashlib.sha256(schema.encode()).hexdigest()[:40]


def advisory_key(schema: str) -> int:
    """The ``pg_advisory_xact_lock`` key that serializes migrations of one schema: a
    signed 64-bit hash of the schema name, the same on every node."""
    digest = hashlib.sha256(f"duroxy:migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _render(text: str, schema: str) -> bytes:
    return sql.SQL(text).format(schema=sql.Identifier(schema)).as_bytes(None)


def _strip_comments(text: str) -> str:
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("--")]
    return "\n".join(ln for ln in lines if ln.strip())


def _compact(name: str, text: str) -> Statement:
    """The statement ``text`` named ``name``, compacted with positional parameters. The
    statements hold no string literal with whitespace, commas or parentheses, so
    compacting changes no value."""
    text = _PUNCTUATION.sub(r"\1", _SPACE.sub(" ", _strip_comments(text)).strip())
    params = tuple(_PLACEHOLDER.findall(text))
    compact = _PLACEHOLDER.sub("%b", text).encode()
    if len(compact) > _PARSE_CACHE_LIMIT or len(params) > _PARAMS_CACHE_LIMIT:
        raise RuntimeError(
            f"statement {name!r} has {len(compact)} bytes and {len(params)} parameters; "
            f"psycopg caches the parsing of statements up to {_PARSE_CACHE_LIMIT} bytes and "
            f"{_PARAMS_CACHE_LIMIT} parameters only")
    return Statement(name, compact, params)


def _sql_files() -> list[tuple[str, str]]:
    folder = resources.files(__package__).joinpath("sql")
    return sorted((f.name, f.read_text(encoding="utf-8"))
                  for f in folder.iterdir() if f.name.endswith(".sql"))


@functools.cache
def _statements() -> dict[str, Statement]:
    out: dict[str, Statement] = {}
    for filename, text in _sql_files():
        if _MIGRATION_FILE.match(filename):
            continue
        parts = _NAME_LINE.split(text)
        # parts = [preamble, name1, body1, name2, body2, ...]
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in out:
                raise RuntimeError(f"statement {name!r} defined twice (in {filename})")
            out[name] = _compact(name, body)
    return out


def load_statements(schema: str) -> dict[str, Statement]:
    """Every named statement, for the provider of ``schema``."""
    return {name: st.for_schema(schema) for name, st in _statements().items()}


def load_migrations(schema: str) -> list[Migration]:
    """Migrations in version order, rendered for ``schema``."""
    found: list[Migration] = []
    for filename, text in _sql_files():
        m = _MIGRATION_FILE.match(filename)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), _render(text, schema)))
    versions = [mig.version for mig in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 1, 2, 3 ... without gaps: {versions}")
    return found

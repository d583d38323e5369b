"""The SQL of the PostgreSQL store: named statements and numbered migrations.

Statements live in ``sql/*.sql`` next to this module. A file named ``NNNN_<what>.sql``
is migration number ``NNNN``, run as one script, with ``{schema}`` replaced by the
quoted tenant schema. Every other file holds named statements, each starting at a
``-- name: <name>`` line, with ``%(name)s`` parameters. They name tables without a
schema: every pooled connection has the tenant schema as its ``search_path``. A block
starting at ``-- fragment: <name>`` is text that statements share: a line
``-- include: <name>`` in a statement stands for it.

Each named statement is turned once per process into a :class:`Statement`: comments
dropped, whitespace runs made one space, and its parameters numbered (``$1``, ``$2``
... in order of first use, :attr:`Statement.params` naming each) for psycopg's raw
cursor, which sends a statement as it is: no parsing of the text on every execution,
whatever its length. For psycopg before 3.2, which has no raw cursor, ``named`` keeps
psycopg's own placeholders (``%(name)b``). A comment naming the schema starts every
statement of a provider, so ``pg_stat_activity`` and the server log show which store a
statement belongs to (its table names do not).
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
_NAME_LINE = re.compile(r"^--\s*(name|fragment):\s*(\w+)\s*$", re.MULTILINE)
_INCLUDE_LINE = re.compile(r"^--\s*include:\s*(\w+)\s*$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
_SPACE = re.compile(r"\s+")
# A plain PostgreSQL identifier: quoting keeps its case, and the length limit (63 bytes,
# NAMEDATALEN - 1) keeps the server from truncating it silently.
_SCHEMA = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


@dataclass(frozen=True, slots=True)
class Statement:
    """A named statement ready to execute. ``raw`` has numbered parameters, ``$n``
    taking the value named ``params[n - 1]``; ``named`` is the same statement with
    psycopg's named placeholders (binary format)."""

    name: str
    raw: bytes
    params: tuple[str, ...]
    named: bytes

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        """The numbered parameters from named ``values``."""
        return [values[n] for n in self.params]

    def for_schema(self, schema: str) -> Statement:
        # schema names are validated identifiers: they cannot close the comment
        tag = f"/* duroxy {schema} */ ".encode()
        return Statement(self.name, tag + self.raw, self.params, tag + self.named)


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
    """The statement ``text`` named ``name``, on one line, without comments. No string
    literal in the statements holds a run of whitespace."""
    text = _SPACE.sub(" ", _strip_comments(text)).strip()
    numbers: dict[str, int] = {}
    for param in _PLACEHOLDER.findall(text):
        numbers.setdefault(param, len(numbers) + 1)
    if "$" in text:
        raise RuntimeError(f"statement {name!r} holds a '$' of its own")
    raw = _PLACEHOLDER.sub(lambda m: f"${numbers[m.group(1)]}", text)
    named = _PLACEHOLDER.sub(r"%(\1)b", text)
    return Statement(name, raw.encode(), tuple(numbers), named.encode())


def _sql_files() -> list[tuple[str, str]]:
    folder = resources.files(__package__).joinpath("sql")
    return sorted((f.name, f.read_text(encoding="utf-8"))
                  for f in folder.iterdir() if f.name.endswith(".sql"))


@functools.cache
def _statements() -> dict[str, Statement]:
    bodies: dict[str, str] = {}
    fragments: dict[str, str] = {}
    for filename, text in _sql_files():
        if _MIGRATION_FILE.match(filename):
            continue
        parts = _NAME_LINE.split(text)
        # parts = [preamble, kind1, name1, body1, kind2, name2, body2, ...]
        for kind, name, body in zip(parts[1::3], parts[2::3], parts[3::3], strict=True):
            if name in bodies or name in fragments:
                raise RuntimeError(f"{name!r} defined twice (in {filename})")
            (fragments if kind == "fragment" else bodies)[name] = body

    def include(m: re.Match[str]) -> str:
        if m.group(1) not in fragments:
            raise RuntimeError(f"unknown SQL fragment {m.group(1)!r}")
        return fragments[m.group(1)]

    return {name: _compact(name, _INCLUDE_LINE.sub(include, body))
            for name, body in bodies.items()}


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

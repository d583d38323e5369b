"""The SQL of the PostgreSQL store: named statements and numbered migrations.

Statements live in ``sql/*.sql`` next to this module. A file named ``NNNN_<what>.sql``
is migration number ``NNNN``, run as one script. Every other file holds named
statements, each starting at a ``-- name: <name>`` line. ``{schema}`` in either is
replaced by the quoted tenant schema, once, when a provider is built; the rendered
statements are kept as bytes so executing one costs no composition.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from psycopg import sql

__all__ = [
    "Migration",
    "advisory_key",
    "channel_name",
    "load_migrations",
    "load_statements",
    "validate_schema",
]

_MIGRATION_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")
_NAME_LINE = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
# A plain PostgreSQL identifier: quoting keeps its case, and the length limit (63 bytes,
# NAMEDATALEN - 1) keeps the server from truncating it silently.
_SCHEMA = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


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


def _sql_files() -> list[tuple[str, str]]:
    folder = resources.files(__package__).joinpath("sql")
    return sorted((f.name, f.read_text(encoding="utf-8"))
                  for f in folder.iterdir() if f.name.endswith(".sql"))


def load_statements(schema: str) -> dict[str, bytes]:
    """Every named statement, rendered for ``schema``."""
    out: dict[str, bytes] = {}
    for filename, text in _sql_files():
        if _MIGRATION_FILE.match(filename):
            continue
        parts = _NAME_LINE.split(text)
        # parts = [preamble, name1, body1, name2, body2, ...]
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in out:
                raise RuntimeError(f"statement {name!r} defined twice (in {filename})")
            out[name] = _render(_strip_comments(body), schema)
    return out


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

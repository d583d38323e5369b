"""The SQL of the PostgreSQL store: named statements and numbered migrations.

Statements live in ``sql/*.sql`` next to this module. A file named ``NNNN_<what>.sql``
is migration number ``NNNN``, run as one script, with ``{schema}`` replaced by the
quoted tenant schema. Every other file holds named statements, each starting at a
``-- name: <name>`` line, with ``%(name)s`` parameters. They name tables without a
schema: every pooled connection has the tenant schema as its ``search_path``. A block
starting at ``-- fragment: <name>`` is text that statements share: a line
``-- include: <name>`` in a statement stands for it.

A statement may hold parts that only some calls need: lines between ``-- if: <flag>``
and ``-- end`` are kept only when ``flag`` is on, lines between ``-- unless: <flag>``
and ``-- end`` only when it is off. Such a statement is compiled once for every
combination of its flags (:meth:`Statements.variant` picks one), so a call whose turn
sends no message, say, executes a statement without the CTEs that would insert them:
PostgreSQL sets up every node of a plan on each execution, empty or not, and for the
turn statements that set-up costs about as much as their work.

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

from ._arrays import ARRAY_TYPES, typed

__all__ = [
    "Migration",
    "Statement",
    "Statements",
    "advisory_key",
    "channel_name",
    "load_migrations",
    "load_statements",
    "session_setup",
    "validate_schema",
]

_MIGRATION_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")
_NAME_LINE = re.compile(r"^--\s*(name|fragment):\s*(\w+)\s*$", re.MULTILINE)
_INCLUDE_LINE = re.compile(r"^--\s*include:\s*(\w+)\s*$", re.MULTILINE)
_CONDITION_LINE = re.compile(r"^\s*--\s*(?:(if|unless):\s*(\w+)|(end))\s*$")
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
# a parameter cast to an array type, in every statement's own spelling: %(ids)s::text[]
_ARRAY_CAST = re.compile(r"%\((\w+)\)s::(\w+)\[\]")
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
    #: for each parameter cast to an array type, the list class that sends it as that
    #: type (see ``_arrays``); None for the others
    arrays: tuple[type[list[Any]] | None, ...] = ()

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        """The numbered parameters from named ``values``."""
        if not self.arrays:
            return [values[n] for n in self.params]
        return [typed(cls, values[n]) for n, cls in zip(self.params, self.arrays,
                                                        strict=True)]

    def for_schema(self, schema: str) -> Statement:
        # schema names are validated identifiers: they cannot close the comment
        tag = f"/* duroxy {schema} */ ".encode()
        return Statement(self.name, tag + self.raw, self.params, tag + self.named,
                         self.arrays)


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


def session_setup(schema: str, *, read_only: bool = False) -> bytes:
    """The statement run once on every new pooled connection of ``schema``'s store:

    - search_path: the statements name their tables without a schema (pg_temp goes last
      so that no temporary table can shadow one);
    - no hash or merge joins: every statement joins a few rows found by key to rows
      found by key, for which index lookups in nested loops are right whatever the
      statistics say. A hash join reads the whole inner table; the planner picks one
      while tables are small, or for instance_locks (one row per instance ever) up to
      some ten thousand rows, and a prepared statement keeps its plan until the table
      is analyzed again;
    - no bitmap scans: a bitmap scan never marks the index entries of dead rows as
      dead, so a queue's rows consumed since the last vacuum were read again by every
      lookup of one instance's messages (a turn's check for messages waiting, a
      fetch's delivery), and a join over 100,000 activities cost 3.7 times as much per
      turn as one over 20,000; a plain index scan marks them, and the index sheds them
      as it grows. The join over 100,000 went from 990 to 690 us per activity;
    - generic plans at once (``plan_cache_mode = force_generic_plan``): the hot
      statements' plans do not depend on their parameter values, so planning each of
      them for its first five executions on every connection, as the server's default
      does, is wasted work, and it falls on a runtime's first turns: a 1 s timer's turn
      in a fresh worker came 1.2 ms later without it (interleaved medians, 3.5 against
      4.7 ms). Statements whose plans do depend on their parameters (filters that may be
      NULL) are not prepared at all (the provider's ``_UNPREPARED``);
    - ``read_only``: every transaction read-only, so the server refuses any write.
    """
    ro = ", set_config('default_transaction_read_only', 'on', false)" if read_only else ""
    return sql.SQL(
        "SELECT set_config('search_path', {}, false),"
        " set_config('enable_hashjoin', 'off', false),"
        " set_config('enable_mergejoin', 'off', false),"
        " set_config('enable_bitmapscan', 'off', false),"
        " set_config('plan_cache_mode', 'force_generic_plan', false)" + ro).format(
        sql.Literal(sql.Identifier(schema).as_string(None) + ", pg_temp")).as_bytes(None)


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
    casts: dict[str, set[str]] = {}
    for param, elem in _ARRAY_CAST.findall(text):
        casts.setdefault(param, set()).add(elem.lower())
    arrays = tuple(ARRAY_TYPES.get(next(iter(casts[p]))) if len(casts.get(p, ())) == 1
                   else None for p in numbers)
    raw = _PLACEHOLDER.sub(lambda m: f"${numbers[m.group(1)]}", text)
    named = _PLACEHOLDER.sub(r"%(\1)b", text)
    return Statement(name, raw.encode(), tuple(numbers), named.encode(),
                     arrays if any(arrays) else ())


def _sql_files() -> list[tuple[str, str]]:
    folder = resources.files(__package__).joinpath("sql")
    return sorted((f.name, f.read_text(encoding="utf-8"))
                  for f in folder.iterdir() if f.name.endswith(".sql"))


def _flags(name: str, text: str) -> tuple[str, ...]:
    """The flags of ``text``'s conditional parts, checking that they are well formed
    (not nested: each part ends before the next begins)."""
    found: dict[str, None] = {}
    open_flag: str | None = None
    for line in text.splitlines():
        m = _CONDITION_LINE.match(line)
        if not m:
            continue
        if m.group(3):
            if open_flag is None:
                raise RuntimeError(f"statement {name!r}: '-- end' without '-- if'")
            open_flag = None
        elif open_flag is not None:
            raise RuntimeError(f"statement {name!r}: part {m.group(2)!r} inside part "
                               f"{open_flag!r}")
        else:
            open_flag = m.group(2)
            found[open_flag] = None
    if open_flag is not None:
        raise RuntimeError(f"statement {name!r}: part {open_flag!r} has no '-- end'")
    return tuple(found)


def _select(text: str, on: frozenset[str]) -> str:
    """``text`` with the parts its flags ``on`` leave out removed."""
    kept: list[str] = []
    keep = True
    for line in text.splitlines():
        m = _CONDITION_LINE.match(line)
        if m is None:
            if keep:
                kept.append(line)
        elif m.group(3):
            keep = True
        else:
            keep = (m.group(2) in on) == (m.group(1) == "if")
    return "\n".join(kept)


class Statements(dict[str, Statement]):
    """Named statements. A statement with conditional parts maps to its variant with
    every flag on; :meth:`variant` gives the others."""

    def __init__(self, plain: dict[str, Statement], flags: dict[str, frozenset[str]],
                 variants: dict[tuple[str, frozenset[str]], Statement]) -> None:
        super().__init__(plain)
        self._flags = flags
        self._variants = variants

    def variant(self, name: str, on: frozenset[str]) -> Statement:
        """Statement ``name`` with the flags ``on`` on and its other flags off (flags it
        does not have are ignored)."""
        flags = self._flags.get(name)
        return self[name] if not flags else self._variants[(name, on & flags)]

    def variants(self, name: str) -> list[Statement]:
        """Every variant of statement ``name`` (just the one without flags)."""
        return [st for (n, _), st in self._variants.items() if n == name] or [self[name]]

    def for_schema(self, schema: str) -> Statements:
        variants = {k: st.for_schema(schema) for k, st in self._variants.items()}
        plain = {n: variants[(n, self._flags[n])] if n in self._flags
                 else st.for_schema(schema) for n, st in self.items()}
        return Statements(plain, self._flags, variants)


@functools.cache
def _statements() -> Statements:
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

    plain: dict[str, Statement] = {}
    flags: dict[str, frozenset[str]] = {}
    variants: dict[tuple[str, frozenset[str]], Statement] = {}
    for name, body in bodies.items():
        body = _INCLUDE_LINE.sub(include, body)
        names = _flags(name, body)
        if not names:
            plain[name] = _compact(name, body)
            continue
        flags[name] = frozenset(names)
        for bits in range(1 << len(names)):
            on = frozenset(f for i, f in enumerate(names) if bits >> i & 1)
            variants[(name, on)] = _compact(name, _select(body, on))
        plain[name] = variants[(name, flags[name])]
    return Statements(plain, flags, variants)


def load_statements(schema: str) -> Statements:
    """Every named statement, for the provider of ``schema``."""
    return _statements().for_schema(schema)


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

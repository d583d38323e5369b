"""Arrays whose PostgreSQL type is known before they are sent.

psycopg's generic list dumper works out an array's element type on every execution by
looking at its elements, then picks a dumper for them; for the turn statements, with a
handful of arrays each, that was the larger part of preparing the parameters. The
statements cast every array parameter (``%(payloads)s::text[]``), so its type is known
from the SQL: :func:`typed` wraps a list in a subclass whose dumper has the array and
element types fixed, and psycopg dumps it straight away. :func:`register` installs those
dumpers on a connection.
"""

from __future__ import annotations

from typing import Any

from psycopg.abc import AdaptContext
from psycopg.types.array import ListBinaryDumper

__all__ = ["ARRAY_TYPES", "register", "typed"]


class _Array(list[Any]):
    """A list sent as one PostgreSQL array type (see the subclasses)."""

    __slots__ = ()


class TextArray(_Array):
    __slots__ = ()


class IntArray(_Array):
    """Sent as ``int8[]``, whatever the cast says: psycopg's binary int4 dumper does not
    check its range, so a value beyond int4 would be sent wrapped; the statement's own
    ``::int[]`` cast converts on the server, which refuses what does not fit."""

    __slots__ = ()


class ByteaArray(_Array):
    __slots__ = ()


class Float8Array(_Array):
    __slots__ = ()


def _dumper(array_oid: int, elem_oid: int) -> type[ListBinaryDumper]:
    return type(f"ListBinaryDumper{array_oid}", (ListBinaryDumper,),
                {"oid": array_oid, "element_oid": elem_oid})


# (class, array oid, element oid), oids from PostgreSQL's pg_type catalogue
_TYPES: tuple[tuple[type[_Array], int, int], ...] = (
    (TextArray, 1009, 25),
    (IntArray, 1016, 20),
    (ByteaArray, 1001, 17),
    (Float8Array, 1022, 701),
)
_DUMPERS = tuple((cls, _dumper(aoid, eoid)) for cls, aoid, eoid in _TYPES)

#: the element type names of the statements' array casts (``::int[]``) and their classes
ARRAY_TYPES: dict[str, type[_Array]] = {
    "text": TextArray, "int": IntArray, "int4": IntArray, "integer": IntArray,
    "int8": IntArray, "bigint": IntArray,
    "bytea": ByteaArray, "float8": Float8Array,
}


def typed(cls: type[list[Any]] | None, value: Any) -> Any:
    """``value`` as ``cls`` when it is a plain list (``None`` and anything else as is)."""
    if cls is not None and type(value) is list:
        return cls(value)
    return value


def register(context: AdaptContext) -> None:
    """Install the fixed-type dumpers on a connection (or any adaptation context)."""
    for cls, dumper in _DUMPERS:
        context.adapters.register_dumper(cls, dumper)

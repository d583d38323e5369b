"""Encoding: a value to its JSON text (see the package docstring for the forms).

Plain JSON structures go straight to the C encoder; anything else is converted by a
per-type conversion chosen once (``_encoder_for``) and cached.
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import datetime as _dt
import enum
import inspect
import itertools
import uuid
from decimal import Decimal
from typing import Any

from .. import _limits
from ..errors import PayloadError
from ._common import (
    Conv,
    Fail,
    NoneType,
    dump_json,
    ident,
    is_pydantic_model,
    key_segment,
    short,
)

__all__ = ["encode", "to_json_value"]

_PRIMITIVES: frozenset[type] = frozenset({str, int, float, bool, NoneType})


# -------------------------------------------------------------------- encoding


def _is_plain(value: Any) -> bool:
    """True when ``value`` is built only of exact dicts with str keys, lists, tuples
    and JSON primitives: then the C encoder alone writes the text the conversion
    path would write."""
    t = type(value)
    if t is dict:
        for k in value:
            if type(k) is not str:
                return False
        items = value.values()
    elif t is list or t is tuple:
        items = value
    else:
        return t in _PRIMITIVES
    for x in items:
        tx = type(x)
        if tx not in _PRIMITIVES and not (
            (tx is dict or tx is list or tx is tuple) and _is_plain(x)
        ):
            return False
    return True


def encode(value: Any, *, path: str = "") -> str:
    """Compact JSON text of ``value``, unicode unescaped. ``path`` names the value in
    error messages, e.g. ``"input"``. Raises :class:`PayloadError` for a value without
    a JSON form or one bigger than ``MAX_PAYLOAD_BYTES``."""
    try:
        if _is_plain(value):
            return _sized(dump_json(value), path)
    except (ValueError, RecursionError):
        pass  # NaN, an over-long int, deep or cyclic: the conversion below says where
    converted = to_json_value(value, path=path)
    try:
        text = dump_json(converted)
    except ValueError as exc:  # an int beyond sys.get_int_max_str_digits()
        raise PayloadError(f"cannot encode value{' at ' + path if path else ''}: {exc}") from None
    return _sized(text, path)


def _sized(text: str, path: str) -> str:
    """``text``, unless its UTF-8 form is over the payload limit (read here at every
    call, so that a test may lower it)."""
    limit = _limits.MAX_PAYLOAD_BYTES
    if len(text) <= limit // 4:  # no character takes more than 4 bytes
        return text
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise PayloadError(
            f"value{' at ' + path if path else ''} is {size:,} bytes of JSON, over the "
            f"{limit:,}-byte payload limit (duroxy.codec.MAX_PAYLOAD_BYTES): store large "
            "data elsewhere and pass a reference to it")
    return text


def to_json_value(value: Any, *, path: str = "") -> Any:
    """The plain JSON structure (dicts, lists, str, int, float, bool, None) of ``value``."""
    try:
        return _conv(value)
    except Fail as fail:
        raise PayloadError(fail.message(path)) from fail.__cause__
    except RecursionError:
        deep = _no_form(value, "it nests too deeply or contains itself")
        raise PayloadError(deep.message(path)) from None


_ENCODERS: dict[type, Conv] = {}


def _conv(value: Any) -> Any:
    t = type(value)
    enc = _ENCODERS.get(t)
    if enc is None:
        enc = _ENCODERS[t] = _encoder_for(t)
    return enc(value)


def _no_form(value: Any, detail: str = "no JSON form") -> Fail:
    return Fail(f"cannot encode value of type {type(value).__qualname__!r}", detail)


def _no_json_form(value: Any) -> Any:
    raise _no_form(value)


def _describe_awaitable(value: Any) -> str:
    """What made an awaitable, in the words of the code that made it: a durable future
    names its ``ctx.schedule_*`` call, a task its name, a coroutine its function."""
    describe = getattr(value, "describe", None)
    if callable(describe):
        try:
            return str(describe())
        except Exception:
            pass
    get_name = getattr(value, "get_name", None)  # an asyncio.Task
    if callable(get_name):
        name = str(get_name())
        if name.startswith("ctx."):
            return name
        coro = getattr(value, "get_coro", lambda: None)()
        if coro is not None:
            return f"task running {getattr(coro, '__qualname__', name)}()"
        return f"task {name!r}"
    qualname = getattr(value, "__qualname__", None)  # a coroutine object
    if isinstance(qualname, str) and inspect.iscoroutine(value):
        return f"coroutine {qualname}()"
    return type(value).__qualname__


def _enc_awaitable(value: Any) -> Any:
    # An awaitable is never a payload: it is the result of a call whose value was
    # meant, e.g. `return ctx.schedule_activity(...)` without `await`.
    raise Fail(f"cannot encode the un-awaited {_describe_awaitable(value)}",
               "did you forget `await`? A value is expected here, and this is what the "
               "call returned, not its result (write `await` before the call)")


def _enc_float(value: float) -> float:
    if value - value == 0.0:  # false for NaN and both infinities
        return float.__float__(value)
    raise _no_form(value, f"{value!r} has no JSON form")


def _enc_key(key: Any) -> str:
    """A dict key as a JSON object key: str stays; int, and what encodes to str or int
    (enums, UUIDs, dates), becomes text; anything else is refused."""
    try:
        c = _conv(key)
    except Fail:
        c = None
    if type(c) is str or type(c) is int:
        return str(c)
    raise Fail(
        f"cannot encode dict key {short(key)} of type {type(key).__qualname__!r}",
        "JSON object keys must be strings (int keys are written as strings)",
    )


def _enc_mapping(value: cabc.Mapping[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, x in value.items():
        key = k if type(k) is str else _enc_key(k)
        try:
            out[key] = _conv(x)
        except Fail as fail:
            fail.segments.append(key_segment(key))
            raise
    if len(out) != len(value):
        raise _no_form(value, "two of its keys give the same JSON key")
    return out


def _enc_sequence(value: cabc.Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for i, x in enumerate(value):
        try:
            out.append(_conv(x))
        except Fail as fail:
            fail.segments.append(f"[{i}]")
            raise
    return out


def _sort_key(x: Any) -> Any:
    return x.value if isinstance(x, enum.Enum) else x


def _enc_set(value: cabc.Set[Any]) -> list[Any]:
    items = list(value)
    try:
        items.sort(key=_sort_key)
        # Sorting by a partial order (frozensets by inclusion, NaN) succeeds yet depends
        # on iteration order; a strictly increasing result proves the order was total.
        ordered = all(_sort_key(a) < _sort_key(b) for a, b in itertools.pairwise(items))
    except TypeError:
        ordered = False
    if not ordered:
        for x in items:  # an element with no JSON form makes the better message
            try:
                _conv(x)
            except Fail as fail:
                fail.segments.append("[*]")
                raise
        raise _no_form(value, "its elements have no total order, so no deterministic form")
    return _enc_sequence(items)


def _dataclass_encoder(cls: type) -> Conv:
    names = tuple(f.name for f in dataclasses.fields(cls))

    def enc(value: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in names:
            try:
                out[name] = _conv(getattr(value, name))
            except Fail as fail:
                fail.segments.append("." + name)
                raise
        return out

    return enc


def _enc_pydantic(value: Any) -> Any:
    try:
        dumped = value.model_dump(mode="json")
    except Exception as exc:  # PydanticSerializationError, or a user serializer's error
        raise _no_form(value, f"pydantic cannot serialise it: {exc}") from exc
    return _conv(dumped)  # checks what pydantic let through (NaN) and copies


def _encoder_for(t: type) -> Conv:
    """The conversion for every value of exact type ``t`` (cached by the caller)."""
    if t in (str, int, bool, NoneType):
        return ident
    if t is float or (issubclass(t, float) and not issubclass(t, enum.Enum)):
        return _enc_float
    if issubclass(t, enum.Enum):
        return lambda v: _conv(v.value)
    if is_pydantic_model(t):
        return _enc_pydantic
    if dataclasses.is_dataclass(t):
        return _dataclass_encoder(t)
    if issubclass(t, str):
        return str.__str__  # an exact str copy
    if issubclass(t, int):
        return int.__int__
    if issubclass(t, (_dt.date, _dt.time)):  # datetime is a date
        return lambda v: v.isoformat()
    if issubclass(t, _dt.timedelta):
        # total_seconds() divides the exact microsecond count once, so
        # timedelta(seconds=...) gives the same value back (exact up to ~142 years).
        return lambda v: v.total_seconds()
    if issubclass(t, (uuid.UUID, Decimal)):
        return str
    if issubclass(t, (bytes, bytearray, memoryview)):
        return _no_json_form
    if issubclass(t, cabc.Mapping):
        return _enc_mapping
    if issubclass(t, cabc.Set):
        return _enc_set
    if issubclass(t, cabc.Sequence):  # list, tuple, NamedTuple, deque, range
        return _enc_sequence
    if issubclass(t, cabc.Awaitable):  # a future, task or coroutine
        return _enc_awaitable
    return _no_json_form



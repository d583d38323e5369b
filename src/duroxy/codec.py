"""Payloads as JSON text, decoded back to the types their annotations name.

Orchestration and activity inputs and outputs, event data and custom statuses are
stored as JSON text. ``encode`` turns a value into that text; ``decode`` parses it and,
given an annotation, rebuilds the annotated type:

* dataclass, TypedDict, pydantic v2 model: JSON object (NamedTuple: array);
* Enum, IntEnum, StrEnum: the member's value;
* datetime, date, time: ISO 8601 text (naive stays naive, aware keeps its offset);
* timedelta: seconds as a float; UUID and Decimal: text (Decimal exact);
* tuple, list, set, frozenset: array; dict: object with str keys (int keys are
  written as text and read back as int when annotated ``dict[int, T]``).

Invariants:

* Encoding is deterministic: the same value always gives the same text. Dicts keep
  insertion order; sets are sorted, and a set without a total order is refused.
* A value without a JSON form (an object, a function, bytes, NaN) raises
  :class:`PayloadError` naming its type and its path inside the value; so does a
  value that does not fit its annotation, naming the expected type and the path.
* pydantic is never imported here: a pydantic model exists only once its user has
  imported pydantic, so the codec finds it in ``sys.modules``.

Speed: plain JSON structures go straight to the C encoder, and each annotation's
decoding plan (one function) is built once and cached.

Layout: this module holds the public API, the encoding and the reading of function
annotations; the decoding plans live in :mod:`duroxy._codec_decode`, and what both
sides share (the failure carrier, type and path naming, pydantic detection) in
:mod:`duroxy._codec_common`.
"""

from __future__ import annotations

import collections.abc as cabc
import contextlib
import dataclasses
import datetime as _dt
import enum
import functools
import inspect
import itertools
import json
import re
import types
import typing
import uuid
import weakref
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from ._codec_common import (
    _Conv,
    _Fail,
    _ident,
    _is_pydantic_model,
    _key_segment,
    _NoneType,
    _short,
    _tname,
    dump_json,
)
from ._codec_decode import _plan
from .errors import PayloadError

__all__ = [
    "decode",
    "encode",
    "from_json_value",
    "input_type_of",
    "output_type_of",
    "to_json_value",
]

_PRIMITIVES: frozenset[type] = frozenset({str, int, float, bool, _NoneType})


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


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
    error messages, e.g. ``"input"``."""
    try:
        if _is_plain(value):
            return dump_json(value)
    except (ValueError, RecursionError):
        pass  # NaN, an over-long int, deep or cyclic: the conversion below says where
    converted = to_json_value(value, path=path)
    try:
        return dump_json(converted)
    except ValueError as exc:  # an int beyond sys.get_int_max_str_digits()
        raise PayloadError(f"cannot encode value{' at ' + path if path else ''}: {exc}") from None


def to_json_value(value: Any, *, path: str = "") -> Any:
    """The plain JSON structure (dicts, lists, str, int, float, bool, None) of ``value``."""
    try:
        return _conv(value)
    except _Fail as fail:
        raise PayloadError(fail.message(path)) from fail.__cause__
    except RecursionError:
        deep = _no_form(value, "it nests too deeply or contains itself")
        raise PayloadError(deep.message(path)) from None


_ENCODERS: dict[type, _Conv] = {}


def _conv(value: Any) -> Any:
    t = type(value)
    enc = _ENCODERS.get(t)
    if enc is None:
        enc = _ENCODERS[t] = _encoder_for(t)
    return enc(value)


def _no_form(value: Any, detail: str = "no JSON form") -> _Fail:
    return _Fail(f"cannot encode value of type {type(value).__qualname__!r}", detail)


def _no_json_form(value: Any) -> Any:
    raise _no_form(value)


def _enc_float(value: float) -> float:
    if value - value == 0.0:  # false for NaN and both infinities
        return float.__float__(value)
    raise _no_form(value, f"{value!r} has no JSON form")


def _enc_key(key: Any) -> str:
    """A dict key as a JSON object key: str stays; int, and what encodes to str or int
    (enums, UUIDs, dates), becomes text; anything else is refused."""
    try:
        c = _conv(key)
    except _Fail:
        c = None
    if type(c) is str or type(c) is int:
        return str(c)
    raise _Fail(
        f"cannot encode dict key {_short(key)} of type {type(key).__qualname__!r}",
        "JSON object keys must be strings (int keys are written as strings)",
    )


def _enc_mapping(value: cabc.Mapping[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, x in value.items():
        key = k if type(k) is str else _enc_key(k)
        try:
            out[key] = _conv(x)
        except _Fail as fail:
            fail.segments.append(_key_segment(key))
            raise
    if len(out) != len(value):
        raise _no_form(value, "two of its keys give the same JSON key")
    return out


def _enc_sequence(value: cabc.Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for i, x in enumerate(value):
        try:
            out.append(_conv(x))
        except _Fail as fail:
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
            except _Fail as fail:
                fail.segments.append("[*]")
                raise
        raise _no_form(value, "its elements have no total order, so no deterministic form")
    return _enc_sequence(items)


def _dataclass_encoder(cls: type) -> _Conv:
    names = tuple(f.name for f in dataclasses.fields(cls))

    def enc(value: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in names:
            try:
                out[name] = _conv(getattr(value, name))
            except _Fail as fail:
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


def _encoder_for(t: type) -> _Conv:
    """The conversion for every value of exact type ``t`` (cached by the caller)."""
    if t in (str, int, bool, _NoneType):
        return _ident
    if t is float or (issubclass(t, float) and not issubclass(t, enum.Enum)):
        return _enc_float
    if issubclass(t, enum.Enum):
        return lambda v: _conv(v.value)
    if _is_pydantic_model(t):
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
    return _no_json_form


# -------------------------------------------------------------------- decoding


def decode(text: str | bytes | None, tp: Any = None, *, path: str = "") -> Any:
    """Parse JSON ``text`` and build ``tp`` from it (plain JSON when ``tp`` is None or
    Any). ``None`` text means no value and gives None."""
    if text is None:
        return None
    if not isinstance(text, str):
        text = bytes(text).decode("utf-8", "surrogatepass")
    try:
        obj = _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:  # bad JSON, NaN/Infinity, too deep
        where = f" at {path}" if path else ""
        raise PayloadError(f"invalid JSON payload{where}: {exc or 'nested too deeply'}") from None
    return from_json_value(obj, tp, path=path)


def from_json_value(obj: Any, tp: Any = None, *, path: str = "") -> Any:
    """Build the annotated type ``tp`` from the plain JSON value ``obj``."""
    if tp is None or tp is Any:
        return obj
    try:
        return _plan(tp)(obj)
    except _Fail as fail:
        raise PayloadError(fail.message(path, f" ({_tname(tp)})")) from fail.__cause__
    except RecursionError:
        raise PayloadError(f"cannot decode value as {_tname(tp)}: nested too deeply") from None


# ------------------------------------------------------------ function types


def _hint_source(fn: Any) -> Any:
    """The plain function whose annotations ``fn`` carries: through partials, bound
    methods, callable objects (their ``__call__``) and ``functools.wraps`` wrappers."""
    obj = fn
    for _ in range(32):
        if isinstance(obj, functools.partial):
            obj = obj.func
        elif isinstance(obj, (types.MethodType, staticmethod, classmethod)):
            obj = obj.__func__
        elif not inspect.isfunction(obj) and not isinstance(obj, type) and callable(obj):
            call = getattr(type(obj), "__call__", None)  # noqa: B004
            if not inspect.isfunction(call):
                break
            obj = call
        else:
            break
    return inspect.unwrap(obj) if inspect.isfunction(obj) else obj


#: Names that string annotations may use and that neither a function's globals nor its
#: closure hold: the locals of the scope that registered it (a dataclass defined in a
#: function, under ``from __future__ import annotations``), kept while the function lives.
_SCOPES: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _remember_scope(fn: Any, scope: Mapping[str, Any]) -> None:
    """Resolve ``fn``'s string annotations in ``scope`` too, for the names they use that
    neither its globals nor its closure hold. Only those names are kept (not the scope,
    which may hold ``fn`` itself and would then never be freed)."""
    source = _hint_source(fn)
    annotations = getattr(source, "__annotations__", None)
    if not isinstance(annotations, dict):
        return
    used = {name for v in annotations.values() if isinstance(v, str)
            for name in _NAME.findall(v)}
    known = getattr(source, "__globals__", {})
    kept = {name: scope[name] for name in used
            if name in scope and name not in known and scope[name] is not source}
    if kept:
        with contextlib.suppress(TypeError):  # not weakly referenceable: globals only
            _SCOPES[source] = kept


def _local_names(source: Any) -> dict[str, Any]:
    """The names a string annotation of ``source`` may use besides its globals."""
    try:
        names = dict(_SCOPES.get(source, ()))
    except TypeError:
        names = {}
    code = getattr(source, "__code__", None)
    closure = getattr(source, "__closure__", None)
    if code is not None and closure:
        for var, cell in zip(code.co_freevars, closure, strict=False):
            with contextlib.suppress(ValueError):  # a cell not yet filled
                names[var] = cell.cell_contents
    return names


def _resolved(fn: Any, name: str, raw: Any) -> Any:
    """The resolved annotation ``raw`` of parameter ``name`` (or "return") of ``fn``."""
    source = _hint_source(fn)
    local = _local_names(source)
    try:
        hints = typing.get_type_hints(source, localns=local or None, include_extras=True)
    except Exception:
        hints = {}  # another annotation may be unresolvable (TYPE_CHECKING imports)
    if name in hints:
        return hints[name]
    if raw is None:
        return _NoneType
    if isinstance(raw, str):
        try:
            return eval(raw, dict(getattr(source, "__globals__", {})), local)
        except Exception as exc:
            owner = getattr(source, "__qualname__", repr(source))
            raise PayloadError(f"cannot resolve annotation {raw!r} of {name!r} in {owner}: {exc}")
    return raw


def _signature(fn: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature
        return None


# Callers ask for a function's types each time they decode for it, and signature
# inspection is slow, so answers are kept; the bound keeps transient callables
# (partials, bound methods) from piling up.
@functools.lru_cache(maxsize=1024)
def _cached_input_type(fn: Any) -> Any:
    sig = _signature(fn)
    if sig is None:
        return None
    positional = [
        p
        for p in sig.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) < 2 or positional[1].annotation is inspect.Parameter.empty:
        return None
    return _resolved(fn, positional[1].name, positional[1].annotation)


@functools.lru_cache(maxsize=1024)
def _cached_output_type(fn: Any) -> Any:
    sig = _signature(fn)
    if sig is None or sig.return_annotation is inspect.Signature.empty:
        return None
    tp = _resolved(fn, "return", sig.return_annotation)
    while typing.get_origin(tp) in (cabc.Awaitable, cabc.Coroutine):
        args = typing.get_args(tp)
        tp = args[-1] if args else None
    return tp


def input_type_of(fn: Callable[..., Any]) -> Any:
    """Resolved annotation of the second positional parameter of ``fn(ctx, input)``;
    None when there is none or it is not annotated."""
    try:
        hash(fn)
    except TypeError:  # an unhashable callable object: not cached
        return _cached_input_type.__wrapped__(fn)
    return _cached_input_type(fn)


def output_type_of(fn: Callable[..., Any]) -> Any:
    """Resolved return annotation of ``fn``, with ``Awaitable[T]``/``Coroutine[.., T]``
    unwrapped to ``T``; None when absent, ``type(None)`` for ``-> None``."""
    try:
        hash(fn)
    except TypeError:
        return _cached_output_type.__wrapped__(fn)
    return _cached_output_type(fn)

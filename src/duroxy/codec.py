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
"""

from __future__ import annotations

import collections
import collections.abc as cabc
import dataclasses
import datetime as _dt
import enum
import functools
import inspect
import itertools
import json
import re
import sys
import types
import typing
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import PayloadError

__all__ = [
    "decode",
    "encode",
    "from_json_value",
    "input_type_of",
    "output_type_of",
    "to_json_value",
]

_NoneType = type(None)
_Conv = Callable[[Any], Any]

# One encoder object each: json.dumps(**kwargs) would build a new encoder per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_ASCII_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False)
_PRIMITIVES: frozenset[type] = frozenset({str, int, float, bool, _NoneType})
_INT_TEXT = re.compile(r"-?(?:0|[1-9][0-9]*)")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


class _Fail(Exception):
    """Internal: a conversion failed. ``segments`` gathers the path while the failure
    unwinds through the containers, innermost segment first."""

    def __init__(self, head: str, detail: str = "") -> None:
        super().__init__(head)
        self.head = head
        self.detail = detail
        self.segments: list[str] = []

    def message(self, root: str, after_path: str = "") -> str:
        where = root + "".join(reversed(self.segments))
        at = f" at {where}{after_path}" if where else ""
        return f"{self.head}{at}{': ' + self.detail if self.detail else ''}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _tname(tp: Any) -> str:
    """A readable name for an annotation: ``int``, ``list[Order]``, ``Order | None``."""
    if tp is None or tp is Any:
        return "Any"
    if tp is _NoneType or tp is Ellipsis:
        return "None" if tp is _NoneType else "..."
    if isinstance(tp, (str, typing.ForwardRef)):
        return tp if isinstance(tp, str) else tp.__forward_arg__
    if isinstance(tp, (typing.NewType, typing.TypeVar)):
        return str(tp.__name__)
    origin = typing.get_origin(tp)
    if origin is None:
        return str(tp.__qualname__) if isinstance(tp, type) else repr(tp).replace("typing.", "")
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _tname(args[0])
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(_tname(a) for a in args)
    if origin is typing.Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    base = origin.__qualname__ if isinstance(origin, type) else repr(origin)
    base = str(base).replace("typing.", "")
    return f"{base}[{', '.join(_tname(a) for a in args)}]" if args else base


def _key_segment(key: Any) -> str:
    return f".{key}" if isinstance(key, str) and key.isidentifier() else f"[{key!r}]"


def _is_pydantic_model(tp: type) -> bool:
    base = getattr(sys.modules.get("pydantic.main"), "BaseModel", None)
    return base is not None and hasattr(base, "model_validate") and issubclass(tp, base)


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


def _dump(obj: Any) -> str:
    """JSON text of a plain structure. Text holding lone surrogates cannot be stored
    as UTF-8, so such text is written with escapes instead (same value)."""
    text = _ENCODER.encode(obj)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = _ASCII_ENCODER.encode(obj)
    return text


def encode(value: Any, *, path: str = "") -> str:
    """Compact JSON text of ``value``, unicode unescaped. ``path`` names the value in
    error messages, e.g. ``"input"``."""
    try:
        if _is_plain(value):
            return _dump(value)
    except (ValueError, RecursionError):
        pass  # NaN, an over-long int, deep or cyclic: the conversion below says where
    converted = to_json_value(value, path=path)
    try:
        return _dump(converted)
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


def _ident(value: Any) -> Any:
    return value


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


# Plans are cached by annotation. Python compares unions as sets (int | str equals
# str | int) although member order decides which member wins, so an annotation that
# holds a union of two or more types is cached under a key that keeps the order.
_PLANS: dict[Any, _Conv] = {}
_ORDERED_PLANS: dict[Any, _Conv] = {}


def _look_up_ordered(value: Any) -> Any:  # marker stored in _PLANS, never called
    raise AssertionError("marker")


def _plan(tp: Any) -> _Conv:
    try:
        plan = _PLANS.get(tp)
    except TypeError:  # unhashable annotation (Annotated with unhashable metadata)
        return _build(tp)
    if plan is not None and plan is not _look_up_ordered:
        return plan
    if plan is None and not _order_sensitive(tp):
        plan = _PLANS[tp] = _build(tp)
        return plan
    _PLANS[tp] = _look_up_ordered
    key = _ordered_key(tp)
    plan = _ORDERED_PLANS.get(key)
    if plan is None:
        plan = _ORDERED_PLANS[key] = _build(tp)
    return plan


def _order_sensitive(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin is None or origin is typing.Literal:
        return False
    args = typing.get_args(tp)
    if (origin is typing.Union or origin is types.UnionType) and sum(
        a is not _NoneType for a in args
    ) > 1:
        return True
    return any(_order_sensitive(a) for a in args)


def _ordered_key(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is None:
        return (type(tp), tp)  # type() keeps Literal[1] apart from Literal[True]
    return (origin, tuple(_ordered_key(a) for a in typing.get_args(tp)))


def _unsupported(tp: Any, detail: str) -> _Fail:
    return _Fail(f"no decoding for annotation {_tname(tp)!r}", detail)


def _mismatch(obj: Any, tp: Any, detail: str = "") -> _Fail:
    return _Fail(f"cannot decode {_short(obj)} as {_tname(tp)}", detail)


def _build(tp: Any) -> _Conv:
    if tp is None or tp is Any or tp is object or tp is inspect.Parameter.empty:
        return _ident
    if isinstance(tp, (str, typing.ForwardRef)):
        raise _unsupported(tp, "a string annotation must be resolved before decoding")
    if isinstance(tp, typing.TypeVar):
        return _ident
    if isinstance(tp, typing.NewType):
        return _plan(tp.__supertype__)
    origin = typing.get_origin(tp)
    if origin is not None:
        return _build_generic(tp, origin, typing.get_args(tp))
    if isinstance(tp, type):
        return _build_class(tp)
    raise _unsupported(tp, "not a type")


# Array annotations and what builds each from the decoded elements.
_LIST_ORIGINS: dict[Any, Callable[[Any], Any]] = {
    **dict.fromkeys((list, cabc.Sequence, cabc.MutableSequence, cabc.Iterable), list),
    **dict.fromkeys((set, cabc.Set, cabc.MutableSet), set),
    **{cabc.Collection: list, frozenset: frozenset, collections.deque: collections.deque},
}


def _build_generic(tp: Any, origin: Any, args: tuple[Any, ...]) -> _Conv:
    first = args[0] if args else Any
    if origin in (typing.Annotated, typing.Required, typing.NotRequired):
        return _plan(first)  # metadata and TypedDict markers do not change the value
    if origin is typing.Union or origin is types.UnionType:
        return _union_plan(tp, args)
    if origin is typing.Literal:
        return _literal_plan(tp, args)
    if origin in _LIST_ORIGINS:
        return _list_plan(tp, first, _LIST_ORIGINS[origin])
    if origin is tuple:
        if tp is typing.Tuple or (len(args) == 2 and args[1] is Ellipsis):  # noqa: UP006
            return _list_plan(tp, first, tuple)
        return _tuple_plan(tp, args)
    if origin in (dict, cabc.Mapping, cabc.MutableMapping):
        return _dict_plan(tp, first, args[1] if len(args) > 1 else Any)
    if isinstance(origin, type):  # a generic dataclass or TypedDict: Box[int]
        params: tuple[Any, ...] = getattr(origin, "__parameters__", ())
        subst = dict(zip(params, args, strict=False))
        if dataclasses.is_dataclass(origin):
            return _dataclass_plan(origin, subst)
        if typing.is_typeddict(origin):
            return _typeddict_plan(origin, subst)
    raise _unsupported(tp, "unsupported generic type")


def _build_class(tp: type) -> _Conv:
    simple = _SIMPLE_PLANS.get(tp)
    if simple is not None:
        return simple
    if issubclass(tp, enum.Enum):
        return _enum_plan(tp)
    if _is_pydantic_model(tp):
        return _pydantic_plan(tp)
    if dataclasses.is_dataclass(tp):
        return _dataclass_plan(tp, {})
    if typing.is_typeddict(tp):
        return _typeddict_plan(tp, {})
    if issubclass(tp, tuple) and hasattr(tp, "_fields"):
        return _namedtuple_plan(tp)
    if issubclass(tp, (_dt.date, _dt.time)):
        parse = getattr(tp, "fromisoformat")  # noqa: B009
        return _scalar_plan(tp, (str,), parse, "expected an ISO 8601 string")
    if issubclass(tp, _dt.timedelta):
        return _scalar_plan(tp, (int, float), lambda o: tp(seconds=o), "expected seconds")
    if issubclass(tp, uuid.UUID):
        return _scalar_plan(tp, (str,), tp, "expected a UUID string")
    if issubclass(tp, Decimal):
        return _scalar_plan(tp, (str, int, float), lambda o: tp(str(o)), "expected a number")
    if tp in _BARE_CONTAINERS:
        return _plan(_BARE_CONTAINERS[tp])
    if issubclass(tp, str):
        return _scalar_plan(tp, (str,), tp, "")
    if issubclass(tp, int) and not issubclass(tp, bool):
        return _scalar_plan(tp, (int,), tp, "")
    if issubclass(tp, float):
        return _scalar_plan(tp, (int, float), tp, "")
    raise _unsupported(tp, "no JSON form is defined for it")


def _dec_none(obj: Any) -> None:
    if obj is not None:
        raise _mismatch(obj, _NoneType, "expected null")


def _dec_bool(obj: Any) -> bool:
    if obj is True or obj is False:
        return bool(obj)
    raise _mismatch(obj, bool)


def _dec_int(obj: Any) -> int:
    if type(obj) is int:
        return obj
    if isinstance(obj, int) and not isinstance(obj, bool):
        return int(obj)
    raise _mismatch(obj, int)


def _dec_float(obj: Any) -> float:
    if type(obj) is float:
        return obj
    if type(obj) is int:  # an int is accepted where a float is annotated
        try:
            return float(obj)
        except OverflowError:
            raise _mismatch(obj, float, "too large for a float") from None
    raise _mismatch(obj, float)


def _dec_str(obj: Any) -> str:
    if isinstance(obj, str):
        return obj if type(obj) is str else str.__str__(obj)
    raise _mismatch(obj, str)


_SIMPLE_PLANS: dict[Any, _Conv] = {bool: _dec_bool, int: _dec_int, float: _dec_float}
_SIMPLE_PLANS.update({str: _dec_str, _NoneType: _dec_none})
_BARE_CONTAINERS: dict[Any, Any] = {list: list[Any], tuple: tuple[Any, ...], set: set[Any]}
_BARE_CONTAINERS.update({frozenset: frozenset[Any], dict: dict[Any, Any]})
_BARE_CONTAINERS[collections.deque] = collections.deque[Any]


def _scalar_plan(
    tp: type, accepted: tuple[type, ...], make: Callable[[Any], Any], detail: str
) -> _Conv:
    """Values of the ``accepted`` JSON types (never bool) turned into ``tp`` by ``make``;
    make's ValueError, TypeError or OverflowError means the value does not fit."""

    def plan(obj: Any) -> Any:
        if isinstance(obj, accepted) and not isinstance(obj, bool):
            try:
                return make(obj)
            except (ValueError, TypeError, OverflowError, InvalidOperation):
                pass
        raise _mismatch(obj, tp, detail)

    return plan


def _deep_tuple(obj: Any) -> Any:
    return tuple(_deep_tuple(x) for x in obj) if isinstance(obj, list) else obj


def _enum_plan(cls: type[enum.Enum]) -> _Conv:
    bool_values = any(type(m.value) is bool for m in cls)

    def plan(obj: Any) -> Any:
        if type(obj) is not bool or bool_values:  # True must not pass for 1
            try:
                return cls(obj)
            except (ValueError, TypeError):
                if isinstance(obj, list):  # tuple values are written as arrays
                    try:
                        return cls(_deep_tuple(obj))
                    except (ValueError, TypeError):
                        pass
        raise _mismatch(obj, cls, f"not a value of {cls.__qualname__}")

    return plan


def _union_plan(tp: Any, args: tuple[Any, ...]) -> _Conv:
    members = [a for a in args if a is not _NoneType]
    if len(members) == 1:  # Optional[X]: X's own failure is the informative one
        inner = _plan(members[0])
        return lambda obj: None if obj is None else inner(obj)
    plans = [_plan(a) for a in args]

    def union(obj: Any) -> Any:
        for plan in plans:  # members are tried in the order written
            try:
                return plan(obj)
            except _Fail:
                continue
        raise _mismatch(obj, tp, "no member of the union fits")

    return union


def _literal_plan(tp: Any, args: tuple[Any, ...]) -> _Conv:
    def plan(obj: Any) -> Any:
        for a in args:
            v = a.value if isinstance(a, enum.Enum) else a
            if type(obj) is type(v) and obj == v:  # the type check keeps True apart from 1
                return a
        raise _mismatch(obj, tp)

    return plan


def _list_plan(tp: Any, elem: Any, make: Callable[[Any], Any]) -> _Conv:
    inner = _plan(elem)

    def plan(obj: Any) -> Any:
        if not isinstance(obj, (list, tuple)):
            raise _mismatch(obj, tp, "expected a JSON array")
        out = obj
        if inner is not _ident:
            out = []
            for i, x in enumerate(obj):
                try:
                    out.append(inner(x))
                except _Fail as fail:
                    fail.segments.append(f"[{i}]")
                    raise
        try:
            return make(out)
        except TypeError as exc:  # unhashable elements for a set
            raise _mismatch(obj, tp, str(exc)) from None

    return plan


def _tuple_plan(tp: Any, args: tuple[Any, ...]) -> _Conv:
    plans = [_plan(a) for a in args]

    def plan(obj: Any) -> Any:
        if not isinstance(obj, (list, tuple)) or len(obj) != len(plans):
            raise _mismatch(obj, tp, f"expected a JSON array of {len(plans)} items")
        out = []
        for i, x in enumerate(obj):
            try:
                out.append(plans[i](x))
            except _Fail as fail:
                fail.segments.append(f"[{i}]")
                raise
        return tuple(out)

    return plan


def _dec_int_key(key: Any) -> int:
    if type(key) is int:
        return key
    if type(key) is str and _INT_TEXT.fullmatch(key):
        return int(key)
    raise _mismatch(key, int, "dict key is not an integer")


def _key_plan(tp: Any) -> _Conv:
    """JSON object keys are text; int-like key types read them back as numbers."""
    base = tp
    while isinstance(base, typing.NewType) or typing.get_origin(base) is typing.Annotated:
        base = base.__supertype__ if isinstance(base, typing.NewType) else base.__origin__
    if base in (str, Any, object, None):
        return _ident
    if base is int:
        return _dec_int_key
    inner = _plan(tp)

    def plan(key: Any) -> Any:
        try:
            return inner(key)
        except _Fail:
            if type(key) is str and _INT_TEXT.fullmatch(key):
                return inner(int(key))  # IntEnum, Literal[1], NewType of int ...
            raise

    return plan


def _dict_plan(tp: Any, key_tp: Any, value_tp: Any) -> _Conv:
    kplan = _key_plan(key_tp)
    vplan = _plan(value_tp)

    def plan(obj: Any) -> Any:
        if not isinstance(obj, dict):
            raise _mismatch(obj, tp, "expected a JSON object")
        if kplan is _ident and vplan is _ident:
            return dict(obj)
        out = {}
        for k, v in obj.items():
            try:
                out[kplan(k)] = vplan(v)
            except _Fail as fail:
                fail.segments.append(_key_segment(k))
                raise
        return out

    return plan


def _class_hints(cls: type) -> dict[str, Any]:
    # A class defined inside a function may name itself: retry with its name bound.
    for localns in (None, {cls.__name__: cls}):
        try:
            return typing.get_type_hints(cls, localns=localns, include_extras=True)
        except NameError as exc:
            if localns is not None:
                raise _Fail(f"cannot resolve the annotations of {cls.__qualname__}", str(exc))
        except Exception as exc:
            raise _Fail(f"cannot resolve the annotations of {cls.__qualname__}", str(exc))
    raise AssertionError("unreachable")


def _substitute(tp: Any, subst: dict[Any, Any]) -> Any:
    """``tp`` with a generic class's type variables replaced by its arguments."""
    if subst and isinstance(tp, typing.TypeVar):
        return subst.get(tp, tp)
    params = getattr(tp, "__parameters__", ()) if subst else ()
    return tp[tuple(subst.get(p, p) for p in params)] if params else tp


def _field_plan(tp: Any, name: str) -> _Conv:
    try:
        return _plan(tp)
    except _Fail as fail:
        fail.segments.append("." + name)
        raise


def _dataclass_plan(cls: type, subst: dict[Any, Any]) -> _Conv:
    # Field plans are built on first use, not here: a dataclass may refer to itself
    # (a tree of nodes), and its own plan must be cached before its fields' plans.
    specs: list[tuple[str, _Conv, bool, bool]] = []
    ready = False

    def prepare() -> None:
        hints = _class_hints(cls)
        for f in dataclasses.fields(cls):
            fplan = _field_plan(_substitute(hints.get(f.name, Any), subst), f.name)
            no_default = f.default is f.default_factory is dataclasses.MISSING
            specs.append((f.name, fplan, f.init and no_default, f.init))

    def plan(obj: Any) -> Any:
        nonlocal ready
        if not isinstance(obj, dict):
            raise _mismatch(obj, cls, "expected a JSON object")
        if not ready:
            prepare()
            ready = True
        kwargs: dict[str, Any] = {}
        late: list[tuple[str, Any]] = []
        for name, fplan, required, init in specs:
            if name in obj:  # keys naming no field are ignored (older or newer writers)
                try:
                    value = fplan(obj[name])
                except _Fail as fail:
                    fail.segments.append("." + name)
                    raise
                if init:
                    kwargs[name] = value
                else:
                    late.append((name, value))
            elif required:
                raise _mismatch(obj, cls, f"missing required field {name!r}")
        try:
            instance = cls(**kwargs)
        except Exception as exc:  # __post_init__ validation and the like
            detail = f"{cls.__qualname__}() raised {type(exc).__name__}: {exc}"
            raise _mismatch(obj, cls, detail) from exc
        for name, value in late:  # init=False fields carry their recorded value back
            object.__setattr__(instance, name, value)
        return instance

    return plan


def _typeddict_plan(cls: type, subst: dict[Any, Any]) -> _Conv:
    specs: list[tuple[str, _Conv, bool]] = []
    ready = False

    def prepare() -> None:
        required_keys: frozenset[str] = getattr(cls, "__required_keys__", frozenset())
        for key, hint in _class_hints(cls).items():
            # Required/NotRequired written as strings (future annotations) are missed
            # by __required_keys__ on 3.11, so the resolved hints have the last word.
            required = key in required_keys
            tp = hint
            while (origin := typing.get_origin(tp)) in _TYPEDDICT_WRAPPERS:
                if origin is not typing.Annotated:
                    required = origin is typing.Required
                tp = typing.get_args(tp)[0]
            specs.append((key, _field_plan(_substitute(tp, subst), key), required))

    def plan(obj: Any) -> Any:
        nonlocal ready
        if not isinstance(obj, dict):
            raise _mismatch(obj, cls, "expected a JSON object")
        if not ready:
            prepare()
            ready = True
        out = dict(obj)  # keys the TypedDict does not name are kept as they are
        for key, fplan, required in specs:
            if key in obj:
                try:
                    out[key] = fplan(obj[key])
                except _Fail as fail:
                    fail.segments.append(_key_segment(key))
                    raise
            elif required:
                raise _mismatch(obj, cls, f"missing required key {key!r}")
        return out

    return plan


_TYPEDDICT_WRAPPERS = (typing.Annotated, typing.Required, typing.NotRequired)


def _namedtuple_plan(cls: type) -> _Conv:
    fields: tuple[str, ...] = getattr(cls, "_fields", ())
    least = len(fields) - len(getattr(cls, "_field_defaults", {}))
    plans: list[_Conv] = []

    def plan(obj: Any) -> Any:
        if not isinstance(obj, (list, tuple)) or not least <= len(obj) <= len(fields):
            raise _mismatch(obj, cls, f"expected a JSON array of {len(fields)} items")
        if not plans:
            hints = _class_hints(cls)
            plans.extend(_field_plan(hints.get(f, Any), f) for f in fields)
        out = []
        for i, x in enumerate(obj):
            try:
                out.append(plans[i](x))
            except _Fail as fail:
                fail.segments.append("." + fields[i])
                raise
        return cls(*out)

    return plan


def _pydantic_target(cls: type, loc: tuple[Any, ...]) -> Any:
    """The annotation at ``loc`` inside model ``cls``, as far as model fields lead."""
    target: Any = cls
    for part in loc:
        fields = getattr(target, "model_fields", None)
        if not isinstance(fields, dict) or part not in fields:
            return f"a part of {cls.__qualname__}"
        target = fields[part].annotation
    return target


def _pydantic_plan(cls: type) -> _Conv:
    validate: Callable[[Any], Any] = getattr(cls, "model_validate")  # noqa: B009

    def plan(obj: Any) -> Any:
        try:
            return validate(obj)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            errors_of = getattr(exc, "errors", None)
            errors: list[dict[str, Any]] = errors_of() if callable(errors_of) else []
            if not errors:
                raise _mismatch(obj, cls, str(exc)) from exc
            loc = tuple(errors[0].get("loc", ()))
            detail = str(errors[0].get("msg", ""))
            if errors[0].get("type") == "missing" and loc:
                detail = f"missing required field {loc[-1]!r}"
                loc = loc[:-1]
            fail = _mismatch(errors[0].get("input"), _pydantic_target(cls, loc), detail)
            fail.segments.extend(
                f"[{p}]" if isinstance(p, int) else _key_segment(p) for p in reversed(loc)
            )
            raise fail from exc

    return plan


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


def _resolved(fn: Any, name: str, raw: Any) -> Any:
    """The resolved annotation ``raw`` of parameter ``name`` (or "return") of ``fn``."""
    source = _hint_source(fn)
    try:
        hints = typing.get_type_hints(source, include_extras=True)
    except Exception:
        hints = {}  # another annotation may be unresolvable (TYPE_CHECKING imports)
    if name in hints:
        return hints[name]
    if raw is None:
        return _NoneType
    if isinstance(raw, str):
        try:
            return eval(raw, dict(getattr(source, "__globals__", {})))
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

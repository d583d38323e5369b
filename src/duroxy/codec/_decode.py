"""Decoding plans of the payload codec: one conversion per annotation, cached.

:func:`from_json_value` asks :func:`plan_for` for the plan of an annotation
and applies it to a plain JSON value. A plan checks the value's JSON shape, rebuilds
the annotated type (dataclass, TypedDict, NamedTuple, pydantic model, enum, date and
time, container, union, literal ...) and raises :class:`Fail` on a misfit; the path
of the failure is gathered as it unwinds through the containers.

Invariants:

* Each hashable annotation's plan is built once and cached; a union's members are
  tried in the order written, so the cache keeps ``int | str`` apart from ``str | int``.
* Plans of classes that may refer to themselves (dataclasses, TypedDicts,
  NamedTuples) resolve their fields on first use, after their own plan is cached.
* pydantic is never imported here (see :mod:`._common`).

One room for every annotation form, which is why it runs past 500 lines: the plans of
containers and records call back into the one cache (``plan_for``) for their parts.
"""

from __future__ import annotations

import collections
import collections.abc as cabc
import dataclasses
import datetime as _dt
import enum
import inspect
import json
import re
import types
import typing
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from ..errors import PayloadError
from ._common import (
    Conv,
    Fail,
    NoneType,
    ident,
    is_pydantic_model,
    key_segment,
    short,
    tname,
)

__all__ = ["decode", "from_json_value", "plan_for"]

# JSON object key text read back as an int under dict[int, T]: decimal digits with an
# optional minus and no leading zeros or "+", the way str(int) writes them.
_INT_TEXT = re.compile(r"-?(?:0|[1-9][0-9]*)")


# Plans are cached by annotation. Python compares unions as sets (int | str equals
# str | int) although member order decides which member wins, so an annotation that
# holds a union of two or more types is cached under a key that keeps the order.
_PLANS: dict[Any, Conv] = {}
_ORDERED_PLANS: dict[Any, Conv] = {}


def _look_up_ordered(value: Any) -> Any:  # marker stored in _PLANS, never called
    raise AssertionError("marker")


def plan_for(tp: Any) -> Conv:
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
        a is not NoneType for a in args
    ) > 1:
        return True
    return any(_order_sensitive(a) for a in args)


def _ordered_key(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is None:
        return (type(tp), tp)  # type() keeps Literal[1] apart from Literal[True]
    return (origin, tuple(_ordered_key(a) for a in typing.get_args(tp)))


def _unsupported(tp: Any, detail: str) -> Fail:
    return Fail(f"no decoding for annotation {tname(tp)!r}", detail)


def _mismatch(obj: Any, tp: Any, detail: str = "") -> Fail:
    return Fail(f"cannot decode {short(obj)} as {tname(tp)}", detail)


def _build(tp: Any) -> Conv:
    if tp is None or tp is Any or tp is object or tp is inspect.Parameter.empty:
        return ident
    if isinstance(tp, (str, typing.ForwardRef)):
        raise _unsupported(tp, "a string annotation must be resolved before decoding")
    if isinstance(tp, typing.TypeVar):
        return ident
    if isinstance(tp, typing.NewType):
        return plan_for(tp.__supertype__)
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


def _build_generic(tp: Any, origin: Any, args: tuple[Any, ...]) -> Conv:
    first = args[0] if args else Any
    if origin in (typing.Annotated, typing.Required, typing.NotRequired):
        return plan_for(first)  # metadata and TypedDict markers do not change the value
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


def _build_class(tp: type) -> Conv:
    simple = _SIMPLE_PLANS.get(tp)
    if simple is not None:
        return simple
    if issubclass(tp, enum.Enum):
        return _enum_plan(tp)
    if is_pydantic_model(tp):
        return _pydantic_plan(tp)
    if dataclasses.is_dataclass(tp):
        return _dataclass_plan(tp, {})
    if typing.is_typeddict(tp):
        return _typeddict_plan(tp, {})
    if issubclass(tp, tuple) and hasattr(tp, "_fields"):
        return _namedtuple_plan(tp)
    if issubclass(tp, (_dt.date, _dt.time)):
        parse = getattr(tp, "fromisoformat")  # noqa: B009 - any date/time subclass
        return _scalar_plan(tp, (str,), parse, "expected an ISO 8601 string")
    if issubclass(tp, _dt.timedelta):
        return _scalar_plan(tp, (int, float), lambda o: tp(seconds=o), "expected seconds")
    if issubclass(tp, uuid.UUID):
        return _scalar_plan(tp, (str,), tp, "expected a UUID string")
    if issubclass(tp, Decimal):
        return _scalar_plan(tp, (str, int, float), lambda o: tp(str(o)), "expected a number")
    if tp in _BARE_CONTAINERS:
        return plan_for(_BARE_CONTAINERS[tp])
    if issubclass(tp, str):
        return _scalar_plan(tp, (str,), tp, "")
    if issubclass(tp, int) and not issubclass(tp, bool):
        return _scalar_plan(tp, (int,), tp, "")
    if issubclass(tp, float):
        return _scalar_plan(tp, (int, float), tp, "")
    raise _unsupported(tp, "no JSON form is defined for it")


def _dec_none(obj: Any) -> None:
    if obj is not None:
        raise _mismatch(obj, NoneType, "expected null")


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


_SIMPLE_PLANS: dict[Any, Conv] = {bool: _dec_bool, int: _dec_int, float: _dec_float}
_SIMPLE_PLANS.update({str: _dec_str, NoneType: _dec_none})
_BARE_CONTAINERS: dict[Any, Any] = {list: list[Any], tuple: tuple[Any, ...], set: set[Any]}
_BARE_CONTAINERS.update({frozenset: frozenset[Any], dict: dict[Any, Any]})
_BARE_CONTAINERS[collections.deque] = collections.deque[Any]


def _scalar_plan(
    tp: type, accepted: tuple[type, ...], make: Callable[[Any], Any], detail: str
) -> Conv:
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


def _enum_plan(cls: type[enum.Enum]) -> Conv:
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


def _union_plan(tp: Any, args: tuple[Any, ...]) -> Conv:
    members = [a for a in args if a is not NoneType]
    if len(members) == 1:  # Optional[X]: X's own failure is the informative one
        inner = plan_for(members[0])
        return lambda obj: None if obj is None else inner(obj)
    plans = [plan_for(a) for a in args]

    def union(obj: Any) -> Any:
        for plan in plans:  # members are tried in the order written
            try:
                return plan(obj)
            except Fail:
                continue
        raise _mismatch(obj, tp, "no member of the union fits")

    return union


def _literal_plan(tp: Any, args: tuple[Any, ...]) -> Conv:
    def plan(obj: Any) -> Any:
        for a in args:
            v = a.value if isinstance(a, enum.Enum) else a
            if type(obj) is type(v) and obj == v:  # the type check keeps True apart from 1
                return a
        raise _mismatch(obj, tp)

    return plan


def _list_plan(tp: Any, elem: Any, make: Callable[[Any], Any]) -> Conv:
    inner = plan_for(elem)

    def plan(obj: Any) -> Any:
        if not isinstance(obj, (list, tuple)):
            raise _mismatch(obj, tp, "expected a JSON array")
        out = obj
        if inner is not ident:
            out = []
            for i, x in enumerate(obj):
                try:
                    out.append(inner(x))
                except Fail as fail:
                    fail.segments.append(f"[{i}]")
                    raise
        try:
            return make(out)
        except TypeError as exc:  # unhashable elements for a set
            raise _mismatch(obj, tp, str(exc)) from None

    return plan


def _tuple_plan(tp: Any, args: tuple[Any, ...]) -> Conv:
    plans = [plan_for(a) for a in args]

    def plan(obj: Any) -> Any:
        if not isinstance(obj, (list, tuple)) or len(obj) != len(plans):
            raise _mismatch(obj, tp, f"expected a JSON array of {len(plans)} items")
        out = []
        for i, x in enumerate(obj):
            try:
                out.append(plans[i](x))
            except Fail as fail:
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


def _key_plan(tp: Any) -> Conv:
    """JSON object keys are text; int-like key types read them back as numbers."""
    base = tp
    while isinstance(base, typing.NewType) or typing.get_origin(base) is typing.Annotated:
        base = base.__supertype__ if isinstance(base, typing.NewType) else base.__origin__
    if base in (str, Any, object, None):
        return ident
    if base is int:
        return _dec_int_key
    inner = plan_for(tp)

    def plan(key: Any) -> Any:
        try:
            return inner(key)
        except Fail:
            if type(key) is str and _INT_TEXT.fullmatch(key):
                return inner(int(key))  # IntEnum, Literal[1], NewType of int ...
            raise

    return plan


def _dict_plan(tp: Any, key_tp: Any, value_tp: Any) -> Conv:
    kplan = _key_plan(key_tp)
    vplan = plan_for(value_tp)

    def plan(obj: Any) -> Any:
        if not isinstance(obj, dict):
            raise _mismatch(obj, tp, "expected a JSON object")
        if kplan is ident and vplan is ident:
            return dict(obj)
        out = {}
        for k, v in obj.items():
            try:
                out[kplan(k)] = vplan(v)
            except Fail as fail:
                fail.segments.append(key_segment(k))
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
                raise Fail(f"cannot resolve the annotations of {cls.__qualname__}", str(exc))
        except Exception as exc:
            raise Fail(f"cannot resolve the annotations of {cls.__qualname__}", str(exc))
    raise AssertionError("unreachable")


def _substitute(tp: Any, subst: dict[Any, Any]) -> Any:
    """``tp`` with a generic class's type variables replaced by its arguments."""
    if subst and isinstance(tp, typing.TypeVar):
        return subst.get(tp, tp)
    params = getattr(tp, "__parameters__", ()) if subst else ()
    return tp[tuple(subst.get(p, p) for p in params)] if params else tp


def _field_plan(tp: Any, name: str) -> Conv:
    try:
        return plan_for(tp)
    except Fail as fail:
        fail.segments.append("." + name)
        raise


def _dataclass_plan(cls: type, subst: dict[Any, Any]) -> Conv:
    # Field plans are built on first use, not here: a dataclass may refer to itself
    # (a tree of nodes), and its own plan must be cached before its fields' plans.
    specs: list[tuple[str, Conv, bool, bool]] = []
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
                except Fail as fail:
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


def _typeddict_plan(cls: type, subst: dict[Any, Any]) -> Conv:
    specs: list[tuple[str, Conv, bool]] = []
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
                except Fail as fail:
                    fail.segments.append(key_segment(key))
                    raise
            elif required:
                raise _mismatch(obj, cls, f"missing required key {key!r}")
        return out

    return plan


_TYPEDDICT_WRAPPERS = (typing.Annotated, typing.Required, typing.NotRequired)


def _namedtuple_plan(cls: type) -> Conv:
    fields: tuple[str, ...] = getattr(cls, "_fields", ())
    least = len(fields) - len(getattr(cls, "_field_defaults", {}))
    plans: list[Conv] = []

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
            except Fail as fail:
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


def _pydantic_plan(cls: type) -> Conv:
    validate: Callable[[Any], Any] = getattr(cls, "model_validate")  # noqa: B009 - untyped

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
                f"[{p}]" if isinstance(p, int) else key_segment(p) for p in reversed(loc)
            )
            raise fail from exc

    return plan


# -------------------------------------------------------------------- the public side
def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)



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
        return plan_for(tp)(obj)
    except Fail as fail:
        raise PayloadError(fail.message(path, f" ({tname(tp)})")) from fail.__cause__
    except RecursionError:
        raise PayloadError(f"cannot decode value as {tname(tp)}: nested too deeply") from None

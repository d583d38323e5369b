"""The types a function's annotations name: the input of ``fn(ctx, input)`` and the
output, with string annotations (``from __future__ import annotations``) resolved
through the function's globals, its closure and the scope that registered it."""

from __future__ import annotations

import collections.abc as cabc
import contextlib
import functools
import inspect
import re
import types
import typing
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import PayloadError
from ._common import NoneType

__all__ = ["input_type_of", "output_type_of", "remember_scope"]


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
            call = getattr(type(obj), "__call__", None)  # noqa: B004 - the class's own
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


def remember_scope(fn: Any, scope: Mapping[str, Any]) -> None:
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
        return NoneType
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

"""Shared pieces of the payload codec: the failure carrier, naming helpers, and the
JSON writer that history records use too.

:mod:`duroxy.codec` (encoding, the public API) and :mod:`duroxy._codec_decode` (the
decoding plans) both raise :class:`Fail` while they walk a value, and both name
types, values and path segments the same way in their messages; those pieces live
here so that neither of the two modules depends on the other's internals.

Invariant: like the rest of the codec, this module never imports pydantic; a model
class is recognised through ``sys.modules`` once its user has imported pydantic.
"""

from __future__ import annotations

import json
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

NoneType = type(None)

# One encoder object each: json.dumps(**kwargs) would build a new encoder per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_ASCII_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def storable(text: str) -> bool:
    """Whether ``text`` can be stored as it is: UTF-8 has no form for a lone surrogate
    (as ``surrogateescape`` decoding leaves in a str)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def dump_json(obj: Any) -> str:
    """Compact JSON text of a plain structure, unicode unescaped. Text holding lone
    surrogates cannot be stored as UTF-8, so such text is written with escapes instead
    (the same value once read)."""
    text = _ENCODER.encode(obj)
    return text if storable(text) else _ASCII_ENCODER.encode(obj)
# One conversion step: a value in, its converted form out; raises Fail on a misfit.
Conv = Callable[[Any], Any]


class Fail(Exception):
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


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def tname(tp: Any) -> str:
    """A readable name for an annotation: ``int``, ``list[Order]``, ``Order | None``."""
    if tp is None or tp is Any:
        return "Any"
    if tp is NoneType or tp is Ellipsis:
        return "None" if tp is NoneType else "..."
    if isinstance(tp, (str, typing.ForwardRef)):
        return tp if isinstance(tp, str) else tp.__forward_arg__
    if isinstance(tp, (typing.NewType, typing.TypeVar)):
        return str(tp.__name__)
    origin = typing.get_origin(tp)
    if origin is None:
        return str(tp.__qualname__) if isinstance(tp, type) else repr(tp).replace("typing.", "")
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return tname(args[0])
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(tname(a) for a in args)
    if origin is typing.Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    base = origin.__qualname__ if isinstance(origin, type) else repr(origin)
    base = str(base).replace("typing.", "")
    return f"{base}[{', '.join(tname(a) for a in args)}]" if args else base


def key_segment(key: Any) -> str:
    return f".{key}" if isinstance(key, str) and key.isidentifier() else f"[{key!r}]"


def is_pydantic_model(tp: type) -> bool:
    base = getattr(sys.modules.get("pydantic.main"), "BaseModel", None)
    return base is not None and hasattr(base, "model_validate") and issubclass(tp, base)


def ident(value: Any) -> Any:
    """The conversion that keeps a value as it is. Decoding plans compare against it by
    identity to skip copying containers whose elements need no conversion."""
    return value

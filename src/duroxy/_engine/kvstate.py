"""Per-instance key-value state as orchestration code sees it: the
``ctx.*kv*`` methods, mixed into ``OrchestrationContext``.

Reads are pure: they see the KV as it stood when the execution started plus this
execution's own recorded sets and clears up to this point (``ExecutionPort.kv``), never
a value committed later, so read-modify-write code replays to the same decisions. Sets
and clears are decisions (``KeyValueSet``, ``KeyValueCleared``, ``KeyValuesCleared``):
replay compares the key and the encoded value, never ``updated_at``. The limits are
checked at the call, before anything is recorded, and depend only on replayed state,
so they are deterministic too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar, overload

from .. import codec
from .._limits import MAX_KV_KEYS, MAX_KV_VALUE_BYTES
from .._names import name_problem
from ..history import (
    HistoryEvent,
    KeyValueCleared,
    KeyValueReadScheduled,
    KeyValuesCleared,
    KeyValueSet,
)
from .futures import DurableFuture
from .port import ExecutionPort

__all__ = ["KeyValueMethods"]

T = TypeVar("T")


def _key(key: str) -> str:
    problem = name_problem(key)
    if problem is not None:
        raise ValueError(f"KV key {problem}")
    return key


class KeyValueMethods:
    """The KV calls of ``OrchestrationContext`` (which supplies ``_x``)."""

    _x: ExecutionPort

    def set_kv_value(self, key: str, value: Any) -> None:
        """Set ``key`` to ``value`` (any JSON value, ``None`` included: the key then
        exists). Raises ``ValueError`` for a bad key, a value whose JSON text is over
        ``MAX_KV_VALUE_BYTES`` or a key past ``MAX_KV_KEYS``, ``PayloadError`` for a value
        with no JSON form; nothing is recorded then."""
        _key(key)
        text = codec.encode(value)
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > MAX_KV_VALUE_BYTES:
            raise ValueError(f"KV value for key {key!r} is {size:,} bytes of JSON, over the "
                             f"limit of {MAX_KV_VALUE_BYTES:,} (MAX_KV_VALUE_BYTES); keep large "
                             "data elsewhere and store a reference")
        kv = self._x.kv
        if key not in kv and len(kv) >= MAX_KV_KEYS:
            raise ValueError(f"cannot set KV key {key!r}: the instance holds {len(kv)} keys, "
                             f"the limit (MAX_KV_KEYS = {MAX_KV_KEYS}); clear keys first")

        def same(r: HistoryEvent) -> bool:
            assert isinstance(r, KeyValueSet)
            return r.key == key and r.value == text

        event = self._x.record(KeyValueSet(key=key, value=text,
                                           updated_at=self._x.current_time_ms), same)
        assert isinstance(event, KeyValueSet)
        kv[key] = (text, event.updated_at)

    @overload
    def get_kv_value(self, key: str, default: Any = None, *, output_type: type[T]) -> T: ...
    @overload
    def get_kv_value(self, key: str, default: Any = None, *, output_type: Any = None
                     ) -> Any: ...

    def get_kv_value(self, key: str, default: Any = None, *, output_type: Any = None) -> Any:
        """The value of ``key`` at this point of the execution, or ``default`` when it does
        not exist. Nothing is recorded."""
        found = self._x.kv.get(_key(key))
        return default if found is None else codec.decode(found[0], output_type)

    def clear_kv_value(self, key: str) -> None:
        """Remove ``key``; recorded even when it does not exist."""
        _key(key)
        self._x.record(KeyValueCleared(key=key),
                       lambda r: r.key == key)  # type: ignore[attr-defined]
        self._x.kv.pop(key, None)

    def clear_all_kv_values(self) -> None:
        """Remove every key."""
        self._x.record(KeyValuesCleared(), lambda r: True)
        self._x.kv.clear()

    def get_kv_all_keys(self) -> list[str]:
        """Every key, sorted (so that code looping over them schedules work in the same
        order in every process)."""
        return sorted(self._x.kv)

    def get_kv_all_values(self) -> dict[str, Any]:
        """Every key and its value, in sorted key order."""
        kv = self._x.kv
        return {k: codec.decode(kv[k][0]) for k in sorted(kv)}

    def get_kv_length(self) -> int:
        return len(self._x.kv)

    def prune_kv_values_updated_before(self, cutoff: datetime) -> int:
        """Clear each key whose last set happened, in orchestration time, before
        ``cutoff`` (a timezone-aware ``datetime``); returns how many were cleared, each
        recorded as a ``KeyValueCleared``."""
        if not isinstance(cutoff, datetime) or cutoff.utcoffset() is None:
            raise TypeError(f"cutoff must be a timezone-aware datetime, not {cutoff!r}")
        cutoff_us = round(cutoff.timestamp() * 1_000_000)
        old = [k for k, (_, at) in sorted(self._x.kv.items()) if at * 1000 < cutoff_us]
        for key in old:
            self.clear_kv_value(key)
        return len(old)

    @overload
    def get_kv_value_from_instance(self, instance_id: str, key: str, default: Any = None, *,
                                   output_type: type[T]) -> DurableFuture[T]: ...
    @overload
    def get_kv_value_from_instance(self, instance_id: str, key: str, default: Any = None, *,
                                   output_type: Any = None) -> DurableFuture[Any]: ...

    def get_kv_value_from_instance(self, instance_id: str, key: str, default: Any = None, *,
                                   output_type: Any = None) -> DurableFuture[Any]:
        """Read another instance's committed KV once, after this turn commits; awaiting
        gives the value, or ``default`` when the instance or the key does not exist.
        Recorded in history, so replays give the same answer."""
        problem = name_problem(instance_id)
        if problem is not None:
            raise ValueError(f"instance id {problem}")
        _key(key)

        def same(r: HistoryEvent) -> bool:
            assert isinstance(r, KeyValueReadScheduled)
            return r.instance_id == instance_id and r.key == key

        event = self._x.record(KeyValueReadScheduled(instance_id=instance_id, key=key), same)
        assert isinstance(event, KeyValueReadScheduled)
        return self._x.read_kv(event, output_type, default)

"""The client's reads of per-instance key-value state: a part of
``Client``. Clients see the state as of the instance's last committed turn."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Protocol, TypeVar, overload

from . import codec
from ._admin import check_id
from ._waiting import wait_for_news
from .errors import InstanceNotFound
from .options import to_seconds
from .providers.base import KvEntry, Provider

__all__ = ["KeyValueCalls"]

T = TypeVar("T")


class _Host(Protocol):
    provider: Provider


async def _read(provider: Provider, instance_id: str, key: str | None
                ) -> dict[str, KvEntry]:
    found = await provider.read_kv(instance_id, key)
    if found is None:
        raise InstanceNotFound(instance_id)
    return found


class KeyValueCalls:
    """Mixed into ``Client``."""

    @overload
    async def get_kv_value(self, instance_id: str, key: str, default: Any = None, *,
                           output_type: type[T]) -> T: ...
    @overload
    async def get_kv_value(self, instance_id: str, key: str, default: Any = None, *,
                           output_type: Any = None) -> Any: ...

    async def get_kv_value(self: _Host, instance_id: str, key: str, default: Any = None, *,
                           output_type: Any = None) -> Any:
        """The value of ``key`` in the instance's KV, or ``default`` when the key does not
        exist; ``InstanceNotFound`` for an unknown id."""
        check_id(instance_id, "instance id")
        check_id(key, "KV key")
        entry = (await _read(self.provider, instance_id, key)).get(key)
        return default if entry is None else codec.decode(entry.value, output_type)

    async def get_kv_all_values(self: _Host, instance_id: str) -> dict[str, Any]:
        """Every key of the instance's KV and its value, in sorted key order."""
        check_id(instance_id, "instance id")
        found = await _read(self.provider, instance_id, None)
        return {k: codec.decode(found[k].value) for k in sorted(found)}

    @overload
    async def wait_for_kv_value(self, instance_id: str, key: str, timeout: float | timedelta,
                                *, output_type: type[T]) -> T: ...
    @overload
    async def wait_for_kv_value(self, instance_id: str, key: str, timeout: float | timedelta,
                                *, output_type: Any = None) -> Any: ...

    async def wait_for_kv_value(self: _Host, instance_id: str, key: str,
                                timeout: float | timedelta, *, output_type: Any = None
                                ) -> Any:
        """The value of ``key`` once it exists (a key set to ``None`` exists): woken by the
        commit that sets it. ``TimeoutError`` when ``timeout`` passes first,
        ``InstanceNotFound`` for an unknown id."""
        check_id(instance_id, "instance id")
        check_id(key, "KV key")
        seconds = to_seconds(timeout, "timeout")
        provider = self.provider

        async def check() -> tuple[bool, Any]:
            entry = (await _read(provider, instance_id, key)).get(key)
            if entry is None:
                return False, None
            return True, codec.decode(entry.value, output_type)

        return await wait_for_news(
            provider, instance_id, ("updated",), check, seconds,
            lambda: f"KV key {key!r} of instance {instance_id!r} was not set within "
                    f"{seconds:g} s")

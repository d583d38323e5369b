"""The in-memory reference provider against the provider conformance suite."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from duroxy.providers.base import Provider
from duroxy.providers.memory import InMemoryProvider
from duroxy.testing.conformance import ProviderConformance


class TestInMemoryConformance(ProviderConformance):
    @pytest.fixture
    async def provider(self) -> AsyncIterator[InMemoryProvider]:
        store = InMemoryProvider()
        yield store
        await store.close()

    async def corrupt_history(self, provider: Provider, instance_id: str) -> None:
        assert isinstance(provider, InMemoryProvider)
        provider.corrupt_history(instance_id)

    async def corrupt_messages(self, provider: Provider, instance_id: str) -> None:
        assert isinstance(provider, InMemoryProvider)
        provider.corrupt_messages(instance_id)

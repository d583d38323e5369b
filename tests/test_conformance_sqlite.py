"""The SQLite provider against the provider conformance suite, on a file store and on
a private in-memory store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from duroxy.providers.base import Provider
from duroxy.providers.sqlite import SqliteProvider
from duroxy.testing.conformance import ProviderConformance


class _SqliteHooks(ProviderConformance):
    async def corrupt_history(self, provider: Provider, instance_id: str) -> None:
        assert isinstance(provider, SqliteProvider)
        provider.corrupt_history(instance_id)

    async def corrupt_messages(self, provider: Provider, instance_id: str) -> None:
        assert isinstance(provider, SqliteProvider)
        provider.corrupt_messages(instance_id)


class TestSqliteFileConformance(_SqliteHooks):
    @pytest.fixture
    async def provider(self, tmp_path: Path) -> AsyncIterator[SqliteProvider]:
        store = SqliteProvider(tmp_path / "store.db")
        yield store
        await store.close()


class TestSqliteMemoryConformance(_SqliteHooks):
    @pytest.fixture
    async def provider(self) -> AsyncIterator[SqliteProvider]:
        store = SqliteProvider.in_memory()
        yield store
        await store.close()

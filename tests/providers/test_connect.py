"""``duroxy.connect(url)`` builds the provider a URL names, synchronously."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import duroxy
from duroxy.providers.memory import InMemoryProvider
from duroxy.providers.postgres import PostgresProvider
from duroxy.providers.sqlite import SqliteProvider


def test_sqlite_urls_relative_absolute_and_memory(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert isinstance(duroxy.connect("sqlite:///rel.db"), SqliteProvider)
    assert isinstance(duroxy.connect(f"sqlite:///{tmp_path}/abs.db"), SqliteProvider)
    assert isinstance(duroxy.connect("sqlite::memory:"), SqliteProvider)
    assert isinstance(duroxy.connect("memory://"), InMemoryProvider)


def test_postgres_url_takes_schema_from_query() -> None:
    p = duroxy.connect("postgresql://postgres@127.0.0.1:5432/test?schema=tenant_a")
    assert isinstance(p, PostgresProvider) and p.schema == "tenant_a"
    q = duroxy.connect("postgres://postgres@127.0.0.1/test")
    assert isinstance(q, PostgresProvider) and q.schema == "duroxy"


@pytest.mark.parametrize("url", ["", "mysql://x/y", "redis://localhost", "nonsense"])
def test_unsupported_url_names_it(url: str) -> None:
    with pytest.raises(ValueError, match="store URL"):
        duroxy.connect(url)


def test_relative_sqlite_url_resolves_in_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = duroxy.connect("sqlite:///here.db")

    async def use() -> None:
        client = duroxy.Client(store)
        await client.start_orchestration("i1", "anything")
        assert (await client.get_orchestration_status("i1")).state.value == "PENDING"
        await store.close()

    asyncio.run(use())
    assert (tmp_path / "here.db").exists()


def test_a_file_path_without_scheme_is_a_sqlite_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "relative").mkdir()
    for path in (f"{tmp_path}/a.db", "relative/b.sqlite3", "c.db"):
        store = duroxy.connect(path)
        assert isinstance(store, SqliteProvider)
        assert store.path is not None
        assert Path(store.path).resolve() == (tmp_path / path).resolve()

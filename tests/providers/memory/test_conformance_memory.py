"""The in-memory reference provider against the provider conformance suite."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

from duroxy.errors import LockLost, ProviderError
from duroxy.providers.base import Provider
from duroxy.providers.memory import InMemoryProvider
from duroxy.testing.provider_suite import ProviderConformance
from duroxy.testing.provider_suite.support import commit, raised, start_message, started

#: What the corruption hooks store: not JSON, so every decoder rejects it.
GARBAGE = "\x00not-json{"


class TestInMemoryConformance(ProviderConformance):
    @pytest.fixture
    async def provider(self) -> AsyncIterator[InMemoryProvider]:
        store = InMemoryProvider()
        yield store
        await store.close()

    async def corrupt_history(self, provider: Provider, instance_id: str) -> None:
        assert isinstance(provider, InMemoryProvider)
        with provider._lock:  # the store keeps each event's JSON text: replace it
            for events in provider._history.get(instance_id, {}).values():
                events[:] = [(eid, GARBAGE) for eid, _ in events]

    async def corrupt_messages(self, provider: Provider, instance_id: str) -> None:
        assert isinstance(provider, InMemoryProvider)
        with provider._lock:
            for msg in provider._messages.values():
                if msg.instance_id == instance_id:
                    msg.text = GARBAGE

    async def open_read_only(self, provider: Provider) -> Provider:
        assert isinstance(provider, InMemoryProvider)
        return provider.read_only_view()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class TestInMemorySpecifics:
    """What only the in-memory provider offers: an injected clock, thread use."""

    async def test_injected_clock_drives_lock_expiry(self) -> None:
        clock = FakeClock()
        store = InMemoryProvider(clock)
        await store.create_instance(start_message("i-1"))
        [item] = await store.fetch_orchestration_items(10.0)
        clock.now += 9.9
        assert await store.fetch_orchestration_items(10.0) == []
        await store.renew_orchestration_lock(item.lock_token, 10.0)
        clock.now += 9.9
        assert await store.fetch_orchestration_items(10.0) == []
        clock.now += 0.1
        with pytest.raises(LockLost):
            await store.ack_orchestration_item(item.lock_token, commit(started()))
        [again] = await store.fetch_orchestration_items(10.0)
        assert again.attempt == 2

    async def test_injected_clock_drives_visibility_and_timestamps(self) -> None:
        clock = FakeClock()
        store = InMemoryProvider(clock)
        await store.create_instance(start_message("i-1"))
        rec = await store.get_instance("i-1")
        assert rec is not None and rec.created_at == rec.updated_at == clock.now
        [item] = await store.fetch_orchestration_items(10.0)
        clock.now += 1
        await store.ack_orchestration_item(item.lock_token, commit(
            started(), messages=[raised("i-1", visible_at=clock.now + 5)]))
        rec = await store.get_instance("i-1")
        assert rec is not None and rec.updated_at == clock.now
        clock.now += 4.9
        assert await store.fetch_orchestration_items(10.0) == []
        clock.now += 0.1
        assert len(await store.fetch_orchestration_items(10.0)) == 1

    async def test_closed_provider_refuses_work(self) -> None:
        store = InMemoryProvider()
        await store.close()
        with pytest.raises(ProviderError):
            await store.create_instance(start_message("i-1"))
        with pytest.raises(ProviderError):
            await store.fetch_orchestration_items(1.0)

    async def test_failing_listener_does_not_undo_the_commit(
            self, caplog: pytest.LogCaptureFixture) -> None:
        store = InMemoryProvider()

        def broken(_: str | None) -> None:
            raise RuntimeError("listener broke")

        store.listen("orchestrator", broken)
        await store.create_instance(start_message("i-1"))
        assert await store.get_instance("i-1") is not None
        assert "listener broke" in caplog.text

    async def test_usable_from_another_event_loop_and_thread(self) -> None:
        store = InMemoryProvider()
        calls: list[tuple[str | None, int]] = []
        store.listen("orchestrator", lambda i: calls.append((i, threading.get_ident())))
        await asyncio.to_thread(asyncio.run, store.create_instance(start_message("i-1")))
        [item] = await store.fetch_orchestration_items(10.0)
        assert item.instance_id == "i-1"
        assert calls[0][0] == "i-1" and calls[0][1] != threading.get_ident()

"""How a client waits for an instance: woken by the store's announcements, with a
safety-net poll that backs off on a store announcing every commit to every process."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from duroxy import (
    ActivityRegistry,
    Client,
    OrchestrationContext,
    OrchestrationRegistry,
    OrchestrationState,
    Runtime,
    _waiting,
)
from duroxy.providers.base import InstanceRecord
from duroxy.providers.memory import InMemoryProvider


def test_the_poll_backs_off_only_where_every_commit_is_announced() -> None:
    announcing: Any = SimpleNamespace(announces_work=True)
    silent: Any = SimpleNamespace(announces_work=False)
    polls = _waiting.polls(announcing)
    assert [next(polls) for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    polls = _waiting.polls(silent)
    assert [next(polls) for _ in range(6)] == [0.25] * 6


class Counted(InMemoryProvider):
    """An in-memory store that counts the instance reads its clients make."""

    def __init__(self, announces: bool) -> None:
        super().__init__()
        self.announces_work = announces
        self.reads = 0

    async def get_instance(self, instance_id: str) -> InstanceRecord | None:
        self.reads += 1
        return await super().get_instance(instance_id)


async def test_a_client_reads_less_often_from_a_store_that_announces_everything(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_waiting, "POLL_S", 0.01)
    monkeypatch.setattr(_waiting, "ANNOUNCED_POLL_MAX_S", 0.08)
    reads: dict[bool, int] = {}
    for announces in (False, True):
        store = Counted(announces)
        client = Client(store)
        await client.start_orchestration("waiting", "nobody-runs-it", None)  # no runtime
        with pytest.raises(TimeoutError, match=r"'waiting' is still PENDING after 0\.6 s"):
            await client.wait_for_orchestration("waiting", timeout=0.6)
        reads[announces] = store.reads
    # every 10 ms, against 0, 10, 30, 70, 150, 230 ... ms: about 60 reads against 10
    assert reads[True] <= 12 and reads[False] >= 2 * reads[True], reads


async def test_only_the_announcement_wakes_a_client_between_polls(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_waiting, "POLL_S", 3600.0)  # one read, then no poll for an hour
    store = Counted(True)

    async def waits(ctx: OrchestrationContext, _: None) -> Any:
        return await ctx.schedule_wait("go")

    rt = await Runtime.start(store, ActivityRegistry.builder().build(),
                             OrchestrationRegistry.builder().register("waits", waits).build())
    try:
        client = Client(store)
        await client.start_orchestration("ends", "waits", None)
        task = asyncio.ensure_future(client.wait_for_orchestration("ends", timeout=60))
        while store.reads < 1:
            await asyncio.sleep(0.01)
        assert not task.done()
        await client.raise_event("ends", "go", 7)
        status = await asyncio.wait_for(task, 10)
        assert status.state is OrchestrationState.COMPLETED and status.output == 7
    finally:
        await rt.shutdown(timeout=5)

"""Conformance tests for worker heartbeats (rows written, replaced, stopped, forgotten,
listed) and for what a fetch leaves to other workers: excluded orchestrations and
versions, excluded activities, and abandons that give work back without using up an
attempt."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from ...providers.base import ExcludedWork, FastPath, Provider, WorkerRecord
from .support import (
    HOLD,
    LOCK,
    ConformanceBase,
    create,
    fetch_one,
    first_turn,
    raised,
    scheduled,
    uid,
    work,
)

__all__ = ["WorkerTests"]

OLD = "conformance::orchestration::old"
MIXED = "conformance::orchestration::mixed"


def worker(worker_id: str | None = None, **kw: object) -> WorkerRecord:
    """A heartbeat row with every field set to something other than its default."""
    fields: dict[str, object] = {
        "worker_id": worker_id or uid("worker"), "host": "host-ä", "pid": 4242,
        "duroxy_version": "9.8.7", "started_at": 1_700_000_000.125,
        "last_seen_at": time.time(), "heartbeat_interval": 2.5,
        "orchestration_concurrency": 7, "activity_concurrency": 0,
        "tag_filter": "DEFAULT_ONLY",
        "orchestrations": ("app::orchestration::a@1.0.0", "we@ird@2.0.0-rc.1"),
        "activities": ("app::activity::x", "ünïcode"), "active_activities": 3,
        "sessions_owned": 0, "worker_node_id": None, "stopped_at": None}
    fields.update(kw)
    return WorkerRecord(**fields)  # type: ignore[arg-type]


class WorkerTests(ConformanceBase):
    # ------------------------------------------------------------ heartbeats
    async def test_heartbeat_row_round_trips_exactly(self, provider: Provider) -> None:
        w = worker()
        await provider.record_heartbeat(w)
        assert await provider.list_workers() == [w]
        node = worker(worker_node_id="node-1", orchestrations=(), activities=(),
                      sessions_owned=2, pid=2**40)
        await provider.record_heartbeat(node)
        assert node in await provider.list_workers()

    async def test_a_heartbeat_replaces_the_workers_row(self, provider: Provider) -> None:
        w = worker()
        await provider.record_heartbeat(w)
        later = dataclasses.replace(w, last_seen_at=w.last_seen_at + 10,
                                    active_activities=0, activities=("y",))
        await provider.record_heartbeat(later)
        assert await provider.list_workers() == [later]

    async def test_stopped_workers_are_listed_only_on_request(
            self, provider: Provider) -> None:
        running, stopped = worker(), worker()
        stopped = dataclasses.replace(stopped, stopped_at=stopped.last_seen_at)
        await provider.record_heartbeat(running)
        await provider.record_heartbeat(stopped)
        assert await provider.list_workers() == [running]
        assert await provider.list_workers(include_stopped=True) in (
            [running, stopped], [stopped, running])

    async def test_a_late_heartbeat_does_not_revive_a_stopped_worker(
            self, provider: Provider) -> None:
        w = worker()
        stopped = dataclasses.replace(w, last_seen_at=w.last_seen_at + 1,
                                      stopped_at=w.last_seen_at + 1)
        await provider.record_heartbeat(stopped)
        await provider.record_heartbeat(dataclasses.replace(w, last_seen_at=w.last_seen_at + 2))
        assert await provider.list_workers(include_stopped=True) == [stopped]
        # the same id started again is another runtime: its row replaces the old one
        again = dataclasses.replace(w, started_at=w.started_at + 60)
        await provider.record_heartbeat(again)
        assert await provider.list_workers(include_stopped=True) == [again]

    async def test_forget_before_removes_other_workers_not_seen_since(
            self, provider: Provider) -> None:
        now = time.time()
        old = worker(last_seen_at=now - 90_000)
        old_stopped = worker(last_seen_at=now - 90_000, stopped_at=now - 90_000)
        recent = worker(last_seen_at=now - 60)
        for w in (old, old_stopped, recent):
            await provider.record_heartbeat(w)
        # the writer's own row stays, however old the time it writes
        writer = worker(last_seen_at=now - 100_000)
        await provider.record_heartbeat(writer, forget_before=now - 86_400)
        kept = await provider.list_workers(include_stopped=True)
        assert sorted(w.worker_id for w in kept) == sorted([recent.worker_id, writer.worker_id])

    async def test_workers_are_listed_oldest_started_first(self, provider: Provider) -> None:
        ws = [worker(f"w-{n}", started_at=1_700_000_000.0 + s)
              for n, s in (("b", 1), ("c", 0), ("a", 1), ("d", 2))]
        for w in ws:
            await provider.record_heartbeat(w)
        assert [w.worker_id for w in await provider.list_workers()] == [
            "w-c", "w-a", "w-b", "w-d"]

    # ------------------------------------------------------------ excluded orchestrations
    async def test_fetch_leaves_excluded_orchestrations_and_versions_alone(
            self, provider: Provider) -> None:
        sender, ghost = uid("sender"), uid("ghost")
        await first_turn(provider, sender, messages=[raised(ghost)])  # no record: fetched
        old, new, mixed2, mixed1, unpinned = (uid(t) for t in (
            "old", "new", "mixed2", "mixed1", "unpinned"))
        await create(provider, old, OLD)
        await create(provider, new)
        await create(provider, mixed2, MIXED, version="2.0.0")
        await create(provider, mixed1, MIXED, version="1.0.0")
        await create(provider, unpinned, MIXED, version=None)  # its version is not chosen
        exclude = ExcludedWork(orchestrations=frozenset({OLD}),
                               orchestration_versions=frozenset({(MIXED, "2.0.0")}))
        items = await provider.fetch_orchestration_items(HOLD, limit=10, exclude=exclude)
        assert sorted(i.instance_id for i in items) == sorted([new, mixed1, unpinned, ghost])
        assert await provider.fetch_orchestration_items(HOLD, limit=10, exclude=exclude) == []
        rest = await provider.fetch_orchestration_items(HOLD, limit=10)
        assert sorted(i.instance_id for i in rest) == sorted([old, mixed2])

    async def test_excluded_work_ahead_in_the_queue_does_not_hide_the_rest(
            self, provider: Provider) -> None:
        for _ in range(20):
            await create(provider, uid("old"), OLD)
        wanted = uid("new")
        await create(provider, wanted)
        exclude = ExcludedWork(orchestrations=frozenset({OLD}))
        [item] = await provider.fetch_orchestration_items(HOLD, limit=1, exclude=exclude)
        assert item.instance_id == wanted
        if isinstance(provider, FastPath):
            assert await provider.poll_orchestration_items(HOLD, 1, 0.0, exclude=exclude) == []

    async def test_a_polling_fetch_is_never_handed_excluded_work(
            self, provider: Provider) -> None:
        if not isinstance(provider, FastPath):
            pytest.skip(f"{type(provider).__name__} does not poll (no FastPath)")
        exclude = ExcludedWork(orchestrations=frozenset({OLD}))
        poll = asyncio.ensure_future(
            provider.poll_orchestration_items(HOLD, 10, 0.5, exclude=exclude))
        await asyncio.sleep(0.05)  # parked, where the store parks polls
        iid = uid("old")
        await create(provider, iid, OLD)
        assert await poll == []
        item = await fetch_one(provider)
        assert item.instance_id == iid and item.attempt == 1

    async def test_an_orchestration_abandon_may_not_count_as_an_attempt(
            self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        item = await fetch_one(provider)
        assert item.attempt == 1
        await provider.abandon_orchestration_item(item.lock_token, ignore_attempt=True)
        again = await fetch_one(provider)
        assert again.attempt == 1
        await provider.abandon_orchestration_item(again.lock_token)
        counted = await fetch_one(provider)
        assert counted.attempt == 2
        await provider.abandon_orchestration_item(counted.lock_token, LOCK,
                                                  ignore_attempt=True)
        assert await provider.fetch_orchestration_items(HOLD, limit=10) == []
        await self.expire(LOCK)
        assert (await fetch_one(provider)).attempt == 2

    # ------------------------------------------------------------ excluded activities
    async def test_activity_fetch_leaves_excluded_names_alone(self, provider: Provider) -> None:
        iid = uid()
        works = [work(iid, 2 + n, name=name) for n, name in enumerate(
            ["lacking"] * 20 + ["known", "lacking", "other"])]
        await first_turn(provider, iid, *[scheduled(w.event_id, w.name) for w in works],
                         activities=works)
        exclude = ExcludedWork(activities=frozenset({"lacking"}))
        [first] = await provider.fetch_activity_items(HOLD, limit=1, exclude=exclude)
        assert first.work.name == "known"
        rest = await provider.fetch_activity_items(HOLD, limit=50, exclude=exclude)
        assert [i.work.name for i in rest] == ["other"]
        assert await provider.fetch_activity_items(HOLD, limit=50, exclude=exclude) == []
        lacking = await provider.fetch_activity_items(HOLD, limit=50)
        assert [i.work.name for i in lacking] == ["lacking"] * 21

    async def test_an_activity_abandon_may_not_count_as_an_attempt(
            self, provider: Provider) -> None:
        iid = uid()
        w = work(iid, 2)
        await first_turn(provider, iid, scheduled(2), activities=[w])
        [item] = await provider.fetch_activity_items(HOLD, limit=10)
        await provider.abandon_activity(item.lock_token, ignore_attempt=True)
        [again] = await provider.fetch_activity_items(HOLD, limit=10)
        assert again.work == w and again.attempt == 1
        await provider.abandon_activity(again.lock_token)
        [counted] = await provider.fetch_activity_items(HOLD, limit=10)
        assert counted.attempt == 2
        await provider.abandon_activity(counted.lock_token, LOCK, ignore_attempt=True)
        assert await provider.fetch_activity_items(HOLD, limit=10) == []
        await self.expire(LOCK)
        [last] = await provider.fetch_activity_items(HOLD, limit=10)
        assert last.attempt == 2

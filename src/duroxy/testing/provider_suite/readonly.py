"""Conformance tests for a provider opened read-only beside the store's writer: it
reads what the writer committed (and keeps seeing what it commits), refuses every write
with ``StoreReadOnly`` while changing nothing, and the writer keeps working meanwhile.

A writer may hand back the result of a turn's acknowledgement before its commit has
landed (reads through the writer itself wait for it, other readers do not); the tests
``flush()`` the writer before they expect the read-only provider to see such a commit.

A provider's test class supplies the read-only provider through the
:meth:`ReadOnlyTests.open_read_only` hook (the default skips these tests, for a store
that cannot be opened read-only, such as a private in-memory database)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ...errors import ProviderError, StoreReadOnly
from ...providers.base import FastPath, Provider
from .support import (
    HOLD,
    NAME,
    ConformanceBase,
    activity_completion,
    commit,
    create,
    fetch_one,
    first_turn,
    raised,
    scheduled,
    start_message,
    started,
    uid,
    work,
)

__all__ = ["ReadOnlyTests"]


def _fast(provider: Provider) -> FastPath:
    assert isinstance(provider, FastPath)
    return provider


class ReadOnlyTests(ConformanceBase):
    async def open_read_only(self, provider: Provider) -> Provider:
        """A provider opened read-only on the store of ``provider``, which has been
        used (its store exists); the test closes it."""
        pytest.skip("this store cannot be opened read-only")

    async def _with_read_only(self, provider: Provider,
                              body: Callable[[Provider], Awaitable[None]]) -> None:
        ro = await self.open_read_only(provider)
        try:
            await body(ro)
        finally:
            await ro.close()

    async def test_read_only_provider_reads_what_the_writer_committed(
            self, provider: Provider) -> None:
        iid = uid()
        await first_turn(provider, iid, scheduled(2), activities=[work(iid, 2)],
                         custom_status='"busy"')

        async def body(ro: Provider) -> None:
            assert ro.read_only and not provider.read_only
            assert await ro.get_instance(iid) == await provider.get_instance(iid)
            assert await ro.read_history(iid) == await provider.read_history(iid)
            assert [e.kind for e in await ro.read_history(iid)] == [
                "OrchestrationStarted", "ActivityScheduled"]
            assert await ro.list_executions(iid) == [1]
            assert await ro.get_instance(uid("absent")) is None
            mine = await ro.list_instances(name=NAME, limit=1000)
            assert iid in [r.instance_id for r in mine]
            assert mine == await provider.list_instances(name=NAME, limit=1000)
            # What the writer commits from now on is seen too.
            later = uid()
            await create(provider, later)
            rec = await ro.get_instance(later)
            assert rec is not None and rec.state == "PENDING"

        await self._with_read_only(provider, body)

    async def test_read_only_provider_refuses_every_write_and_changes_nothing(
            self, provider: Provider) -> None:
        iid = uid()
        await first_turn(provider, iid, scheduled(2), activities=[work(iid, 2)])
        await provider.enqueue_orchestrator_message(raised(iid, "waiting"))
        item = await fetch_one(provider)  # the writer holds the instance's lock
        [act] = await provider.fetch_activity_items(HOLD)
        before = (await provider.get_instance(iid), await provider.read_history(iid))
        fresh = uid()
        c = commit(scheduled(3), activities=[work(iid, 3)])

        writes: dict[str, Callable[[Provider], Awaitable[Any]]] = {
            "create_instance": lambda p: p.create_instance(start_message(fresh)),
            "enqueue_orchestrator_message": lambda p: p.enqueue_orchestrator_message(
                raised(iid, "more")),
            "fetch_orchestration_items": lambda p: p.fetch_orchestration_items(HOLD, 10),
            "ack_orchestration_item": lambda p: p.ack_orchestration_item(item.lock_token, c),
            "abandon_orchestration_item": lambda p: p.abandon_orchestration_item(
                item.lock_token),
            "renew_orchestration_lock": lambda p: p.renew_orchestration_lock(
                item.lock_token, HOLD),
            "fetch_activity_items": lambda p: p.fetch_activity_items(HOLD, 10),
            "ack_activity": lambda p: p.ack_activity(act.lock_token,
                                                     activity_completion(act.work)),
            "abandon_activity": lambda p: p.abandon_activity(act.lock_token),
            "renew_activity_lock": lambda p: p.renew_activity_lock(act.lock_token, HOLD),
            "delete_instance": lambda p: p.delete_instance(iid),
            "purge_instances": lambda p: p.purge_instances(
                states=["RUNNING", "PENDING"], name=NAME),
            "prune_executions": lambda p: p.prune_executions(iid, 1),
            "delete_instance_tree": lambda p: p.delete_instance_tree(iid),
        }
        if isinstance(provider, FastPath):
            writes.update({
                "poll_orchestration_items": lambda p: _fast(p).poll_orchestration_items(
                    HOLD, 10, 0.0),
                "lock_instance": lambda p: _fast(p).lock_instance(iid, HOLD),
                "commit_turn": lambda p: _fast(p).commit_turn(iid, 2, c),
            })

        async def body(ro: Provider) -> None:
            for operation, write in writes.items():
                with pytest.raises(StoreReadOnly) as refused:
                    await write(ro)
                assert isinstance(refused.value, ProviderError)
                assert refused.value.retryable is False, operation
                said = str(refused.value)
                # (A poll that does not wait is a fetch.)
                named = {operation, "fetch_orchestration_items"} if operation.startswith(
                    "poll") else {operation}
                assert any(n in said for n in named) and "read-only" in said, said
            # Nothing changed, and the writer's locks still hold.
            assert (await provider.get_instance(iid), await provider.read_history(iid)) == before
            assert await provider.get_instance(fresh) is None
            assert await ro.get_instance(iid) == before[0]

        await self._with_read_only(provider, body)
        await provider.ack_activity(act.lock_token, activity_completion(act.work))
        await provider.ack_orchestration_item(item.lock_token, commit(
            scheduled(3), state="COMPLETED", output='"ok"'))
        [again] = await provider.fetch_orchestration_items(HOLD, 10)
        assert again.instance_id == iid and again.attempt == 1  # nothing fetched it before
        assert [m.message.event.kind for m in again.messages if m.message] == [
            "ActivityCompleted"]

    async def test_writer_keeps_working_beside_an_open_read_only_provider(
            self, provider: Provider) -> None:
        first = uid()
        await create(provider, first)

        async def body(ro: Provider) -> None:
            assert await ro.get_instance(first) is not None  # open, and reading
            item = await fetch_one(provider)
            await provider.ack_orchestration_item(item.lock_token, commit(started()))
            rec = await ro.get_instance(first)
            assert rec is not None and (rec.state, rec.history_len) == ("RUNNING", 1)
            later = [uid() for _ in range(3)]
            for iid in later:
                await create(provider, iid)
            seen = [r.instance_id for r in await ro.list_instances(name=NAME, limit=1000)]
            assert {first, *later} <= set(seen)
            assert await provider.delete_instance(first) == 1
            assert await ro.get_instance(first) is None
            assert await ro.read_history(first) == []

        await self._with_read_only(provider, body)

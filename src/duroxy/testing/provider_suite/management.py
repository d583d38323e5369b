"""Conformance tests for reads and management: get, list (filters, order, paging),
delete (with and without cascade) and purge."""

from __future__ import annotations

import asyncio

import pytest

from ...errors import ErrorDetails, LockLost
from ...history import OrchestrationCompleted
from ...providers.base import InstanceRecord, Provider
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

__all__ = ["ManagementTests"]


async def make(provider: Provider, instance_id: str, state: str = "RUNNING", *,
               name: str = NAME, parent: str | None = None) -> InstanceRecord:
    """Create an instance and, unless ``state`` is PENDING, run one turn leaving it in
    ``state``. Other instances' queued messages (PENDING ones) are left queued."""
    await create(provider, instance_id, name, parent_instance_id=parent)
    if state != "PENDING":
        items = await provider.fetch_orchestration_items(HOLD, limit=100)
        for other in items:
            if other.instance_id != instance_id:
                await provider.abandon_orchestration_item(other.lock_token)
        [item] = [i for i in items if i.instance_id == instance_id]
        error = ErrorDetails("application", "ValueError", "x") if state == "FAILED" else None
        await provider.ack_orchestration_item(item.lock_token, commit(
            started(name, parent_instance_id=parent), state=state, name=name, error=error,
            output="1" if state == "COMPLETED" else None))
    rec = await provider.get_instance(instance_id)
    assert rec is not None and rec.state == state
    return rec


def ids(records: list[InstanceRecord]) -> list[str]:
    return [r.instance_id for r in records]


class ManagementTests(ConformanceBase):
    # ------------------------------------------------------------ get / list

    # ------------------------------------------------------------ the end, as a waiter sees it
    async def _end_while_waited_for(self, provider: Provider, iid: str) -> list[str | None]:
        woken: list[str | None] = []
        self._unlisten = provider.listen("terminal", woken.append)
        await create(provider, iid, parent_instance_id="the-parent")
        item = await fetch_one(provider)
        await provider.ack_orchestration_item(item.lock_token, commit(
            started(parent_instance_id="the-parent"),
            OrchestrationCompleted(event_id=2, ts=1, output='"r"'),
            state="COMPLETED", output='"r"', custom_status='"cs"'))
        for _ in range(500):  # a store may announce the end from another thread
            if woken:
                break
            await asyncio.sleep(0.01)
        return woken

    async def test_a_waiter_woken_by_the_end_reads_the_stored_record(
            self, provider: Provider) -> None:
        iid = uid()
        assert await self._end_while_waited_for(provider, iid) == [iid]
        first = await provider.get_instance(iid)
        again = await provider.get_instance(iid)
        self._unlisten()
        assert first is not None and first == again, (first, again)
        assert (first.state, first.output, first.custom_status, first.history_len,
                first.parent_instance_id, first.execution_id) == (
                    "COMPLETED", '"r"', '"cs"', 2, "the-parent", 1)
        assert first.updated_at >= first.created_at

    async def test_an_instance_deleted_after_its_end_is_gone(self, provider: Provider) -> None:
        iid = uid()
        assert await self._end_while_waited_for(provider, iid) == [iid]
        assert await provider.delete_instance(iid) == 1
        self._unlisten()
        assert await provider.get_instance(iid) is None

    async def test_get_unknown_instance_returns_none(self, provider: Provider) -> None:
        assert await provider.get_instance(uid("unknown")) is None

    async def test_list_filters_by_single_state(self, provider: Provider) -> None:
        name = uid("name")
        made = {s: await make(provider, uid(s.lower()), s, name=name)
                for s in ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED")}
        for state, rec in made.items():
            assert ids(await provider.list_instances(state=state, name=name)) == [
                rec.instance_id]
        anywhere = await provider.list_instances(state="FAILED", limit=1000)
        assert made["FAILED"].instance_id in ids(anywhere)
        assert {r.state for r in anywhere} == {"FAILED"}

    async def test_list_filters_by_state_list(self, provider: Provider) -> None:
        name = uid("name")
        done = await make(provider, uid("done"), "COMPLETED", name=name)
        failed = await make(provider, uid("failed"), "FAILED", name=name)
        await make(provider, uid("running"), "RUNNING", name=name)
        got = await provider.list_instances(state=["COMPLETED", "FAILED"], name=name)
        assert sorted(ids(got)) == sorted([done.instance_id, failed.instance_id])
        assert await provider.list_instances(state=("CANCELLED",), name=name) == []

    async def test_list_with_empty_state_list_matches_nothing(self, provider: Provider) -> None:
        name = uid("name")
        await make(provider, uid(), "RUNNING", name=name)
        assert await provider.list_instances(state=[], name=name) == []

    async def test_list_filters_by_name(self, provider: Provider) -> None:
        n1, n2 = uid("name1"), uid("name2")
        a = await make(provider, uid("a"), name=n1)
        b = await make(provider, uid("b"), name=n2)
        assert await provider.list_instances(name=n1) == [a]
        assert await provider.list_instances(name=n2) == [b]
        assert await provider.list_instances(name=uid("nobody")) == []

    async def test_list_filters_by_parent(self, provider: Provider) -> None:
        p1, p2 = uid("p1"), uid("p2")
        c1 = await make(provider, uid("c1"), parent=p1)
        c2 = await make(provider, uid("c2"), "PENDING", parent=p1)
        c3 = await make(provider, uid("c3"), parent=p2)
        assert sorted(ids(await provider.list_instances(parent_instance_id=p1))) == sorted(
            [c1.instance_id, c2.instance_id])
        assert ids(await provider.list_instances(parent_instance_id=p2)) == [c3.instance_id]
        assert ids(await provider.list_instances(parent_instance_id=p1, state="PENDING")) == [
            c2.instance_id]

    async def test_list_combines_filters(self, provider: Provider) -> None:
        name, parent = uid("name"), uid("parent")
        hit = await make(provider, uid("hit"), "COMPLETED", name=name, parent=parent)
        await make(provider, uid("wrong-state"), "RUNNING", name=name, parent=parent)
        await make(provider, uid("wrong-name"), "COMPLETED", parent=parent)
        await make(provider, uid("wrong-parent"), "COMPLETED", name=name)
        assert await provider.list_instances(
            state="COMPLETED", name=name, parent_instance_id=parent) == [hit]

    async def test_list_is_ordered_oldest_created_first(self, provider: Provider) -> None:
        name = uid("name")
        made = [await make(provider, uid(tag), name=name) for tag in ("z", "m", "a", "q")]
        listed = await provider.list_instances(name=name)
        assert sorted(ids(listed)) == sorted(ids(made))
        assert listed == sorted(listed, key=lambda r: (r.created_at, r.instance_id))
        created = [r.created_at for r in made]
        assert created == sorted(created)  # the provider clock does not run backwards

    async def test_list_paging_is_stable_and_complete(self, provider: Provider) -> None:
        name = uid("name")
        for n in range(5):
            await make(provider, uid(f"p{n}"), "PENDING" if n % 2 else "RUNNING", name=name)
        full = await provider.list_instances(name=name)
        pages = [await provider.list_instances(name=name, limit=2, offset=o) for o in (0, 2, 4)]
        assert [len(p) for p in pages] == [2, 2, 1]
        assert ids([r for p in pages for r in p]) == ids(full)
        assert len(set(ids(full))) == 5
        assert await provider.list_instances(name=name, limit=2, offset=10) == []
        assert ids(await provider.list_instances(name=name, limit=3)) == ids(full)[:3]

    async def test_listed_records_equal_get_instance(self, provider: Provider) -> None:
        name = uid("name")
        await make(provider, uid(), "COMPLETED", name=name)
        [listed] = await provider.list_instances(name=name)
        assert listed == await provider.get_instance(listed.instance_id)
        assert listed.history_len == 1 and listed.output == "1"

    # ------------------------------------------------------------ delete
    async def test_delete_removes_record_history_and_queued_work(
            self, provider: Provider) -> None:
        iid = uid()
        await first_turn(provider, iid, scheduled(2), activities=[work(iid)])
        await provider.enqueue_orchestrator_message(raised(iid))
        assert await provider.delete_instance(iid) == 1
        assert await provider.get_instance(iid) is None
        assert await provider.read_history(iid) == []
        assert await provider.list_executions(iid) == []
        assert await provider.fetch_orchestration_items(HOLD, limit=10) == []
        assert await provider.fetch_activity_items(HOLD, limit=10) == []

    async def test_delete_unknown_returns_zero(self, provider: Provider) -> None:
        assert await provider.delete_instance(uid("unknown")) == 0

    async def test_delete_cascades_to_descendants(self, provider: Provider) -> None:
        parent, child, grandchild, other = uid("p"), uid("c"), uid("g"), uid("o")
        await make(provider, other)
        await first_turn(provider, parent, messages=[
            start_message(child, "child", parent_instance_id=parent)])
        turn = await fetch_one(provider)  # the child's first turn starts a grandchild
        await provider.ack_orchestration_item(turn.lock_token, commit(
            started("child", parent_instance_id=parent), scheduled(2), name="child",
            activities=[work(child)],
            messages=[start_message(grandchild, "gc", parent_instance_id=child)]))
        assert await provider.delete_instance(parent) == 3
        for gone in (parent, child, grandchild):
            assert await provider.get_instance(gone) is None
            assert await provider.read_history(gone) == []
        assert await provider.fetch_orchestration_items(HOLD, limit=10) == []
        assert await provider.fetch_activity_items(HOLD, limit=10) == []
        assert await provider.get_instance(other) is not None

    async def test_delete_without_cascade_keeps_children(self, provider: Provider) -> None:
        parent, child = uid("p"), uid("c")
        await make(provider, parent)
        await make(provider, child, parent=parent)
        assert await provider.delete_instance(parent, cascade=False) == 1
        rec = await provider.get_instance(child)
        assert rec is not None and rec.parent_instance_id == parent

    async def test_delete_of_a_child_leaves_parent_and_siblings(
            self, provider: Provider) -> None:
        parent, c1, c2 = uid("p"), uid("c1"), uid("c2")
        await make(provider, parent)
        await make(provider, c1, parent=parent)
        await make(provider, c2, parent=parent)
        assert await provider.delete_instance(c1) == 1
        assert ids(await provider.list_instances(parent_instance_id=parent)) == [c2]
        assert await provider.get_instance(parent) is not None

    async def test_delete_makes_running_activity_ack_fail(self, provider: Provider) -> None:
        iid = uid()
        w = work(iid)
        await first_turn(provider, iid, scheduled(2), activities=[w])
        [act] = await provider.fetch_activity_items(HOLD, limit=10)
        await provider.delete_instance(iid)
        with pytest.raises(LockLost):
            await provider.renew_activity_lock(act.lock_token, HOLD)
        with pytest.raises(LockLost):
            await provider.ack_activity(act.lock_token, activity_completion(w))
        assert await provider.fetch_orchestration_items(HOLD, limit=10) == []

    async def test_delete_while_locked_makes_ack_fail(self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        item = await fetch_one(provider)
        assert await provider.delete_instance(iid) == 1
        with pytest.raises(LockLost):
            await provider.ack_orchestration_item(item.lock_token, commit(started()))
        assert await provider.get_instance(iid) is None
        assert await provider.read_history(iid) == []

    async def test_deleted_id_can_be_created_again(self, provider: Provider) -> None:
        iid = uid()
        await make(provider, iid, "COMPLETED")
        await provider.delete_instance(iid)
        await create(provider, iid, "fresh::orch")
        rec = await provider.get_instance(iid)
        assert rec is not None and (rec.name, rec.state, rec.history_len) == (
            "fresh::orch", "PENDING", 0)
        assert await provider.list_executions(iid) == []
        item = await fetch_one(provider)
        assert item.instance_id == iid and len(item.messages) == 1

    # ------------------------------------------------------------ purge
    async def test_purge_defaults_to_terminal_states(self, provider: Provider) -> None:
        name = uid("name")
        made = {s: await make(provider, uid(s.lower()), s, name=name)
                for s in ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED")}
        assert await provider.purge_instances(name=name) == 3
        assert sorted(ids(await provider.list_instances(name=name))) == sorted(
            [made["PENDING"].instance_id, made["RUNNING"].instance_id])

    async def test_purge_explicit_states(self, provider: Provider) -> None:
        name = uid("name")
        await make(provider, uid("done"), "COMPLETED", name=name)
        failed = await make(provider, uid("failed"), "FAILED", name=name)
        running = await make(provider, uid("running"), "RUNNING", name=name)
        assert await provider.purge_instances(states=["FAILED", "RUNNING"], name=name) == 2
        left = ids(await provider.list_instances(name=name))
        assert failed.instance_id not in left and running.instance_id not in left
        assert len(left) == 1

    async def test_purge_updated_before(self, provider: Provider) -> None:
        name = uid("name")
        made = [await make(provider, uid(f"d{n}"), "COMPLETED", name=name) for n in range(3)]
        cutoff = made[1].updated_at
        older = sorted(r.instance_id for r in made if r.updated_at < cutoff)
        assert await provider.purge_instances(updated_before=cutoff, name=name) == len(older)
        left = ids(await provider.list_instances(name=name))
        assert sorted(set(ids(made)) - set(left)) == older
        assert await provider.purge_instances(updated_before=made[0].updated_at - 3600,
                                              name=name) == 0
        assert await provider.purge_instances(updated_before=made[2].updated_at + 3600,
                                              name=name) == len(left)

    async def test_purge_by_name_leaves_other_names(self, provider: Provider) -> None:
        n1, n2 = uid("name1"), uid("name2")
        await make(provider, uid("a"), "COMPLETED", name=n1)
        b = await make(provider, uid("b"), "COMPLETED", name=n2)
        assert await provider.purge_instances(name=n1) == 1
        assert await provider.list_instances(name=n1) == []
        assert await provider.list_instances(name=n2) == [b]

    async def test_purge_limit_takes_oldest_updated_first(self, provider: Provider) -> None:
        name = uid("name")
        made = [await make(provider, uid(f"d{n}"), "COMPLETED", name=name) for n in range(4)]
        assert await provider.purge_instances(name=name, limit=3) == 3
        newest = max(made, key=lambda r: (r.updated_at, r.instance_id))
        assert ids(await provider.list_instances(name=name)) == [newest.instance_id]

    async def test_purge_removes_history_and_messages(self, provider: Provider) -> None:
        iid, name = uid(), uid("name")
        await make(provider, iid, "COMPLETED", name=name)
        await provider.enqueue_orchestrator_message(raised(iid, "late"))
        assert await provider.purge_instances(states=["COMPLETED"], name=name) == 1
        assert await provider.get_instance(iid) is None
        assert await provider.read_history(iid) == []
        assert await provider.fetch_orchestration_items(HOLD, limit=10) == []

    async def test_purge_does_not_cascade(self, provider: Provider) -> None:
        pname = uid("parent-name")
        parent = await make(provider, uid("p"), "COMPLETED", name=pname)
        child = await make(provider, uid("c"), "RUNNING", parent=parent.instance_id)
        assert await provider.purge_instances(name=pname) == 1
        assert await provider.get_instance(child.instance_id) == child

    async def test_purge_with_nothing_matching_returns_zero(self, provider: Provider) -> None:
        name = uid("name")
        await make(provider, uid(), "RUNNING", name=name)
        assert await provider.purge_instances(name=name) == 0
        assert await provider.purge_instances(name=uid("nobody")) == 0
        assert len(await provider.list_instances(name=name)) == 1

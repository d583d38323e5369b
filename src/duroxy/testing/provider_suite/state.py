"""Conformance tests for what a store keeps beside the queues:
per-instance key-value state written by turn commits, custom status versions, the
KV an execution starts with, the unread count, executions and pruning, sizes, counted
deletes, creation-time filters and keyset listing, and the ``updated`` channel."""

from __future__ import annotations

import asyncio

import pytest

from ...history import (
    CustomStatusSet,
    EventRaised,
    HistoryEvent,
    KeyValueSet,
    OrchestrationContinuedAsNew,
    OrchestratorMessage,
    QueueEventDelivered,
)
from ...providers.base import KvEntry, OrchestrationCommit, Provider
from .support import (
    HOLD,
    NAME,
    TS,
    ConformanceBase,
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

__all__ = ["StateTests"]


def kv_set(event_id: int, key: str, value: str, at: int = TS) -> KeyValueSet:
    return KeyValueSet(event_id=event_id, ts=at, key=key, value=value, updated_at=at)


def queued(instance_id: str, queue: str = "inbox", data: str = "1") -> OrchestratorMessage:
    return OrchestratorMessage(instance_id, QueueEventDelivered(ts=TS, name=queue, data=data))


async def turn(provider: Provider, instance_id: str, c: OrchestrationCommit) -> None:
    """Send the instance a message, fetch it and ack ``c`` (other instances fetched
    meanwhile are given back untouched)."""
    await provider.enqueue_orchestrator_message(raised(instance_id, "next"))
    items = await provider.fetch_orchestration_items(HOLD, limit=100)
    for other in items:
        if other.instance_id != instance_id:
            await provider.abandon_orchestration_item(other.lock_token, ignore_attempt=True)
    [item] = [i for i in items if i.instance_id == instance_id]
    await provider.ack_orchestration_item(item.lock_token, c)


def continued(event_id: int) -> OrchestrationContinuedAsNew:
    return OrchestrationContinuedAsNew(event_id=event_id, ts=TS, input="null")


async def executions(provider: Provider, instance_id: str, n: int) -> None:
    """Give the instance executions 1..n, each of two events (1..n-1 continued as new),
    execution k's last event stamped ``TS + k``: the record says execution n."""
    for k in range(1, n + 1):
        history: list[HistoryEvent] = [started(execution_id=k)]
        if k < n:
            history.append(OrchestrationContinuedAsNew(event_id=2, ts=TS + k, input="1"))
        else:
            history.append(scheduled(2))
        c = commit(*history, execution_id=k)
        if k == 1:
            await create(provider, instance_id)
            item = await fetch_one(provider)
            await provider.ack_orchestration_item(item.lock_token, c)
        else:
            await turn(provider, instance_id, c)


class StateTests(ConformanceBase):
    # ------------------------------------------------------------ key-value state
    async def test_kv_is_written_by_the_turn_commit_and_read_sorted(
            self, provider: Provider) -> None:
        iid = uid()
        assert await provider.read_kv(iid) is None  # no record
        await first_turn(provider, iid, kv_set(2, "b", '"two"'), kv_set(3, "a", "1"),
                         kv_set(4, "z", "null"))
        c = commit(kv_set(5, "b", '"2"', TS + 5))
        c.kv_set = [("b", '"2"', TS + 5)]
        c.kv_delete = ["z", "never-there"]
        await turn(provider, iid, c)
        rec = await provider.get_instance(iid)
        assert rec is not None
        # the first turn wrote no KV (its commit said none): only the second's shows
        assert await provider.read_kv(iid) == {"b": KvEntry('"2"', TS + 5)}
        c = commit()
        c.kv_set = [("é", '"x"', 7), ("b", "[1,2]", 8), ("A", "{}", 9), ("Ω", "null", 10)]
        await turn(provider, iid, c)
        kv = await provider.read_kv(iid)
        assert kv is not None and list(kv) == sorted(["b", "é", "A", "Ω"])
        assert kv["b"] == KvEntry("[1,2]", 8) and kv["Ω"] == KvEntry("null", 10)
        assert await provider.read_kv(iid, "é") == {"é": KvEntry('"x"', 7)}
        assert await provider.read_kv(iid, "missing") == {}
        assert await provider.read_kv(uid("unknown"), "b") is None

    async def test_kv_clear_removes_every_key_before_the_sets(
            self, provider: Provider) -> None:
        iid = uid()
        c = commit(started())
        c.kv_set = [("a", "1", 1), ("b", "2", 2), ("c", "3", 3)]
        await create(provider, iid)
        await provider.ack_orchestration_item((await fetch_one(provider)).lock_token, c)
        c = commit()
        c.kv_clear = True
        c.kv_set = [("b", "20", 4)]
        await turn(provider, iid, c)
        assert await provider.read_kv(iid) == {"b": KvEntry("20", 4)}
        c = commit()
        c.kv_clear = True
        await turn(provider, iid, c)
        assert await provider.read_kv(iid) == {}

    async def test_kv_of_a_turn_that_loses_its_lock_is_not_written(
            self, provider: Provider) -> None:
        iid = uid()
        await first_turn(provider, iid)
        await provider.enqueue_orchestrator_message(raised(iid))
        item = await provider.fetch_orchestration_items(0.2, limit=10)
        await self.expire(0.2)
        c = commit()
        c.kv_set = [("k", "1", 1)]
        c.custom_status_changed = True
        from ...errors import LockLost

        with pytest.raises(LockLost):
            await provider.ack_orchestration_item(item[0].lock_token, c)
        assert await provider.read_kv(iid) == {}
        rec = await provider.get_instance(iid)
        assert rec is not None and rec.custom_status_version == 0

    async def test_kv_goes_with_the_instance(self, provider: Provider) -> None:
        deleted, purged = uid("deleted"), uid("purged")
        for iid in (deleted, purged):
            await create(provider, iid)
            c = commit(started(), state="COMPLETED", output="1")
            c.kv_set = [("k", "1", 1)]
            await provider.ack_orchestration_item((await fetch_one(provider)).lock_token, c)
        assert await provider.delete_instance(deleted) == 1
        assert await provider.read_kv(deleted) is None
        assert await provider.purge_instances(states=["COMPLETED"], name=NAME) >= 1
        assert await provider.read_kv(purged) is None
        # a new instance under a deleted id starts empty
        await create(provider, deleted)
        assert await provider.read_kv(deleted) == {}

    async def test_kv_base_is_what_the_next_execution_starts_with(
            self, provider: Provider) -> None:
        iid = uid()
        await first_turn(provider, iid)
        rec = await provider.get_instance(iid)
        assert rec is not None and rec.kv_base is False
        assert await provider.read_kv_base(iid) == {}
        base = {"a": KvEntry("1", 5), "big": KvEntry('"' + "x" * 70_000 + '"', 6)}
        c = commit(continued(2), messages=[start_message(iid, execution_id=2)])
        c.replace_kv_base, c.kv_base = True, base
        await turn(provider, iid, c)
        rec = await provider.get_instance(iid)
        assert rec is not None and rec.kv_base is True
        assert await provider.read_kv_base(iid) == base
        # a turn that does not replace it keeps it; one that replaces it with none clears it
        await turn(provider, iid, commit(execution_id=2))
        assert await provider.read_kv_base(iid) == base
        c = commit(execution_id=2)
        c.replace_kv_base = True
        await turn(provider, iid, c)
        rec = await provider.get_instance(iid)
        assert rec is not None and rec.kv_base is False
        assert await provider.read_kv_base(iid) == {}
        assert await provider.read_kv_base(uid("unknown")) == {}

    # ------------------------------------------------------------ status versions
    async def test_custom_status_version_counts_commits_that_changed_it(
            self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        rec = await provider.get_instance(iid)
        assert rec is not None and rec.custom_status_version == 0
        c = commit(started(), CustomStatusSet(event_id=2, status='"a"'),
                   CustomStatusSet(event_id=3, status='"b"'), custom_status='"b"')
        c.custom_status_changed = True
        await provider.ack_orchestration_item((await fetch_one(provider)).lock_token, c)
        await turn(provider, iid, commit(custom_status='"b"'))  # not changed
        c = commit(custom_status='"c"', state="COMPLETED", output="1")
        c.custom_status_changed = True
        await turn(provider, iid, c)
        rec = await provider.get_instance(iid)
        assert rec is not None and (rec.custom_status, rec.custom_status_version) == ('"c"', 2)
        [listed] = await provider.list_instances(name=NAME, limit=None,
                                                 created_after=rec.created_at - 1e-3)
        assert listed.custom_status_version == 2

    async def test_updated_channel_names_instances_whose_status_or_kv_changed(
            self, provider: Provider) -> None:
        quiet, status, kv = uid("quiet"), uid("status"), uid("kv")
        for iid in (quiet, status, kv):
            await first_turn(provider, iid)
        rec = self.subscribe(provider, "updated")
        try:
            await turn(provider, quiet, commit())
            c = commit(custom_status='"s"')
            c.custom_status_changed = True
            await turn(provider, status, c)
            c = commit()
            c.kv_delete = ["gone"]
            await turn(provider, kv, c)
            await rec.wait_exact(kv)
            await rec.wait_exact(status)
            await asyncio.sleep(0.05)
            assert quiet not in rec.seen()
        finally:
            rec.unsubscribe()

    # ------------------------------------------------------------ executions
    async def test_get_execution_gives_count_first_and_last(self, provider: Provider) -> None:
        iid = uid()
        await executions(provider, iid, 3)
        ex = await provider.get_execution(iid, 2)
        assert ex is not None and ex.execution_id == 2 and ex.event_count == 2
        assert ex.first is not None and ex.first.kind == "OrchestrationStarted"
        assert ex.last is not None and ex.last.kind == "OrchestrationContinuedAsNew"
        assert ex.last.ts == TS + 2
        assert await provider.get_execution(iid, 9) is None
        assert await provider.get_execution(uid("unknown"), 1) is None

    async def test_prune_keeps_the_current_execution_and_the_newest_past_ones(
            self, provider: Provider) -> None:
        iid = uid()
        await executions(provider, iid, 5)
        assert await provider.list_executions(iid) == [1, 2, 3, 4, 5]
        assert await provider.prune_executions(iid, 3) == (2, 4)
        assert await provider.list_executions(iid) == [3, 4, 5]
        assert await provider.read_history(iid, 1) == []
        assert [e.kind for e in await provider.read_history(iid, 3)] == [
            "OrchestrationStarted", "OrchestrationContinuedAsNew"]
        assert await provider.prune_executions(iid, 3) == (0, 0)
        # 0 and 1 both prune down to the current execution
        assert await provider.prune_executions(iid, 0) == (2, 4)
        assert await provider.list_executions(iid) == [5]
        assert [e.kind for e in await provider.read_history(iid)] == [
            "OrchestrationStarted", "ActivityScheduled"]
        assert await provider.prune_executions(iid, 1) == (0, 0)
        assert await provider.prune_executions(uid("unknown"), 1) is None

    async def test_prune_older_than_spares_executions_that_ended_later(
            self, provider: Provider) -> None:
        iid = uid()
        await executions(provider, iid, 4)  # executions 1..3 ended at TS+1..TS+3
        assert await provider.prune_executions(iid, 1, TS + 3) == (2, 4)
        assert await provider.list_executions(iid) == [3, 4]

    async def test_prune_never_prunes_an_execution_that_has_not_ended(
            self, provider: Provider) -> None:
        iid = uid()
        await executions(provider, iid, 2)
        # execution 2 continues as new: the record still says 2 until 3 starts
        c = commit(continued(3), execution_id=2,
                   messages=[start_message(iid, execution_id=3)])
        await turn(provider, iid, c)
        assert await provider.prune_executions(iid, 0) == (1, 2)
        assert await provider.list_executions(iid) == [2]

    # ------------------------------------------------------------ sizes
    async def test_instance_stats(self, provider: Provider) -> None:
        iid = uid()
        assert await provider.get_instance_stats(iid) is None
        await executions(provider, iid, 2)
        c = commit(kv_set(3, "k", '"é"'), execution_id=2)
        c.kv_set, c.unread = [("k", '"é"', TS), ("n", "12", TS)], 3
        await turn(provider, iid, c)
        await provider.enqueue_orchestrator_message(raised(iid, "later"))
        await provider.enqueue_orchestrator_message(queued(iid))
        await provider.enqueue_orchestrator_message(OrchestratorMessage(
            iid, scheduled(9), 2, None))  # not mail: a message of another kind
        stats = await provider.get_instance_stats(iid)
        assert stats is not None
        current = await provider.read_history(iid)
        from ...history import encode_event

        assert stats.history_event_count == len(current) == 3
        assert stats.history_size_bytes == sum(len(encode_event(e).encode()) for e in current)
        assert (stats.queued_mail, stats.unread) == (2, 3)
        assert (stats.kv_key_count, stats.kv_value_bytes) == (2, len('"é"'.encode()) + 2)
        assert stats.execution_count == 2

    # ------------------------------------------------------------ counted delete
    async def test_delete_instance_tree_counts_what_went(self, provider: Provider) -> None:
        parent, child, other = uid("p"), uid("c"), uid("o")
        await first_turn(provider, other)
        await executions(provider, parent, 2)
        await turn(provider, parent, commit(execution_id=2, messages=[
            start_message(child, "child", parent_instance_id=parent)]))
        c = commit(scheduled(3), execution_id=2, activities=[work(parent, 3, execution_id=2)])
        c.kv_set = [("k", "1", 1)]
        await turn(provider, parent, c)
        await provider.enqueue_orchestrator_message(raised(parent))
        went = await provider.delete_instance_tree(parent)
        # parent: 2 executions, 2 + 2 (+ 1) events, 1 raised message waiting and 1 activity;
        # child: its start message
        assert (went.instances, went.executions, went.events) == (2, 2, 5)
        assert went.queue_messages == 3
        assert await provider.get_instance(child) is None
        assert await provider.read_kv(parent) is None
        assert await provider.get_instance(other) is not None
        nothing = await provider.delete_instance_tree(uid("unknown"))
        assert (nothing.instances, nothing.executions, nothing.events) == (0, 0, 0)

    # ------------------------------------------------------------ listing
    async def test_list_without_limit_returns_every_match(self, provider: Provider) -> None:
        name = uid("name")
        for n in range(130):
            await provider.create_instance(start_message(uid(f"n{n}"), name))
        assert len(await provider.list_instances(name=name, limit=None)) == 130
        assert len(await provider.list_instances(name=name)) == 100  # the old default

    async def test_list_by_creation_time_and_after_a_position(
            self, provider: Provider) -> None:
        name = uid("name")
        for n in range(6):
            await provider.create_instance(start_message(uid(f"t{n}"), name))
        full = await provider.list_instances(name=name, limit=None)
        assert len(full) == 6
        mid = full[2]
        after = await provider.list_instances(name=name, limit=None,
                                              after=(mid.created_at, mid.instance_id))
        assert after == full[3:]
        assert await provider.list_instances(name=name, limit=2, after=(
            mid.created_at, mid.instance_id)) == full[3:5]
        # exclusive bounds on created_at, exact for the times the store gave back
        newer = await provider.list_instances(name=name, limit=None,
                                              created_after=full[1].created_at)
        assert [r.instance_id for r in newer] == [
            r.instance_id for r in full if r.created_at > full[1].created_at]
        older = await provider.list_instances(name=name, limit=None,
                                              created_before=full[4].created_at)
        assert [r.instance_id for r in older] == [
            r.instance_id for r in full if r.created_at < full[4].created_at]
        assert await provider.list_instances(name=name, created_after=full[-1].created_at,
                                             limit=None) == []

    async def test_mail_kinds_are_stored_as_given(self, provider: Provider) -> None:
        iid = uid()
        await create(provider, iid)
        await provider.enqueue_orchestrator_message(queued(iid, "q", '{"m":1}'))
        item = await fetch_one(provider)
        events = [m.message.event for m in item.messages if m.message is not None]
        assert [type(e) for e in events][1:] == [QueueEventDelivered]
        assert events[1] == QueueEventDelivered(ts=TS, name="q", data='{"m":1}')
        assert not isinstance(events[1], EventRaised)

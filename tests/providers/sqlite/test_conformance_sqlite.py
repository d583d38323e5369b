"""The SQLite provider against the provider conformance suite, on a file store and on
a private in-memory store, and side by side with the reference in-memory store."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from duroxy.errors import ProviderError
from duroxy.history import ActivityWork, HistoryEvent, OrchestratorMessage
from duroxy.providers.base import InstanceRecord, OrchestrationItem, Provider
from duroxy.providers.memory import InMemoryProvider
from duroxy.providers.sqlite import SqliteProvider
from duroxy.testing.provider_suite import ProviderConformance
from duroxy.testing.provider_suite.support import (
    HOLD,
    activity_completion,
    commit,
    raised,
    scheduled,
    start_message,
    started,
    work,
)

#: What the corruption hooks store: not JSON, so every decoder rejects it.
GARBAGE = '{"corrupt": '


class _SqliteHooks(ProviderConformance):
    """Undecodable rows written on the store's own write connection (a private in-memory
    store has no other)."""

    async def corrupt_history(self, provider: Provider, instance_id: str) -> None:
        assert isinstance(provider, SqliteProvider)
        await provider._write(lambda tx: tx.conn.execute(
            "UPDATE history SET event_json = ? WHERE instance_id = ?", (GARBAGE, instance_id)))

    async def corrupt_messages(self, provider: Provider, instance_id: str) -> None:
        assert isinstance(provider, SqliteProvider)
        await provider._write(lambda tx: tx.conn.execute(
            "UPDATE orchestrator_queue SET payload = ? WHERE instance_id = ?",
            (GARBAGE, instance_id)))


class TestSqliteFileConformance(_SqliteHooks):
    @pytest.fixture
    async def provider(self, tmp_path: Path) -> AsyncIterator[SqliteProvider]:
        store = SqliteProvider(tmp_path / "store.db")
        yield store
        await store.close()

    async def open_read_only(self, provider: Provider) -> Provider:
        assert isinstance(provider, SqliteProvider) and provider.path is not None
        return SqliteProvider(provider.path, read_only=True)


class TestSqliteSwitchesOffConformance(_SqliteHooks):
    """Every latency switch off: a slower store, never a different one."""

    @pytest.fixture
    async def provider(self, tmp_path: Path) -> AsyncIterator[SqliteProvider]:
        store = SqliteProvider(tmp_path / "store.db", inline_writes=False, inline_reads=False,
                               preallocate_wal=False, warm_up=False)
        yield store
        await store.close()

    async def open_read_only(self, provider: Provider) -> Provider:
        assert isinstance(provider, SqliteProvider) and provider.path is not None
        return SqliteProvider(provider.path, read_only=True, inline_reads=False)


class TestSqliteMemoryConformance(_SqliteHooks):
    @pytest.fixture
    async def provider(self) -> AsyncIterator[SqliteProvider]:
        store = SqliteProvider.in_memory()
        yield store
        await store.close()


# ------------------------------------------------------------------ differential run
# Random sequences of operations, applied in lockstep to the reference in-memory store
# and to a SQLite store: every answer (items, records, histories, errors) must agree.
# Lock tokens differ between stores, so held items are tracked as pairs.


def _rec(rec: InstanceRecord | None) -> Any:
    if rec is None:
        return None
    return (rec.instance_id, rec.name, rec.version, rec.state, rec.execution_id, rec.output,
            rec.error, rec.custom_status, rec.parent_instance_id, rec.history_len)


def _orch_item(item: OrchestrationItem) -> Any:
    return (item.instance_id, item.attempt, _rec(item.instance),
            [(m.message, m.decode_error is None) for m in item.messages])


async def _both(pair: tuple[Provider, Provider], call: Callable[[Provider, int], Any]
                ) -> tuple[Any, Any]:
    """Run ``call`` on both stores; results, or the exception types."""
    out: list[Any] = []
    for side, store in enumerate(pair):
        try:
            out.append(await call(store, side))
        except Exception as e:
            out.append(type(e))
    return out[0], out[1]


async def _differential(seed: int, pair: tuple[Provider, Provider]) -> None:
    rng = random.Random(seed)
    ids: list[str] = []
    orch_held: list[tuple[str, str, OrchestrationItem]] = []  # token per store, item
    act_held: list[tuple[str, str, ActivityWork]] = []
    next_child = 0

    def pick(held: list[Any]) -> Any:
        return held.pop(rng.randrange(len(held)))

    # call(store, side): the lambdas below take their loop values as defaults too, which
    # mypy cannot match against a (Provider, int) signature, hence the open one
    async def same(call: Callable[..., Any], norm: Callable[[Any], Any] = lambda x: x
                   ) -> tuple[Any, Any]:
        a, b = await _both(pair, call)
        na = a if isinstance(a, type) else norm(a)
        nb = b if isinstance(b, type) else norm(b)
        assert na == nb, f"seed {seed}: reference {na!r} != sqlite {nb!r}"
        return a, b

    for _step in range(160):
        op = rng.choice(["create", "create", "event", "fetch", "fetch", "ack", "ack",
                         "abandon", "acts", "act_ack", "act_abandon", "lock", "delete"])
        if op == "create" or not ids:
            iid = rng.choice(ids) if ids and rng.random() < 0.2 else f"d{seed}-{len(ids)}"
            if iid not in ids:
                ids.append(iid)
            await same(lambda s, _i, iid=iid: s.create_instance(start_message(iid)))
        elif op == "event":
            event = raised(rng.choice([*ids, "nobody"]), f"e{_step}")
            await same(lambda s, _i, m=event: s.enqueue_orchestrator_message(m))
        elif op == "fetch":
            n = rng.randint(1, 3)
            a, b = await same(lambda s, _i, n=n: s.fetch_orchestration_items(HOLD, n),
                              lambda items: [_orch_item(i) for i in items])
            orch_held += [(x.lock_token, y.lock_token, x) for x, y in zip(a, b, strict=True)]
        elif op == "lock" and ids:
            iid = rng.choice(ids)
            a, b = await same(lambda s, _i, iid=iid: s.lock_instance(iid, HOLD),
                              lambda item: item and _orch_item(item))
            if a is not None and not isinstance(a, type):
                orch_held.append((a.lock_token, b.lock_token, a))
        elif op == "ack" and orch_held:
            ta, tb, item = pick(orch_held)
            rec = item.instance
            base = rec.history_len if rec is not None else 0
            hist: list[HistoryEvent] = [started(event_id=base + 1)] if base == 0 else []
            hist += [scheduled(base + len(hist) + 1, input=f'"{_step}"')]
            if rng.random() < 0.1:
                hist.append(scheduled(base + 1))  # a repeated event id: ProviderError
            works = [work(item.instance_id, hist[-1].event_id, input=f'"{_step}"')]
            msgs: list[OrchestratorMessage] = []
            if rng.random() < 0.3:
                next_child += 1
                child = f"d{seed}-child-{next_child}"
                ids.append(child)
                msgs.append(start_message(child, parent_instance_id=item.instance_id))
            if rng.random() < 0.2:
                msgs.append(raised(rng.choice(ids), "note"))
            acked = [pick(act_held) for _ in range(1 if act_held and rng.random() < 0.2 else 0)]
            acked_tokens = [(a, b) for a, b, _w in acked]
            cancels = [(w.instance_id, w.execution_id, w.event_id)
                       for _x, _y, w in act_held[:1] if rng.random() < 0.2]
            state = rng.choice(["RUNNING", "RUNNING", "COMPLETED", "FAILED"])

            def turn(s: Provider, side: int, token: tuple[str, str] = (ta, tb),
                     hist: list[HistoryEvent] = hist, works: list[ActivityWork] = works,
                     msgs: list[OrchestratorMessage] = msgs, state: str = state,
                     acked_tokens: list[tuple[str, str]] = acked_tokens,
                     cancels: list[tuple[str, int, int]] = cancels) -> Any:
                c = commit(*hist, state=state, activities=works, messages=msgs,
                           cancel_activities=cancels, output='"x"' if state != "RUNNING"
                           else None)
                c.acked_activities = [t[side] for t in acked_tokens]
                return s.ack_orchestration_item(token[side], c)

            a, _ = await same(turn)
            if a is ProviderError:  # the lock is still held: release it
                await same(lambda s, i, t=(ta, tb): s.abandon_orchestration_item(t[i]))
        elif op == "abandon" and orch_held:
            ta, tb, _item = pick(orch_held)
            await same(lambda s, i, t=(ta, tb): s.abandon_orchestration_item(t[i]))
        elif op == "acts":
            n = rng.randint(1, 3)
            a, b = await same(lambda s, _i, n=n: s.fetch_activity_items(HOLD, n),
                              lambda items: [(i.work, i.attempt) for i in items])
            act_held += [(x.lock_token, y.lock_token, x.work) for x, y in zip(a, b, strict=True)]
        elif op == "act_ack" and act_held:
            ta, tb, w = pick(act_held)
            await same(lambda s, i, t=(ta, tb), w=w: s.ack_activity(
                t[i], activity_completion(w)))
        elif op == "act_abandon" and act_held:
            ta, tb, _w = pick(act_held)
            await same(lambda s, i, t=(ta, tb): s.abandon_activity(t[i]))
        elif op == "delete" and ids and rng.random() < 0.3:
            doomed, cascade = rng.choice(ids), rng.random() < 0.5
            await same(lambda s, _i, iid=doomed, c=cascade: s.delete_instance(iid, cascade=c))
        if _step % 20 == 19 or _step == 159:
            for iid in ids:
                await same(lambda s, _i, iid=iid: s.get_instance(iid), _rec)
                await same(lambda s, _i, iid=iid: s.read_history(iid))
                await same(lambda s, _i, iid=iid: s.list_executions(iid))
            await same(lambda s, _i: s.list_instances(limit=1000),
                       lambda recs: sorted(map(_rec, recs), key=repr))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("where", ["file", "memory"])
async def test_sqlite_answers_like_the_reference_store(seed: int, where: str,
                                                      tmp_path: Path) -> None:
    reference = InMemoryProvider()
    store = SqliteProvider(tmp_path / "diff.db") if where == "file" else SqliteProvider.in_memory()
    try:
        await _differential(seed, (reference, store))
    finally:
        await reference.close()
        await store.close()

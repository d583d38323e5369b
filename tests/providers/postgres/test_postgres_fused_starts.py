"""Starts committed with their first turn on PostgreSQL (``_starts.py``): a start handed
to a parked poll is written by its turn's ack, in one transaction; whatever else becomes
of the item, the start is committed alone, and its client hears only after a commit.

Needs a server: set ``DUROXY_TEST_PG_DSN``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from duroxy import ActivityRegistry, Client, OrchestrationRegistry, Runtime
from duroxy.errors import InstanceAlreadyExists, LockLost, PayloadError, ProviderError
from duroxy.history import ActivityScheduled
from duroxy.testing.provider_suite.support import (
    HOLD,
    commit,
    create,
    fetch_one,
    first_turn,
    raised,
    scheduled,
    started,
    uid,
    work,
)
from pgkit import counting_fetches, parked

pytestmark = pytest.mark.postgres

if os.environ.get("DUROXY_TEST_PG_DSN"):
    import psycopg

    from duroxy.providers.postgres import PostgresProvider
    from duroxy.providers.postgres._errors import OutcomeUnknown
    from duroxy.providers.postgres._starts import FUSE_WAIT_S


@pytest.fixture(autouse=True)
def patient_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A start waits long for its turn here, so that a slow machine never commits one
    alone where a test acks it; the tests of the lone commit shorten the wait."""
    monkeypatch.setattr("duroxy.providers.postgres._starts.FUSE_WAIT_S", 30.0)


def statements(p: PostgresProvider) -> list[str]:
    """The statements ``p`` runs from now on, by name; a pair run in one transaction
    as ``first+then``."""
    ran: list[str] = []
    rows, in_one = p._rows, p._rows_in_one

    async def one(name: Any, params: dict[str, Any]) -> list[Any]:
        ran.append(getattr(name, "name", name))
        return await rows(name, params)

    async def two(first: Any, first_params: dict[str, Any], then: Any,
                  then_params: dict[str, Any]) -> Any:
        ran.append(f"{first.name}+{then.name}")
        return await in_one(first, first_params, then, then_params)

    p._rows = one  # type: ignore[method-assign]
    p._rows_in_one = two  # type: ignore[method-assign]
    return ran


async def state_of(p: PostgresProvider, iid: str) -> tuple[str, int]:
    """The state and history length of ``iid``'s record, which must exist."""
    rec = await p.get_instance(iid)
    assert rec is not None, f"{iid} has no record"
    return rec.state, rec.history_len


async def handed_over(p: PostgresProvider, iid: str) -> tuple[Any, asyncio.Future[Any]]:
    """Start ``iid`` while a poll of ``p`` is parked: the item that poll got, and the
    start, still waiting for its commit."""
    poll = await parked(p)
    creating = asyncio.ensure_future(create(p, iid))
    (item,) = await asyncio.wait_for(poll, 5)
    assert item.instance_id == iid and item.attempt == 1
    assert item.instance is not None and item.instance.state == "PENDING"
    return item, creating


async def test_a_start_handed_to_a_parked_poll_commits_with_its_first_turn(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    other = providers(p.schema)
    iid = uid()
    fetches = counting_fetches(p)
    item, creating = await handed_over(p, iid)
    ran = statements(p)
    assert fetches == [1, 5]  # parked()'s own and the poll's first: handed over, not fetched
    # Nothing is written yet: no other node sees the instance, and the start waits.
    assert await other.get_instance(iid) is None
    assert not creating.done()
    claimed = await p.ack_orchestration_item(item.lock_token, commit(
        started(), scheduled(2), activities=[work(iid)]))
    assert ran == ["create_instance_leased+ack_turn"]  # one round trip, one commit
    assert claimed == []  # (this commit claims none)
    await asyncio.wait_for(creating, 5)
    assert await state_of(other, iid) == ("RUNNING", 2)
    assert await other.fetch_orchestration_items(HOLD) == []  # the start was consumed
    (act,) = await other.fetch_activity_items(HOLD)
    assert act.work == work(iid)


async def test_the_start_returns_only_after_the_commit_that_holds_it(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    other = providers(p.schema)
    iid = uid()
    item, creating = await handed_over(p, iid)
    seen_when_started: list[Any] = []

    async def client() -> None:
        await creating
        seen_when_started.append(await other.get_instance(iid))

    watcher = asyncio.ensure_future(client())
    await asyncio.sleep(0.01)
    assert not watcher.done()
    await p.ack_orchestration_item(item.lock_token, commit(started()))
    await asyncio.wait_for(watcher, 5)
    (rec,) = seen_when_started
    assert rec is not None and rec.state == "RUNNING" and rec.history_len == 1


async def test_a_start_whose_turn_does_not_come_is_committed_alone_and_stays_leased(
        providers: Callable[..., PostgresProvider], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("duroxy.providers.postgres._starts.FUSE_WAIT_S", FUSE_WAIT_S)
    p = providers()
    other = providers(p.schema)
    iid = uid()
    item, creating = await handed_over(p, iid)
    ran = statements(p)
    await asyncio.wait_for(creating, 5)
    assert ran == ["create_instance_leased"]
    rec = await other.get_instance(iid)
    assert rec is not None and rec.state == "PENDING"
    assert await other.fetch_orchestration_items(HOLD) == []  # leased to the item
    # The late ack is an ordinary one under the same lease.
    await p.ack_orchestration_item(item.lock_token, commit(started()))
    assert ran == ["create_instance_leased", "ack_turn"]
    assert await state_of(other, iid) == ("RUNNING", 1)


async def test_an_ack_racing_the_lone_commit_waits_for_it_and_then_commits_its_turn(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    iid = uid()
    item, creating = await handed_over(p, iid)
    ran = statements(p)
    alone = p._start_alone(item.lock_token)  # what FUSE_WAIT_S would do
    assert alone is not None and not alone.done()
    await p.ack_orchestration_item(item.lock_token, commit(started()))
    assert alone.done() and alone.result() is True
    assert ran == ["create_instance_leased", "ack_turn"]
    await creating
    assert await state_of(p, iid) == ("RUNNING", 1)


async def test_a_start_of_an_id_taken_on_another_node_raises_and_its_turn_writes_nothing(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    other = providers(p.schema)
    iid = uid()
    await first_turn(other, iid, scheduled(2))  # p has never seen it
    await other.fetch_activity_items(HOLD)  # (leased there: not fetchable below)
    item, creating = await handed_over(p, iid)
    with pytest.raises(LockLost, match="exists already"):
        await p.ack_orchestration_item(item.lock_token, commit(
            started(), scheduled(2, name="other"), activities=[work(iid, name="other")]))
    with pytest.raises(InstanceAlreadyExists):
        await asyncio.wait_for(creating, 5)
    rec = await p.get_instance(iid)
    assert rec is not None and rec.history_len == 2
    history = await p.read_history(iid)
    assert isinstance(history[1], ActivityScheduled) and history[1].name == "act"
    assert await p.fetch_activity_items(HOLD) == []  # no "other" work was added


async def test_a_start_of_an_id_known_here_is_not_handed_over(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    iid = uid()
    await first_turn(p, iid)  # fetched and committed here
    poll = await parked(p, wait=0.3)
    ran = statements(p)
    with pytest.raises(InstanceAlreadyExists):
        await create(p, iid)
    assert ran == ["create_instance"]  # refused at once, no turn run for it
    assert await asyncio.wait_for(poll, 5) == []


async def test_a_start_whose_lock_row_another_node_holds_is_committed_and_announced(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    other = providers(p.schema)
    target = uid("target")
    # A message to an id without a record gives it a lock row; the other node leases it.
    await first_turn(other, uid(), messages=[raised(target)])
    held = await fetch_one(other)
    assert held.instance_id == target and held.instance is None
    item, creating = await handed_over(p, target)
    with pytest.raises(LockLost):
        await p.ack_orchestration_item(item.lock_token, commit(started()))
    await asyncio.wait_for(creating, 5)  # the start itself stands
    await other.abandon_orchestration_item(held.lock_token)
    again = await fetch_one(p)
    assert again.instance_id == target
    assert again.instance is not None and again.instance.state == "PENDING"
    assert again.instance.history_len == 0  # the refused turn wrote nothing


async def test_a_turn_the_server_refuses_leaves_the_start_committed_alone(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    iid = uid()
    item, creating = await handed_over(p, iid)
    # Two events with one id violate the history's key: the transaction commits nothing.
    with pytest.raises(ProviderError, match="duplicate key"):
        await p.ack_orchestration_item(item.lock_token, commit(
            started(), scheduled(2), scheduled(2)))
    await asyncio.wait_for(creating, 5)  # the start itself stands
    assert await state_of(p, iid) == ("PENDING", 0)
    # It is leased to the item, whose abandon offers it again.
    assert await p.fetch_orchestration_items(HOLD) == []
    await p.abandon_orchestration_item(item.lock_token)
    again = await fetch_one(p)
    assert again.instance_id == iid and again.attempt == 2


async def test_a_turn_that_does_not_encode_leaves_the_start_committed_alone(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    iid = uid()
    item, creating = await handed_over(p, iid)
    ran = statements(p)
    odd: Any = object()  # no JSON form: refused before anything is sent
    with pytest.raises(PayloadError):
        await p.ack_orchestration_item(item.lock_token, commit(started(), scheduled(2, input=odd)))
    assert ran == ["create_instance_leased"]
    await asyncio.wait_for(creating, 5)
    assert await state_of(p, iid) == ("PENDING", 0)


async def test_a_connection_lost_in_the_fused_commit_fails_the_start_and_the_ack(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    iid = uid()
    item, creating = await handed_over(p, iid)

    async def cut(*_args: Any) -> Any:
        # what _rows_in_one raises when the connection drops: the outcome is unknown
        raise OutcomeUnknown("PostgreSQL store: OperationalError: connection lost",
                             retryable=True) from psycopg.OperationalError("connection lost")

    p._rows_in_one = cut  # type: ignore[method-assign,assignment]
    with pytest.raises(ProviderError, match="connection lost"):
        await p.ack_orchestration_item(item.lock_token, commit(started()))
    with pytest.raises(ProviderError, match="connection lost") as caught:
        await asyncio.wait_for(creating, 5)
    assert caught.value.retryable
    assert await p.get_instance(iid) is None  # (nothing was sent here)


async def test_a_session_killed_in_the_fused_commit_fails_both_and_a_retry_starts_it(
        dsn: str, providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    iid = uid()
    item, creating = await handed_over(p, iid)
    async with await psycopg.AsyncConnection.connect(dsn) as locker:
        # Hold the instances table, so that the fused transaction waits inside it.
        await locker.execute(f'LOCK TABLE "{p.schema}".instances IN EXCLUSIVE MODE'.encode())
        ack = asyncio.ensure_future(p.ack_orchestration_item(item.lock_token, commit(
            started(), scheduled(2), activities=[work(iid)])))
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
            for _ in range(500):
                # The pair's first statement, waiting for this test's table. (Not any
                # statement waiting: another test may share the database, and a pool
                # connection warming up runs the hot statements, which wait too.)
                cur = await admin.execute(
                    "SELECT a.pid FROM pg_stat_activity AS a WHERE a.pid IN ("
                    " SELECT l.pid FROM pg_locks AS l WHERE NOT l.granted"
                    " AND l.relation = %s::regclass)"
                    " AND a.query LIKE '%%INSERT INTO instances%%'",
                    (f'"{p.schema}".instances',))
                waiting = await cur.fetchall()
                if waiting:
                    break
                await asyncio.sleep(0.01)
            assert len(waiting) == 1
            await admin.execute("SELECT pg_terminate_backend(%s)", (waiting[0][0],))
        await locker.rollback()
    with pytest.raises(OutcomeUnknown) as acked:
        await asyncio.wait_for(ack, 10)
    with pytest.raises(OutcomeUnknown) as started_:
        await asyncio.wait_for(creating, 10)
    assert acked.value.retryable and started_.value.retryable
    # The session died before its COMMIT: nothing was written, so the retry starts it.
    assert await p.get_instance(iid) is None
    assert await p.fetch_activity_items(HOLD) == []
    await create(p, iid)
    assert await state_of(p, iid) == ("PENDING", 0)


async def test_an_abandoned_item_commits_its_start_first(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    iid = uid()
    item, creating = await handed_over(p, iid)
    ran = statements(p)
    await p.abandon_orchestration_item(item.lock_token)
    assert ran[0] == "create_instance_leased"
    await asyncio.wait_for(creating, 5)
    again = await fetch_one(p)
    assert again.instance_id == iid and again.attempt == 2


async def test_a_renewed_item_commits_its_start_first_and_keeps_its_lease(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    other = providers(p.schema)
    iid = uid()
    item, creating = await handed_over(p, iid)
    await p.renew_orchestration_lock(item.lock_token, HOLD)
    await asyncio.wait_for(creating, 1)
    assert await other.fetch_orchestration_items(HOLD) == []
    await p.ack_orchestration_item(item.lock_token, commit(started()))
    rec = await other.get_instance(iid)
    assert rec is not None and rec.history_len == 1


async def test_close_commits_a_start_whose_turn_never_came(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    iid = uid()
    _item, creating = await handed_over(p, iid)
    await p.close()
    await asyncio.wait_for(creating, 5)
    other = providers(p.schema)
    rec = await other.get_instance(iid)
    assert rec is not None and rec.state == "PENDING"


async def test_a_cancelled_ack_still_answers_its_start(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    iid = uid()
    item, creating = await handed_over(p, iid)
    ack = asyncio.ensure_future(p.ack_orchestration_item(item.lock_token, commit(started())))
    await asyncio.sleep(0)  # the transaction is under way
    ack.cancel()
    with pytest.raises(asyncio.CancelledError):
        await ack
    await asyncio.wait_for(creating, 5)
    assert await state_of(p, iid) == ("RUNNING", 1)


async def test_a_runtime_starts_no_activity_before_the_start_and_turn_commit(
        providers: Callable[..., PostgresProvider]) -> None:
    """End to end: each start through the runtime's provider is fused with its first
    turn, and its activity begins only after that transaction's COMMIT returned."""
    p = providers()
    commits: dict[str, float] = {}  # instance -> when its start-and-turn COMMIT returned
    in_one = p._rows_in_one

    async def timed(first: Any, first_params: dict[str, Any], *rest: Any) -> Any:
        out = await in_one(first, first_params, *rest)
        commits[first_params["instance_id"]] = time.perf_counter()
        return out

    p._rows_in_one = timed  # type: ignore[method-assign,assignment]
    began: dict[str, float] = {}  # instance -> when its first activity began

    async def act(ctx: Any, x: int) -> int:
        began.setdefault(ctx.instance_id, time.perf_counter())
        return x + 1

    async def flow(ctx: Any, x: int) -> int:
        y = await ctx.schedule_activity("Act", x)
        await ctx.schedule_timer(timedelta(milliseconds=1))
        return int(await ctx.schedule_activity("Act", y))

    rt = await Runtime.start(p, ActivityRegistry.builder().register("Act", act).build(),
                             OrchestrationRegistry.builder().register("Flow", flow).build())
    try:
        client = Client(p)
        for i in range(5):
            await client.start_orchestration(f"f-{i}", "Flow", i)
            status = await client.wait_for_orchestration(f"f-{i}", timeout=20)
            assert status.output == i + 2
    finally:
        await rt.shutdown(timeout=5)
    # A start made while the runtime's poll was not parked (the first, most often)
    # commits alone; the others are fused, and no activity began before its commit.
    assert commits and set(commits) <= set(began)
    assert all(began[iid] > at for iid, at in commits.items())

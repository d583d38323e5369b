"""End to end: runtime + client on the in-memory and SQLite stores."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from duroxy import (
    ActivityContext,
    ActivityFailed,
    ActivityRegistry,
    BackoffStrategy,
    Client,
    InstanceAlreadyExists,
    InstanceNotFound,
    OrchestrationContext,
    OrchestrationRegistry,
    OrchestrationState,
    ProviderError,
    RetryPolicy,
    Runtime,
    RuntimeOptions,
    SubOrchestrationFailed,
)
from duroxy.providers.base import Provider
from duroxy.providers.memory import InMemoryProvider
from duroxy.providers.sqlite import SqliteProvider

FAST = RuntimeOptions(not_registered_backoff=0.05, max_attempts=3)


@dataclass
class Order:
    sku: str
    qty: int


@dataclass
class Receipt:
    sku: str
    total: float


calls: dict[str, int] = {}


def count(name: str) -> None:
    calls[name] = calls.get(name, 0) + 1


async def price(ctx: ActivityContext, order: Order) -> Receipt:
    count("price")
    assert isinstance(order, Order)
    return Receipt(order.sku, order.qty * 2.5)


def sync_double(ctx: ActivityContext, x: int) -> int:
    count("sync_double")
    assert threading.current_thread() is not threading.main_thread()
    return x * 2


async def echo(ctx: ActivityContext, x: Any) -> Any:
    return x


async def boom(ctx: ActivityContext, x: Any) -> Any:
    raise ValueError(f"bad input {x}")


flaky_state = {"n": 0}


async def flaky(ctx: ActivityContext, x: int) -> list[int]:
    flaky_state["n"] += 1
    if ctx.attempt < 3:
        raise ConnectionError(f"attempt {ctx.attempt}")
    return [x, ctx.attempt]


async def slow(ctx: ActivityContext, seconds: float) -> str:
    try:
        await asyncio.wait_for(ctx.cancelled(), seconds)
        return "cancelled"
    except TimeoutError:
        return "finished"


async def order_flow(ctx: OrchestrationContext, order: Order) -> Receipt:
    receipt = await ctx.schedule_activity(price, order)
    assert isinstance(receipt, Receipt)
    return receipt


async def sync_flow(ctx: OrchestrationContext, x: int) -> int:
    return int(await ctx.schedule_activity("sync_double", x))


async def fail_flow(ctx: OrchestrationContext, x: Any) -> Any:
    return await ctx.schedule_activity("boom", x)


async def catch_flow(ctx: OrchestrationContext, x: Any) -> Any:
    try:
        await ctx.schedule_activity("boom", x)
    except ActivityFailed as e:
        return {"type": e.error_type, "msg": e.message, "attempts": e.attempts}
    return None


async def retry_flow(ctx: OrchestrationContext, x: int) -> Any:
    policy = RetryPolicy(3).with_backoff(BackoffStrategy.Fixed(delay=0.01))
    return await ctx.schedule_activity_with_retry("flaky", x, policy)


async def child(ctx: OrchestrationContext, x: int) -> int:
    if x < 0:
        raise RuntimeError("negative")
    return int(await ctx.schedule_activity("echo", x)) * 10


async def parent(ctx: OrchestrationContext, xs: list[int]) -> Any:
    results = await ctx.join([ctx.schedule_sub_orchestration("child", x) for x in xs])
    try:
        await ctx.schedule_sub_orchestration("child", -1)
    except SubOrchestrationFailed as e:
        results.append(e.message)
    return results


async def reuses_child_id(ctx: OrchestrationContext, child_id: str) -> Any:
    try:
        return await ctx.schedule_sub_orchestration("waiter", None, instance_id=child_id)
    except SubOrchestrationFailed as e:
        return [e.error_type, e.instance_id, e.message]


async def child_per_round(ctx: OrchestrationContext, n: int) -> Any:
    got = await ctx.schedule_sub_orchestration("child", n)  # default child id
    if n < 2:
        ctx.continue_as_new(n + 1)
    return [got, ctx.execution_id]


class _BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


class _UserBase(BaseException):
    pass


async def misbehaving(ctx: Any, how: str) -> Any:
    if how == "surrogate":
        raise OSError("cannot open " + b"caf\xe9".decode("utf-8", "surrogateescape"))
    if how == "bad str":
        raise _BadStr()
    if how == "exit":
        raise SystemExit(3)
    if how == "base":
        raise _UserBase("custom base")
    return how


def misbehaving_sync(ctx: Any, how: str) -> Any:
    if how == "exit":
        raise SystemExit(4)
    return how


async def raises_oddly(ctx: OrchestrationContext, how: str) -> Any:
    if how.startswith("activity:"):
        what = how.split(":", 1)[1]
        name = "misbehaving_sync" if what.endswith(" sync") else "misbehaving"
        try:
            await ctx.schedule_activity(name, what.removesuffix(" sync"))
        except ActivityFailed as e:
            return [e.error_type, e.message]
        return "no failure"
    await misbehaving(ctx, how)
    return "no failure"


async def waiter(ctx: OrchestrationContext, _: Any) -> Any:
    ctx.set_custom_status("waiting")
    idx, value = await ctx.select2(ctx.schedule_wait("approve"), ctx.schedule_timer(30))
    return {"idx": idx, "value": value}


async def looper(ctx: OrchestrationContext, n: int) -> Any:
    ctx.set_custom_status({"n": n, "prev": ctx.get_custom_status()})
    if n < 3:
        await ctx.schedule_timer(0.01)
        ctx.continue_as_new(n + 1)
    return [n, ctx.execution_id]


async def event_counter(ctx: OrchestrationContext, n: int) -> Any:
    got = await ctx.schedule_wait("inc")
    await ctx.schedule_activity("echo", got)
    if n + 1 < 3:
        ctx.continue_as_new(n + 1)
    return [n + 1, got, ctx.execution_id]


async def racer(ctx: OrchestrationContext, _: Any) -> Any:
    idx, _v = await ctx.select2(ctx.schedule_activity("slow", 30), ctx.schedule_timer(0.05))
    return idx


async def cancellable(ctx: OrchestrationContext, _: Any) -> Any:
    try:
        await ctx.schedule_wait("never")
    except asyncio.CancelledError:
        await ctx.schedule_activity("echo", "compensated")
        raise


async def detacher(ctx: OrchestrationContext, _: Any) -> str:
    ctx.schedule_orchestration("child", "detached-1", 7)
    return "parent done"


async def echo_step(ctx: OrchestrationContext, x: int) -> Any:
    return await ctx.schedule_activity("echo", x)


async def plain_asyncio(ctx: OrchestrationContext, x: int) -> Any:
    ctx.trace_info(f"plain asyncio for {x}")
    now = await ctx.utcnow()
    both = await asyncio.gather(ctx.schedule_activity("echo", x), asyncio.sleep(0.01))
    try:
        await asyncio.wait_for(ctx.schedule_wait("never"), timeout=0.02)
        timed_out = False
    except TimeoutError:
        timed_out = True
    async with asyncio.TaskGroup() as tg:
        t = tg.create_task(echo_step(ctx, x + 1))  # create_task takes coroutines
    done, _ = await asyncio.wait([asyncio.ensure_future(ctx.schedule_activity("echo", x + 2))],
                                 return_when=asyncio.FIRST_COMPLETED)
    return [both[0], timed_out, t.result(), [f.result() for f in done],
            now.tzinfo is not None, len(await ctx.new_guid())]


def registries() -> tuple[ActivityRegistry, OrchestrationRegistry]:
    acts = (ActivityRegistry.builder().register("price", price)
            .register("sync_double", sync_double).register("echo", echo)
            .register("boom", boom).register("flaky", flaky).register("slow", slow)
            .register("misbehaving", misbehaving).register("misbehaving_sync", misbehaving_sync)
            .build())
    orchs = OrchestrationRegistry.builder()
    for fn in (order_flow, sync_flow, fail_flow, catch_flow, retry_flow, child, parent, waiter,
               looper, event_counter, reuses_child_id, child_per_round, raises_oddly, racer,
               cancellable, detacher, plain_asyncio):
        orchs.register(fn.__name__, fn)
    return acts, orchs.build()


PG_DSN = os.environ.get("DUROXY_TEST_PG_DSN")


def _postgres(_p: Path) -> Provider:
    if not PG_DSN:
        pytest.skip("DUROXY_TEST_PG_DSN not set: PostgreSQL tests need a server")
    from duroxy.providers.postgres import PostgresProvider

    return PostgresProvider(PG_DSN, schema=f"e2e_{uuid.uuid4().hex[:12]}")


STORES: dict[str, Callable[[Path], Provider]] = {
    "memory": lambda _p: InMemoryProvider(),
    "sqlite": lambda p: SqliteProvider(p / "e2e.db"),
    "postgres": _postgres,
}


@pytest.fixture(params=sorted(STORES))
async def env(request: pytest.FixtureRequest,
              tmp_path: Path) -> AsyncIterator[tuple[Runtime, Client]]:
    store = STORES[request.param](tmp_path)
    acts, orchs = registries()
    rt = await Runtime.start(store, acts, orchs, FAST)
    try:
        yield rt, Client(store)
    finally:
        await rt.shutdown(timeout=2)
        await store.close()
        schema = getattr(store, "schema", None)
        if PG_DSN and isinstance(schema, str):
            import psycopg
            from psycopg import sql

            async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as c:
                await c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(schema)))


async def run(client: Client, iid: str, name: str, inp: Any = None, timeout: float = 10) -> Any:
    await client.start_orchestration(iid, name, inp)
    return await client.wait_for_orchestration(iid, timeout)


async def test_typed_activity_round_trip(env: tuple[Runtime, Client]) -> None:
    _, client = env
    st = await run(client, "o1", "order_flow", Order("abc", 4))
    assert st.state is OrchestrationState.COMPLETED
    assert st.output == {"sku": "abc", "total": 10.0}


async def test_sync_activity_runs_in_thread(env: tuple[Runtime, Client]) -> None:
    _, client = env
    st = await run(client, "s1", "sync_flow", 21)
    assert (st.state, st.output) == (OrchestrationState.COMPLETED, 42)


async def test_failures(env: tuple[Runtime, Client]) -> None:
    _, client = env
    st = await run(client, "f1", "fail_flow", 3)
    assert st.state is OrchestrationState.FAILED
    assert st.error is not None and st.error.kind == "application"
    assert st.error.error_type == "ActivityFailed" and "bad input 3" in str(st.error)
    st = await run(client, "f2", "catch_flow", 4)
    assert st.output == {"type": "ValueError", "msg": "bad input 4", "attempts": 1}


async def test_retry_attempts_visible_to_activity(env: tuple[Runtime, Client]) -> None:
    _, client = env
    flaky_state["n"] = 0
    st = await run(client, "r1", "retry_flow", 5)
    assert st.output == [5, 3]
    assert flaky_state["n"] == 3


async def test_sub_orchestrations_and_failure(env: tuple[Runtime, Client]) -> None:
    _, client = env
    st = await run(client, "p1", "parent", [1, 2])
    assert st.output == [10, 20, "negative"]
    info = await client.get_instance_info("p1::sub::2")
    assert info.parent_instance_id == "p1" and info.state is OrchestrationState.COMPLETED


async def test_external_event_and_custom_status(env: tuple[Runtime, Client]) -> None:
    _, client = env
    await client.start_orchestration("w1", "waiter")
    for _ in range(200):
        st = await client.get_orchestration_status("w1")
        if st.custom_status == "waiting":
            break
        await asyncio.sleep(0.01)
    assert st.state is OrchestrationState.RUNNING
    await client.raise_event("w1", "approve", {"ok": True})
    st = await client.wait_for_orchestration("w1", 5)
    assert st.output == {"idx": 0, "value": {"ok": True}}
    assert st.custom_status == "waiting"


async def test_event_raised_before_start_is_kept(env: tuple[Runtime, Client]) -> None:
    _rt, client = env
    await client.start_orchestration("w2", "waiter")
    await client.raise_event("w2", "approve", 1)
    st = await client.wait_for_orchestration("w2", 5)
    assert st.output == {"idx": 0, "value": 1}


async def test_continue_as_new(env: tuple[Runtime, Client]) -> None:
    _, client = env
    st = await run(client, "c1", "looper", 0)
    assert st.output == [3, 4]
    info = await client.get_instance_info("c1")
    assert info.execution_id == 4
    assert st.custom_status["prev"]["n"] == 2
    hist = await client.read_history("c1")
    assert hist[0].kind == "OrchestrationStarted" and hist[-1].kind == "OrchestrationCompleted"
    first = await client.read_history("c1", execution_id=1)
    assert first[-1].kind == "OrchestrationContinuedAsNew"


async def test_events_raised_early_survive_continue_as_new(env: tuple[Runtime, Client]) -> None:
    _, client = env
    await client.start_orchestration("ec1", "event_counter", 0)
    for i in range(3):  # at once: the first execution receives all three, waits for one
        await client.raise_event("ec1", "inc", i)
    st = await client.wait_for_orchestration("ec1", 10)
    assert st.output == [3, 2, 3]
    for execution_id, value in ((1, 0), (2, 1), (3, 2)):
        hist = await client.read_history("ec1", execution_id=execution_id)
        completed = [e for e in hist if e.kind == "ActivityCompleted"]
        assert [e.result for e in completed] == [str(value)]  # type: ignore[attr-defined]


@pytest.mark.parametrize("child_state", ["finished", "running"])
async def test_a_child_id_taken_by_an_instance_that_ran_fails_the_child(
        env: tuple[Runtime, Client], child_state: str) -> None:
    _, client = env
    await client.start_orchestration("taken", "waiter")
    if child_state == "finished":
        await client.raise_event("taken", "approve", 1)
        await client.wait_for_orchestration("taken", 10)
    else:
        for _ in range(200):  # until its first turn ran: a running instance
            if (await client.get_orchestration_status("taken")).custom_status == "waiting":
                break
            await asyncio.sleep(0.01)
    st = await run(client, "reuser", "reuses_child_id", "taken")
    assert st.output == ["InstanceAlreadyExists", "taken", "instance 'taken' already exists"]
    if child_state == "running":  # the instance that had the id is untouched
        await client.raise_event("taken", "approve", 2)
    taken = await client.wait_for_orchestration("taken", 10)
    assert taken.output == {"idx": 0, "value": 1 if child_state == "finished" else 2}
    assert (await client.get_instance_info("taken")).parent_instance_id is None


async def test_default_child_ids_differ_across_continue_as_new(
        env: tuple[Runtime, Client]) -> None:
    _, client = env
    st = await run(client, "rounds", "child_per_round", 0)
    assert st.output == [20, 3]
    children = await client.list_instances(parent_instance_id="rounds")
    assert sorted(c.instance_id for c in children) == [
        "rounds::sub::2", "rounds::sub::2.2", "rounds::sub::3.2"]
    assert all(c.state is OrchestrationState.COMPLETED for c in children)


# SystemExit raised on the event loop's thread stops the worker, as a signal handler's
# sys.exit() must; only a plain def activity's, on a worker thread, fails the activity.
@pytest.mark.parametrize(("how", "expected"), [
    ("activity:surrogate", ["OSError", "cannot open caf\udce9"]),
    ("activity:bad str", ["_BadStr", "<_BadStr: str() failed with RuntimeError>"]),
    ("activity:exit sync", ["SystemExit", "4"]),
    ("activity:base", ["_UserBase", "custom base"]),
])
async def test_odd_activity_failures_are_recorded_as_failures(
        env: tuple[Runtime, Client], how: str, expected: list[str]) -> None:
    _, client = env
    st = await run(client, "odd", "raises_oddly", how)
    assert st.state is OrchestrationState.COMPLETED, st.error
    assert st.output == expected


@pytest.mark.parametrize(("how", "error_type", "message"), [
    ("surrogate", "OSError", "cannot open caf\udce9"),
    ("bad str", "_BadStr", "<_BadStr: str() failed with RuntimeError>"),
])
async def test_odd_orchestration_failures_fail_the_instance_not_the_worker(
        env: tuple[Runtime, Client], how: str, error_type: str, message: str) -> None:
    _, client = env
    st = await run(client, "odd", "raises_oddly", how)
    assert st.state is OrchestrationState.FAILED
    assert st.error is not None and st.error.kind == "application"
    assert (st.error.error_type, st.error.message) == (error_type, message)
    again = await run(client, "after", "raises_oddly", "fine")  # the worker still runs
    assert again.output == "no failure"


async def test_force_deleting_a_running_child_fails_it_for_its_parent(
        env: tuple[Runtime, Client]) -> None:
    _, client = env
    await client.start_orchestration("kid-parent", "reuses_child_id", "kid")
    for _ in range(500):  # until the child's first turn ran
        with contextlib.suppress(InstanceNotFound):
            if (await client.get_orchestration_status("kid")).custom_status == "waiting":
                break
        await asyncio.sleep(0.01)
    assert await client.delete_instance("kid", force=True) == 1
    st = await client.wait_for_orchestration("kid-parent", 10)
    assert st.output == ["Deleted", "kid", "child instance 'kid' was deleted while it ran"]


async def test_select_loser_activity_is_told_to_stop(env: tuple[Runtime, Client]) -> None:
    _, client = env
    st = await run(client, "x1", "racer")
    assert st.output == 1


async def test_cancel_instance_runs_compensation(env: tuple[Runtime, Client]) -> None:
    _, client = env
    await client.start_orchestration("k1", "cancellable")
    await asyncio.sleep(0.05)
    await client.cancel_instance("k1", "operator")
    st = await client.wait_for_orchestration("k1", 5)
    assert st.state is OrchestrationState.CANCELLED
    assert st.error is not None and st.error.kind == "cancelled"
    kinds = [e.kind for e in await client.read_history("k1")]
    assert "CancellationRequested" in kinds and kinds.count("ActivityCompleted") == 1


async def test_detached_orchestration(env: tuple[Runtime, Client]) -> None:
    _, client = env
    st = await run(client, "d1", "detacher")
    assert st.output == "parent done"
    child_st = await client.wait_for_orchestration("detached-1", 5)
    assert child_st.output == 70
    assert (await client.get_instance_info("detached-1")).parent_instance_id is None


async def test_client_errors(env: tuple[Runtime, Client]) -> None:
    _, client = env
    await client.start_orchestration("dup", "child", 1)
    with pytest.raises(InstanceAlreadyExists):
        await client.start_orchestration("dup", "child", 1)
    with pytest.raises(InstanceNotFound):
        await client.raise_event("nope", "x")
    with pytest.raises(InstanceNotFound):
        await client.wait_for_orchestration("nope", 1)
    assert (await client.get_orchestration_status("nope")).state is OrchestrationState.NOT_FOUND
    with pytest.raises(ValueError):
        await client.start_orchestration("", "child")
    with pytest.raises(ValueError):
        await client.start_orchestration("a\x00b", "child")
    with pytest.raises(TimeoutError):
        await client.start_orchestration("slowpoke", "waiter")
        await client.wait_for_orchestration("slowpoke", timedelta(milliseconds=50))


async def test_not_registered_fails_after_threshold(env: tuple[Runtime, Client]) -> None:
    _, client = env
    st = await run(client, "nr", "no-such-orchestration")
    assert st.state is OrchestrationState.FAILED
    assert st.error is not None and st.error.kind == "not_registered"
    assert "no-such-orchestration" in st.error.message


async def test_plain_asyncio_inside_orchestrations(env: tuple[Runtime, Client]) -> None:
    _, client = env
    st = await run(client, "a1", "plain_asyncio", 5)
    assert st.state is OrchestrationState.COMPLETED, st.error
    assert st.output == [5, True, 6, [7], True, 36]
    kinds = [e.kind for e in await client.read_history("a1")]
    assert kinds.count("TimerCreated") == 2 and kinds.count("ActivityCompleted") == 3


async def test_trace_records_carry_instance_id(env: tuple[Runtime, Client],
                                               caplog: pytest.LogCaptureFixture) -> None:
    _, client = env
    caplog.set_level(logging.INFO, logger="duroxy")
    await run(client, "t1", "plain_asyncio", 1)
    traces = [r for r in caplog.records if r.name == "duroxy.orchestration"]
    # logged once, when the code first ran past it, never again while replaying
    assert [(r.getMessage(), getattr(r, "instance_id", None)) for r in traces] == [
        ("plain asyncio for 1", "t1")]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_timer_fires_when_the_stores_clock_shows_it_due_not_a_poll_later() -> None:
    """The store decides visibility on its own clock, which may lag the runtime's: a
    fetch at the due time that finds nothing is retried at once, not after a poll."""
    store = InMemoryProvider(clock=lambda: time.time() - 0.02)  # 20 ms behind
    acts = ActivityRegistry.builder().build()

    async def nap(ctx: OrchestrationContext, _input: None) -> str:
        await ctx.schedule_timer(0.2)
        return "up"

    orchs = OrchestrationRegistry.builder().register("nap", nap).build()
    opts = RuntimeOptions(poll_interval=5.0, max_poll_interval=5.0)
    async with await Runtime.start(store, acts, orchs, opts):
        client = Client(store)
        await client.start_orchestration("napper", "nap")
        status = await client.wait_for_orchestration("napper", timeout=3)
    assert status.state is OrchestrationState.COMPLETED and status.output == "up"


async def test_events_carried_over_continue_as_new_keep_arrival_order(tmp_path: Path) -> None:
    """e1 arrives before the continue-as-new and is never waited for; e2 arrives while
    the deciding turn runs. The next execution sees e1, then e2."""
    path = tmp_path / "carry.db"

    def raise_from_elsewhere(name: str, data: Any) -> None:
        async def go() -> None:
            async with SqliteProvider(path) as other:
                await Client(other).raise_event("carry", name, data)
        worker = threading.Thread(target=asyncio.run, args=(go(),))
        worker.start()
        worker.join(10)

    async def carrier(ctx: OrchestrationContext, n: int) -> Any:
        if n == 0:
            if await ctx.schedule_wait("e") != "e0":
                return "e0 was not first"
            if not ctx.is_replaying:
                raise_from_elsewhere("e", "e2")  # committed while this turn runs
            ctx.continue_as_new(1)
        return [await ctx.schedule_wait("e"), await ctx.schedule_wait("e")]

    store = SqliteProvider(path)
    client = Client(store)
    await client.start_orchestration("carry", "carrier", 0)
    await client.raise_event("carry", "e", "e0")
    await client.raise_event("carry", "e", "e1")
    acts, _ = registries()
    orchs = OrchestrationRegistry.builder().register("carrier", carrier).build()
    async with await Runtime.start(store, acts, orchs, FAST):
        st = await client.wait_for_orchestration("carry", 10)
    await store.close()
    assert st.output == ["e1", "e2"]
    assert st.state is OrchestrationState.COMPLETED


async def test_runtime_start_refuses_a_store_it_cannot_use(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    acts, orchs = registries()
    with pytest.raises(ProviderError):
        await Runtime.start(SqliteProvider(junk), acts, orchs, FAST)
    assert junk.read_bytes() == b"this is not a database" * 100  # left as it was
    closed = SqliteProvider(tmp_path / "ok.db")
    await closed.close()
    with pytest.raises(ProviderError, match="closed"):
        await Runtime.start(closed, acts, orchs, FAST)


async def test_a_child_id_whose_instance_has_not_run_yet_is_refused_too(
        tmp_path: Path) -> None:
    store = SqliteProvider(tmp_path / "taken.db")
    client = Client(store)
    await client.start_orchestration("shared", "waiter")  # PENDING: no turn run yet
    await client.start_orchestration("claimer", "reuses_child_id", "shared")
    acts, orchs = registries()
    # First a worker without "waiter": the claimer's turn queues its start for "shared"
    # next to the start "shared" was created with, before "shared" has run at all.
    only_claimer = OrchestrationRegistry.builder().register(
        "reuses_child_id", reuses_child_id).build()
    patient = RuntimeOptions(not_registered_backoff=0.05, max_attempts=1000)
    async with await Runtime.start(store, acts, only_claimer, patient):
        for _ in range(500):
            if any(e.kind == "SubOrchestrationScheduled"
                   for e in await client.read_history("claimer")):
                break
            await asyncio.sleep(0.01)
    assert (await client.get_orchestration_status("shared")).state is \
        OrchestrationState.PENDING
    async with await Runtime.start(store, acts, orchs, FAST):
        st = await client.wait_for_orchestration("claimer", 10)
        assert st.output == ["InstanceAlreadyExists", "shared",
                             "instance 'shared' already exists"]
        for _ in range(500):  # the instance that had the id runs as its own start said
            if (await client.get_orchestration_status("shared")).custom_status == "waiting":
                break
            await asyncio.sleep(0.01)
        await client.raise_event("shared", "approve", 7)
        shared = await client.wait_for_orchestration("shared", 10)
    assert shared.output == {"idx": 0, "value": 7}
    assert (await client.get_instance_info("shared")).parent_instance_id is None
    await store.close()

"""PostgreSQL-specific behaviour: schemas as tenants, migrations under concurrency,
LISTEN/NOTIFY across provider objects, event-loop changes, the database clock.

Needs a server: set ``DUROXY_TEST_PG_DSN``. Every test uses fresh schema names and
drops them afterwards.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from duroxy.errors import InstanceAlreadyExists, LockLost, ProviderError
from duroxy.history import EventRaised, OrchestratorMessage
from duroxy.providers.base import ExcludedWork, OrchestrationItem, Provider
from duroxy.testing.provider_suite.support import (
    HOLD,
    Recorder,
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
from pgkit import counting_fetches, parked

DSN = os.environ.get("DUROXY_TEST_PG_DSN")

pytestmark = pytest.mark.postgres

if DSN:
    import psycopg

    from duroxy.providers.postgres import PostgresProvider


async def query(dsn: str, text: str, *params: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(text.encode(), params or None)
        return await cur.fetchall() if cur.description else []


async def first_turn_with_work(p: Provider, instance_id: str) -> None:
    """Create ``instance_id`` and run a first turn that schedules one activity."""
    await create(p, instance_id)
    item = await fetch_one(p)
    await p.ack_orchestration_item(item.lock_token, commit(
        started(), scheduled(2), activities=[work(instance_id)]))


async def settle(sender: Provider, receiver: Recorder) -> None:
    """Commit a marker through ``sender`` and wait until ``receiver`` saw it: PostgreSQL
    delivers notifications in commit order, so every earlier note has arrived too."""
    marker = uid("marker")
    await create(sender, marker)
    await receiver.wait_exact(marker)


# ------------------------------------------------------------------ construction
@pytest.mark.parametrize("bad", ["", "1abc", "a-b", "a b", 'x"y', "pg_temp", "ü", "a" * 64])
def test_bad_schema_name_is_a_value_error(bad: str) -> None:
    from duroxy.providers.postgres import PostgresProvider as P

    with pytest.raises(ValueError, match="schema name"):
        P("postgresql://localhost/x", schema=bad)


def test_constructor_opens_nothing_and_needs_no_loop() -> None:
    from duroxy.providers.postgres import PostgresProvider as P

    # Nothing listens on port 1: any connection attempt would fail.
    p = P("postgresql://127.0.0.1:1/none", schema="Mixed_Case_1", min_size=0, max_size=1)
    assert p.schema == "Mixed_Case_1" and p.channel == "duroxy_Mixed_Case_1"
    assert len(P("postgresql://127.0.0.1:1/none", schema="a" * 63).channel) <= 63


def test_malformed_dsn_is_a_value_error() -> None:
    from duroxy.providers.postgres import PostgresProvider as P

    with pytest.raises(ValueError, match="DSN"):
        P("garbage://")
    with pytest.raises(ValueError, match="DSN"):
        P("")


def test_bad_pool_sizes() -> None:
    from duroxy.providers.postgres import PostgresProvider as P

    with pytest.raises(ValueError):
        P("postgresql://localhost/x", min_size=3, max_size=2)
    with pytest.raises(ValueError):
        P("postgresql://localhost/x", max_size=0)


def test_import_without_psycopg_names_the_extra() -> None:
    code = ("import sys; sys.modules['psycopg'] = None\n"
            "try:\n    import duroxy.providers.postgres\n"
            "except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "install duroxy[postgres]" in out


async def test_unreachable_server_is_a_retryable_provider_error() -> None:
    from duroxy.providers.postgres import PostgresProvider as P

    p = P("postgresql://127.0.0.1:1/none?connect_timeout=1", schema="nowhere",
          min_size=0, max_size=1, pool_timeout=0.3)
    try:
        with pytest.raises(ProviderError) as info:
            await p.get_instance("x")
        assert info.value.retryable
    finally:
        await p.close()


# ------------------------------------------------------------------ schemas and migrations
async def test_pooled_connections_are_set_up_for_the_hot_statements(
        providers: Callable[..., PostgresProvider]) -> None:
    """Every pooled connection runs the session setup: the store's schema first, no hash
    or merge joins, and generic plans from a prepared statement's first execution (the
    server's default plans each one afresh five times, on a worker's first turns)."""
    p = providers()
    await create(p, uid())  # opens the pool
    pool = await p._ready()
    async with pool.connection() as conn:
        row = await (await conn.execute(
            "SELECT current_setting('plan_cache_mode'), current_setting('enable_hashjoin'),"
            " current_setting('enable_mergejoin'), current_setting('enable_bitmapscan'),"
            " current_setting('search_path')",
            prepare=False)).fetchone()
    assert row is not None
    assert row[:4] == ("force_generic_plan", "off", "off", "off")
    assert row[4].split(", ") == [f'"{p.schema}"', "pg_temp"]


async def test_an_instances_messages_are_looked_up_by_a_plain_index_scan(
        providers: Callable[..., PostgresProvider]) -> None:
    """A bitmap scan never marks the index entries of dead rows: each lookup of one
    instance's messages would read every message consumed since the last vacuum."""
    p = providers()
    await create(p, uid())
    pool = await p._ready()
    async with pool.connection() as conn:
        cur = await conn.execute(
            "EXPLAIN SELECT 1 FROM orchestrator_queue AS q WHERE q.ikey = %s"
            " AND q.visible_at <= statement_timestamp()", [b"x" * 32], prepare=True)
        plan = "\n".join(r[0] for r in await cur.fetchall())
    assert "Index Scan using orchestrator_queue_instance_idx" in plan, plan
    assert "Bitmap" not in plan, plan


@pytest.mark.parametrize("sender", ["activity result", "event"])
async def test_a_message_does_not_wait_for_its_receivers_turn_to_commit(
        providers: Callable[..., PostgresProvider], dsn: str, sender: str) -> None:
    """A turn updates its instance's lock row and holds that until its commit has
    flushed; a message for the instance is committed meanwhile, not after."""
    p = providers()
    iid = uid()
    await first_turn_with_work(p, iid)
    [act] = await p.fetch_activity_items(HOLD, limit=1)
    async with await psycopg.AsyncConnection.connect(dsn) as turn:
        # a turn in progress on the receiver: its lock row updated, not yet committed
        await turn.execute(f"SET search_path = {p.schema}".encode())
        await turn.execute(b"UPDATE instance_locks SET locked_until = locked_until"
                           b" WHERE instance_id = %s", [iid])
        if sender == "event":
            send = p.enqueue_orchestrator_message(raised(iid))
        else:
            send = p.ack_activity(act.lock_token, activity_completion(act.work))
        await asyncio.wait_for(send, 5.0)
        await turn.rollback()
    [item] = await p.fetch_orchestration_items(HOLD, limit=10)
    assert [m.message.event.kind for m in item.messages if m.message] == [
        "EventRaised" if sender == "event" else "ActivityCompleted"]


async def test_schemas_are_separate_stores(providers: Callable[..., PostgresProvider]) -> None:
    a, b = providers(), providers()
    await create(a, "same-id", "name::a")
    await create(b, "same-id", "name::b")
    with pytest.raises(InstanceAlreadyExists):
        await create(a, "same-id", "name::a")
    ra, rb = await a.get_instance("same-id"), await b.get_instance("same-id")
    assert ra is not None and rb is not None and (ra.name, rb.name) == ("name::a", "name::b")

    item = await fetch_one(a)
    await a.ack_orchestration_item(item.lock_token, commit(started("name::a"), state="COMPLETED",
                                                            name="name::a", output='"A"'))
    assert len(await a.read_history("same-id")) == 1
    assert await b.read_history("same-id") == []
    rb = await b.get_instance("same-id")
    assert rb is not None and rb.state == "PENDING"
    # b's start message is still there for b alone
    assert (await fetch_one(b)).instance_id == "same-id"
    assert await a.fetch_orchestration_items(HOLD, limit=10) == []
    assert await a.delete_instance("same-id") == 1
    assert await b.get_instance("same-id") is not None


async def test_concurrent_first_use_migrates_once(
        dsn: str, schemas: Callable[[], str], providers: Callable[..., PostgresProvider]) -> None:
    schema = schemas()
    nodes = [providers(schema) for _ in range(6)]
    # Every node's first call migrates; the script has no IF NOT EXISTS, so a second run
    # of it would fail that node.
    await asyncio.gather(*(n.get_instance("x") for n in nodes))
    versions = await query(
        dsn, f'SELECT version, name FROM "{schema}".schema_version ORDER BY version')
    assert versions == [(1, "initial"), (2, "workers"), (3, "kv_and_status"),
                        (4, "activity_routing")]
    tables = await query(
        dsn, "SELECT count(*) FROM pg_tables WHERE schemaname = %s", schema)
    assert tables == [(9,)]  # (migration 4 adds the sessions table)
    # and a later node finds nothing to do
    late = providers(schema)
    assert await late.get_instance("x") is None


async def test_newer_schema_version_is_refused(
        dsn: str, schemas: Callable[[], str], providers: Callable[..., PostgresProvider]) -> None:
    schema = schemas()
    assert await providers(schema).get_instance("x") is None
    await query(dsn, f'INSERT INTO "{schema}".schema_version (version, name) VALUES (99, %s)',
                "future")
    with pytest.raises(ProviderError, match="newer"):
        await providers(schema).get_instance("x")


async def test_a_schema_of_the_previous_version_opens_and_migrates(
        dsn: str, schemas: Callable[[], str], providers: Callable[..., PostgresProvider]
) -> None:
    """A schema made by migration 1 (no workers table, no activity name column) with
    work in it: the first use migrates it, the queued rows get their activity names, and
    everything of the new schema works on it."""
    from duroxy.history import ActivityWork
    from duroxy.providers.base import WorkerRecord
    from duroxy.providers.postgres._marshal import key
    from duroxy.providers.postgres._migrate import migrate
    from duroxy.providers.postgres._sql import load_migrations

    schema = schemas()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await migrate(conn, schema, load_migrations(schema)[:1])
    q = f'"{schema}"'
    await query(dsn, f"INSERT INTO {q}.instances (ikey, instance_id, name, version, state) "
                "VALUES (%s, 'old', 'flow', '1.0.0', 'RUNNING')", key("old"))
    await query(dsn, f"INSERT INTO {q}.instance_locks (ikey, instance_id) VALUES (%s, 'old')",
                key("old"))
    await query(dsn, f"INSERT INTO {q}.orchestrator_queue (ikey, instance_id, payload, "
                "visible_at) VALUES (%s, 'old', '{{}}', now())", key("old"))
    rows = [(2, ActivityWork("old", 1, 2, "lacking", '"x"', "flow", "1.0.0").to_json()),
            (3, ActivityWork("old", 1, 3, "known", '"y"', "flow", "1.0.0").to_json()),
            (4, '{"corrupt": ')]
    for event_id, payload in rows:
        await query(dsn, f"INSERT INTO {q}.activity_queue (ikey, instance_id, execution_id, "
                    "event_id, payload, visible_at) VALUES (%s, 'old', 1, %s, %s, now())",
                    key("old"), event_id, payload)

    store = providers(schema)
    assert await store.list_workers() == []  # the first use migrated the schema
    assert await query(dsn, f"SELECT max(version) FROM {q}.schema_version") == [
        (len(load_migrations(schema)),)]
    assert await query(dsn, f"SELECT event_id, name FROM {q}.activity_queue "
                       "ORDER BY event_id") == [(2, "lacking"), (3, "known"), (4, "")]
    skip = ExcludedWork(activities=frozenset({"lacking"}))
    items = await store.fetch_activity_items(HOLD, limit=10, exclude=skip)
    assert [i.work.name for i in items] == ["known"]  # the corrupt row is left leased
    assert [i.work.name for i in await store.fetch_activity_items(HOLD, limit=10)] == [
        "lacking"]
    assert await store.fetch_orchestration_items(HOLD, limit=10, exclude=ExcludedWork(
        orchestrations=frozenset({"flow"}))) == []
    w = WorkerRecord("w", "h", 1, "0.1.0", 1.0, time.time(), 10.0, 1, 1, "DEFAULT_ONLY")
    await store.record_heartbeat(w)
    assert await store.list_workers() == [w]


# ------------------------------------------------------------------ LISTEN / NOTIFY
async def test_notify_reaches_other_provider_on_same_schema_only(
        providers: Callable[..., PostgresProvider]) -> None:
    sender = providers()
    peer = providers(sender.schema)
    other_sender = providers()
    other = providers(other_sender.schema)
    seen = {ch: Recorder() for ch in ("orchestrator", "activity", "terminal")}
    for ch, rec in seen.items():
        peer.listen(ch, rec)  # type: ignore[arg-type]
    elsewhere = Recorder()
    other.listen("orchestrator", elsewhere)
    await peer.wait_listening()
    await other.wait_listening()

    iid = uid()
    await create(sender, iid)
    await seen["orchestrator"].wait_exact(iid)
    item = await fetch_one(sender)
    w = work(iid)
    await sender.ack_orchestration_item(
        item.lock_token, commit(started(), scheduled(2), activities=[w]))
    await seen["activity"].wait_exact(iid)
    [act] = await sender.fetch_activity_items(HOLD, limit=5)
    await sender.ack_activity(act.lock_token, activity_completion(w))
    item = await fetch_one(sender)
    await sender.ack_orchestration_item(item.lock_token, commit(state="COMPLETED"))
    await seen["terminal"].wait_exact(iid)
    assert seen["orchestrator"].seen().count(iid) == 2  # start, then the completion

    await settle(other_sender, elsewhere)
    assert iid not in elsewhere.seen()


async def test_own_commits_call_listeners_once(
        providers: Callable[..., PostgresProvider]) -> None:
    node = providers()
    peer = providers(node.schema)
    rec = Recorder()
    node.listen("orchestrator", rec)
    await node.wait_listening()
    iid = uid()
    await create(node, iid)
    assert rec.seen() == [iid]  # called directly, before create_instance returned
    await settle(peer, rec)  # the echo of our own NOTIFY would have arrived by now
    assert rec.seen().count(iid) == 1


async def test_unsubscribed_listener_is_not_called(
        providers: Callable[..., PostgresProvider]) -> None:
    node = providers()
    gone, kept = Recorder(), Recorder()
    unsubscribe = node.listen("orchestrator", gone)
    node.listen("orchestrator", kept)
    unsubscribe()
    await create(node, "x")
    assert gone.seen() == [] and kept.seen() == ["x"]


async def test_listener_reconnects_after_connection_loss(
        dsn: str, providers: Callable[..., PostgresProvider]) -> None:
    sender = providers()
    node = providers(sender.schema)
    rec = Recorder()
    node.listen("orchestrator", rec)
    await node.wait_listening()
    pid = node.listener_backend_pid
    assert pid is not None
    await query(dsn, "SELECT pg_terminate_backend(%s)", pid)
    # after reconnecting, every listener gets a general wake-up (notes may be lost)
    await rec.wait_for("never-sent")
    assert None in rec.seen()
    await node.wait_listening()
    assert node.listener_backend_pid not in (None, pid)
    iid = uid()
    await create(sender, iid)
    await rec.wait_exact(iid)


async def test_runtimes_on_two_nodes_are_driven_by_notifications(
        providers: Callable[..., PostgresProvider]) -> None:
    """Two runtimes on their own provider objects and a client on a third: with the
    safety-net poll at a minute, only NOTIFY can carry the work between them."""
    from duroxy import (
        ActivityContext,
        ActivityRegistry,
        Client,
        OrchestrationContext,
        OrchestrationRegistry,
        OrchestrationState,
        Runtime,
        RuntimeOptions,
    )

    async def double(ctx: ActivityContext, n: int) -> int:
        return 2 * n

    async def flow(ctx: OrchestrationContext, n: int) -> list[int]:
        return list(await ctx.join(*(ctx.schedule_activity("double", n + k) for k in range(4))))

    acts = ActivityRegistry.builder().register("double", double).build()
    orchs = OrchestrationRegistry.builder().register("flow", flow).build()
    opts = RuntimeOptions(poll_interval=60.0)
    client_store = providers()
    node_a = providers(client_store.schema)
    node_b = providers(client_store.schema)
    rt_a = await Runtime.start(node_a, acts, orchs, opts)
    rt_b = await Runtime.start(node_b, acts, orchs, opts)
    try:
        await node_a.wait_listening()
        await node_b.wait_listening()
        client = Client(client_store)
        for k in range(3):
            await client.start_orchestration(f"flow-{k}", "flow", 10 * k)
        for k in range(3):
            st = await client.wait_for_orchestration(f"flow-{k}", timeout=10)
            assert st.state is OrchestrationState.COMPLETED
            assert st.output == [2 * (10 * k + j) for j in range(4)]
    finally:
        await rt_a.shutdown(timeout=2)
        await rt_b.shutdown(timeout=2)


# ------------------------------------------------------------------ claims under concurrency
async def test_competing_nodes_never_share_work(
        providers: Callable[..., PostgresProvider]) -> None:
    nodes = [providers(max_size=3)]
    nodes += [providers(nodes[0].schema, max_size=3) for _ in range(3)]
    ids = [uid() for _ in range(24)]
    for iid in ids:
        await create(nodes[0], iid)

    async def drain_orchestrations(p: PostgresProvider) -> list[str]:
        got: list[str] = []
        while items := await p.fetch_orchestration_items(HOLD, limit=3):
            for it in items:
                got.append(it.instance_id)
                await p.ack_orchestration_item(
                    it.lock_token, commit(started(), scheduled(2), activities=[
                        work(it.instance_id)]))
        return got

    got = await asyncio.gather(*(drain_orchestrations(n) for n in nodes))
    assert sorted(i for part in got for i in part) == sorted(ids)

    async def drain_activities(p: PostgresProvider) -> list[str]:
        taken: list[str] = []
        while items := await p.fetch_activity_items(HOLD, limit=2):
            for it in items:
                taken.append(it.work.instance_id)
                await p.ack_activity(it.lock_token, activity_completion(it.work))
        return taken

    taken = await asyncio.gather(*(drain_activities(n) for n in nodes))
    assert sorted(i for part in taken for i in part) == sorted(ids)


async def test_work_of_a_killed_node_is_taken_over_after_its_lease(
        dsn: str, providers: Callable[..., PostgresProvider]) -> None:
    survivor = providers()
    await first_turn_with_work(survivor, "acts")
    await create(survivor, "orch")
    code = f"""
import asyncio, sys, time
from duroxy.providers.postgres import PostgresProvider
async def main():
    p = PostgresProvider({dsn!r}, {survivor.schema!r})
    [o] = await p.fetch_orchestration_items(0.4, limit=5)
    [a] = await p.fetch_activity_items(0.4, limit=5)
    print(o.instance_id, a.work.instance_id, flush=True)
    time.sleep(60)
asyncio.run(main())
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        assert line.split() == ["orch", "acts"]
        proc.kill()  # no close, no rollback from the client side: the node just dies
        assert await survivor.fetch_orchestration_items(HOLD, limit=5) == []
        assert await survivor.fetch_activity_items(HOLD, limit=5) == []
        await asyncio.sleep(0.45)
        [item] = await survivor.fetch_orchestration_items(HOLD, limit=5)
        [act] = await survivor.fetch_activity_items(HOLD, limit=5)
        assert (item.instance_id, item.attempt) == ("orch", 2)
        assert (act.work.instance_id, act.attempt) == ("acts", 2)
        await survivor.ack_activity(act.lock_token, activity_completion(act.work))
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


# ------------------------------------------------------------------ the database clock
async def test_leases_ignore_the_host_clock(
        providers: Callable[..., PostgresProvider], monkeypatch: pytest.MonkeyPatch) -> None:
    p = providers()
    await create(p, "x")
    real = time.time
    # This host's clock jumps an hour ahead: a lease computed from it would be expired
    # at once or last an hour too long; the database clock is all that counts.
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    item = await fetch_one(p, lock_timeout=60)
    await p.renew_orchestration_lock(item.lock_token, 60)
    assert await p.fetch_orchestration_items(HOLD, limit=5) == []
    await p.ack_orchestration_item(item.lock_token, commit(started()))
    monkeypatch.setattr(time, "time", lambda: real() - 3600)
    await p.enqueue_orchestrator_message(raised("x"))
    item = await fetch_one(p, lock_timeout=0.1)
    await asyncio.sleep(0.2)
    with pytest.raises(LockLost):
        await p.ack_orchestration_item(item.lock_token, commit())


async def test_visible_at_is_compared_with_the_database_clock(
        dsn: str, providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    await create(p, "x")
    await p.ack_orchestration_item((await fetch_one(p)).lock_token, commit(started()))
    [(db_now,)] = await query(dsn, "SELECT extract(epoch FROM clock_timestamp())::float8")
    await p.enqueue_orchestrator_message(raised("x", visible_at=db_now + 0.3))
    assert await p.fetch_orchestration_items(HOLD, limit=5) == []
    await asyncio.sleep(0.35)
    item = await fetch_one(p)
    [qm] = item.messages
    assert qm.message is not None and qm.message.visible_at == db_now + 0.3
    record = await p.get_instance("x")
    assert record is not None and abs(record.updated_at - db_now) < 5


# ------------------------------------------------------------------ lifecycle and loops
def test_usable_from_one_event_loop_after_another(dsn: str, schemas: Callable[[], str]) -> None:
    p = PostgresProvider(dsn, schemas())
    sender = PostgresProvider(dsn, p.schema)
    rec = Recorder()

    async def first() -> None:
        p.listen("orchestrator", rec)
        await create(p, "a")
        await p.wait_listening()
        await create(sender, "b")
        await rec.wait_exact("b")

    async def second() -> None:
        # a and b are both queued; the oldest comes first
        [item] = await p.fetch_orchestration_items(HOLD, limit=1)
        assert item.instance_id == "a"
        await p.ack_orchestration_item(item.lock_token, commit(started()))
        await p.wait_listening()  # the listener was rebuilt on this loop
        await create(sender, "c")
        await rec.wait_exact("c")

    async def finish() -> None:
        assert [i.instance_id for i in await p.list_instances()] == ["a", "b", "c"]
        await p.close()
        await sender.close()

    asyncio.run(first())
    asyncio.run(second())
    asyncio.run(finish())
    gc.collect()


async def test_close_is_idempotent_and_final(providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    p.listen("orchestrator", Recorder())
    await create(p, "x")
    await p.close()
    await p.close()
    with pytest.raises(ProviderError, match="closed"):
        await p.get_instance("x")


def test_unclosed_provider_does_not_keep_the_process_alive(
        dsn: str, schemas: Callable[[], str]) -> None:
    code = f"""
import asyncio
from duroxy.providers.postgres import PostgresProvider
from duroxy.testing.provider_suite.support import create
p = PostgresProvider({dsn!r}, {schemas()!r})
async def main():
    p.listen("orchestrator", lambda iid: None)
    await create(p, "x")
    await p.wait_listening()
asyncio.run(main())
print("done")
"""
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "done"
    assert "Warning" not in out.stderr and "Traceback" not in out.stderr, out.stderr


async def test_pool_size_bounds_connections(
        dsn: str, providers: Callable[..., PostgresProvider]) -> None:
    p = providers(min_size=1, max_size=2)
    await asyncio.gather(*(create(p, uid()) for _ in range(20)))
    [(count,)] = await query(
        dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'duroxy' "
             "AND query LIKE %s", f"%{p.schema}%")
    assert 1 <= count <= 2
    assert len(await p.list_instances(limit=50)) == 20


async def test_ids_and_names_longer_than_an_index_entry(
        providers: Callable[..., PostgresProvider]) -> None:
    # 1,024 four-byte characters: 4 KB of UTF-8, beyond a B-tree entry (about 2.7 KB)
    rng = random.Random(7)

    def long_text(tag: str) -> str:
        return tag + "".join(chr(rng.randint(0x1F300, 0x1FAFF)) for _ in range(1024 - len(tag)))

    p = providers()
    parent, child, name = long_text("p"), long_text("c"), long_text("n")
    await create(p, parent, name)
    item = await fetch_one(p)
    await p.ack_orchestration_item(item.lock_token, commit(
        started(name), name=name, messages=[start_message(child, name,
                                                          parent_instance_id=parent)]))
    [rec] = await p.list_instances(parent_instance_id=parent)
    assert (rec.instance_id, rec.name, rec.parent_instance_id) == (child, name, parent)
    assert [r.instance_id for r in await p.list_instances(name=name)] == [parent, child]
    assert await p.list_instances(name=name[:-1]) == []
    assert len(await p.read_history(parent)) == 1
    assert (await fetch_one(p)).instance_id == child
    assert await p.delete_instance(parent) == 2
    assert await p.list_instances(name=name) == []


async def test_nul_in_an_id_is_a_value_error(providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    with pytest.raises(ValueError, match="NUL"):
        await create(p, "a\x00b")
    with pytest.raises(ValueError):
        await p.get_instance("a\x00b")


async def test_undecodable_activity_row_does_not_block_the_batch(
        dsn: str, providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    for iid in ("good1", "bad", "good2"):
        await first_turn_with_work(p, iid)
    await query(dsn, f'UPDATE "{p.schema}".activity_queue SET payload = %s '
                     "WHERE instance_id = 'bad'", "not-json{")
    items = await p.fetch_activity_items(HOLD, limit=10)
    assert [i.work.instance_id for i in items] == ["good1", "good2"]


async def test_start_message_round_trips_exactly(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    iid = "ünïcødé ✓ \"quoted\" 'x' \\ %s {schema}"
    msg = start_message(iid, input='{"big":123456789012345678901234567890,"f":0.1}')
    await p.create_instance(msg)
    item = await fetch_one(p)
    assert item.instance_id == iid
    assert item.messages[0].message == msg


# ------------------------------------------------------------------ long polling
async def test_the_poll_after_a_hand_off_parks_without_fetching_until_news(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    poll = await parked(p)
    await create(p, uid())
    assert len(await asyncio.wait_for(poll, 5)) == 1
    fetches = counting_fetches(p)
    poll = asyncio.ensure_future(p.poll_orchestration_items(HOLD, 5, wait=30))
    await asyncio.sleep(0.05)
    assert fetches == [] and not poll.done()
    iid = uid()
    await create(p, iid)  # handed over again
    assert [i.instance_id for i in await asyncio.wait_for(poll, 5)] == [iid]
    assert fetches == []
    # News (here a message for an existing instance) makes the next poll fetch.
    await p.enqueue_orchestrator_message(raised(iid))
    assert await p.poll_orchestration_items(HOLD, 5, wait=0.2) == []  # iid is leased
    assert fetches == [5]  # fetched at once; at its deadline it answers without one


async def test_the_poll_after_a_short_fetch_parks_without_fetching_until_news(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    a = uid("a")
    await create(p, a)  # nobody parked: committed and noted
    fetches = counting_fetches(p)
    assert [i.instance_id for i in await p.poll_orchestration_items(HOLD, 5, wait=30)] == [a]
    assert fetches == [5]  # one instance where five would have fitted: nothing else
    poll = asyncio.ensure_future(p.poll_orchestration_items(HOLD, 5, wait=30))
    await asyncio.sleep(0.05)
    assert fetches == [5] and not poll.done()  # parked at once
    b = uid("b")
    await create(p, b)
    assert [i.instance_id for i in await asyncio.wait_for(poll, 5)] == [b]
    assert fetches == [5]


async def test_a_poll_parked_at_once_still_fetches_soon_what_no_news_announces(
        dsn: str, providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    other = providers(p.schema)
    lapsing, a = uid("lapsing"), uid("a")
    await create(other, lapsing)
    assert [i.instance_id for i in await other.fetch_orchestration_items(HOLD, 5)] == [lapsing]
    await create(p, a)
    assert [i.instance_id for i in await p.poll_orchestration_items(HOLD, 5, wait=30)] == [a]
    poll = asyncio.ensure_future(p.poll_orchestration_items(HOLD, 5, wait=30))
    await asyncio.sleep(0.01)  # parked at once
    # the other node's lease lapses, which nobody announces
    await query(dsn, f'UPDATE "{p.schema}".instance_locks SET locked_until = now() - '
                "interval '1 second' WHERE instance_id = %s", lapsing)
    items = await asyncio.wait_for(poll, 5)
    assert [i.instance_id for i in items] == [lapsing]


async def test_a_short_fetch_right_after_a_timer_fell_due_does_not_make_the_next_poll_park(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    await create(p, uid())
    p._parking._retry_until = time.monotonic() + 30  # as an alarm that just fired leaves it
    assert len(await p.poll_orchestration_items(HOLD, 5, wait=30)) == 1
    assert p._quiet is None  # the store's clock may show the rest a moment later
    p._parking.found()
    await create(p, uid())
    assert len(await p.poll_orchestration_items(HOLD, 5, wait=30)) == 1
    assert p._quiet is not None


async def test_a_fetch_cut_short_by_one_instances_backlog_does_not_make_the_next_poll_park(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    busy, other = uid("busy"), uid("other")
    await first_turn(p, busy)
    for i in range(40):  # more than a fetch of 5 instances scans
        await p.enqueue_orchestrator_message(raised(busy, f"e{i}"))
    await create(p, other)
    fetches = counting_fetches(p)
    (item,) = await p.poll_orchestration_items(HOLD, 5, wait=30)
    assert item.instance_id == busy and len(item.messages) == 40
    items = await asyncio.wait_for(p.poll_orchestration_items(HOLD, 5, wait=30), 5)
    assert [i.instance_id for i in items] == [other]
    assert fetches == [5, 5]  # the second poll fetched at once


async def test_a_start_delayed_into_the_future_is_not_handed_over_early(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    poll = await parked(p)
    iid = uid()
    due = time.time() + 0.3
    await p.create_instance(OrchestratorMessage(iid, started(), 1, due))
    items = await asyncio.wait_for(poll, 10)
    assert time.time() >= due - 0.01  # woken when it fell due, not before
    assert [i.instance_id for i in items] == [iid]


async def test_a_message_due_later_wakes_nobody_here_before_it_falls_due(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    iid = uid()
    await create(p, iid)
    await fetch_one(p)  # the start is leased: only what follows counts
    heard: list[tuple[str | None, float]] = []
    unlisten = p.listen("orchestrator", lambda i: heard.append((i, time.time())))
    # (its alarm wakes the parked fetches when it falls due: see the tests below)
    due = time.time() + 0.3
    await p.enqueue_orchestrator_message(raised(iid, "later", visible_at=due))
    assert heard == []  # no wake-up now that would find nothing
    await p.enqueue_orchestrator_message(raised(iid, "now"))
    assert [i for i, _ in heard] == [iid]
    unlisten()


async def test_a_parked_poll_wakes_for_a_timer_committed_here(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    iid = uid()
    await create(p, iid)
    item = await fetch_one(p)
    due = time.time() + 0.3
    await p.ack_orchestration_item(item.lock_token, commit(
        started(), messages=[raised(iid, "later", visible_at=due)]))
    t0 = time.monotonic()
    items = await asyncio.wait_for(p.poll_orchestration_items(HOLD, 5, wait=20), 10)
    assert time.monotonic() - t0 < 5  # long before the poll's own deadline
    assert time.time() >= due - 0.01
    assert [i.instance_id for i in items] == [iid]


async def test_a_parked_poll_wakes_for_work_another_node_commits(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    other = providers(p.schema)
    poll = await parked(p)
    await p.wait_listening()
    iid = uid()
    await create(other, iid)
    items = await asyncio.wait_for(poll, 5)
    assert [i.instance_id for i in items] == [iid]


async def test_a_cancelled_poll_holds_no_lease(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    poll = await parked(p)
    poll.cancel()
    with pytest.raises(asyncio.CancelledError):
        await poll
    assert p._parking._parked == []
    iid = uid()
    await create(p, iid)
    assert (await fetch_one(p)).instance_id == iid


async def test_a_poll_cancelled_during_a_hand_off_gives_the_lease_back(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    poll = await parked(p)
    iid = uid()
    creating = asyncio.ensure_future(create(p, iid))
    await asyncio.sleep(0)  # the start has taken the parked poll and is in flight
    assert p._parking._parked == []
    poll.cancel()
    await creating
    with pytest.raises(asyncio.CancelledError):
        await poll
    for _ in range(100):  # given back in the background
        items = await p.fetch_orchestration_items(HOLD)
        if items:
            break
        await asyncio.sleep(0.02)
    assert [i.instance_id for i in items] == [iid]


async def test_a_start_whose_lock_row_is_held_is_announced_instead(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    target = uid("target")
    # A message to an id without a record gives it a lock row; a fetch leases it.
    await first_turn(p, uid(), messages=[raised(target)])
    held = await fetch_one(p)
    assert held.instance_id == target and held.instance is None
    poll = await parked(p, wait=0.5)
    await create(p, target)  # (a fetched id: not handed over, see the fused starts)
    assert await asyncio.wait_for(poll, 5) == []  # nothing handed over; woken, found none
    await p.abandon_orchestration_item(held.lock_token)
    item = await fetch_one(p)
    assert item.instance_id == target
    assert item.instance is not None and item.instance.state == "PENDING"


async def test_close_answers_a_parked_poll(providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    poll = await parked(p)
    await p.close()
    assert await asyncio.wait_for(poll, 5) == []


async def test_news_during_a_fetch_that_missed_it_makes_the_poll_fetch_again(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    assert await p.fetch_orchestration_items(HOLD) == []
    fetch = p.fetch_orchestration_items
    iid = uid()
    calls: list[list[OrchestrationItem]] = []

    async def late(lock_timeout: float, limit: int = 1,
                   exclude: ExcludedWork | None = None) -> list[OrchestrationItem]:
        items = await fetch(lock_timeout, limit, exclude)
        if not calls:  # a start commits (and is announced) after this fetch's snapshot
            await create(p, iid)
        calls.append(items)
        return items

    p.fetch_orchestration_items = late  # type: ignore[method-assign]
    items = await asyncio.wait_for(p.poll_orchestration_items(HOLD, 5, wait=30), 5)
    assert [i.instance_id for i in items] == [iid]
    assert len(calls) == 2 and calls[0] == []


async def _leased_while_noted_after_sending(p: PostgresProvider, iid: str) -> Any:
    """``iid`` with a message waiting, fetched; its ack's statement is followed, before
    the ack returns, by a note for it (as if a message had committed too late for it)."""
    await first_turn(p, iid)
    await p.enqueue_orchestrator_message(raised(iid))
    item = await fetch_one(p)
    rows = p._rows

    async def noted_meanwhile(name: Any, params: dict[str, Any]) -> list[Any]:
        out = await rows(name, params)
        if params.get("token") == item.lock_token:
            p._notifier.call([("orchestrator", iid)])
        return out

    p._rows = noted_meanwhile  # type: ignore[method-assign]
    return item


# ------------------------------------------------------------------ announcing again
async def test_a_turn_announces_again_only_what_its_statement_may_have_missed(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    other = providers(p.schema)  # another node
    rec = Recorder()
    rec.bind(p.listen("orchestrator", rec))
    await p.wait_listening()
    # A note seen before the turn's statement is of a commit the statement sees: the
    # start itself here, which the turn consumes. Nothing is announced again.
    a = uid("a")
    await create(p, a)
    item = await fetch_one(p)
    await p.ack_orchestration_item(item.lock_token, commit(started()))
    assert rec.seen().count(a) == 1
    # A message that arrives during the lease is visible to the turn's statement, which
    # does not consume it: announced again (its own note woke fetches that skipped a).
    b = uid("b")
    await first_turn(p, b)
    await p.enqueue_orchestrator_message(raised(b, "x"))
    item = await fetch_one(p)
    before = rec.seen().count(b)
    await other.enqueue_orchestrator_message(raised(b, "y"))
    for _ in range(500):  # its note reaches this node through LISTEN
        if rec.seen().count(b) > before:
            break
        await asyncio.sleep(0.01)
    before = rec.seen().count(b)
    await p.ack_orchestration_item(item.lock_token, commit())
    assert rec.seen().count(b) == before + 1
    events = [qm.message.event for qm in (await fetch_one(p)).messages
              if qm.message is not None]
    assert len(events) == 1 and isinstance(events[0], EventRaised)
    assert events[0].name == "y"
    # A note that arrives after the statement was sent may be of a message it missed.
    c = uid("c")
    item = await _leased_while_noted_after_sending(p, c)
    before = rec.seen().count(c)
    await p.ack_orchestration_item(item.lock_token, commit())
    assert rec.seen().count(c) == before + 2  # the injected note, and the announcement


async def test_news_during_a_hand_off_makes_the_next_poll_fetch(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    b = uid("b")
    await first_turn(p, b)
    poll = await parked(p)
    a = uid("a")
    creating = asyncio.ensure_future(create(p, a))
    assert [i.instance_id for i in await asyncio.wait_for(poll, 5)] == [a]
    await p.enqueue_orchestrator_message(raised(b))  # news before the next poll
    items = await asyncio.wait_for(p.poll_orchestration_items(HOLD, 5, wait=30), 5)
    assert [i.instance_id for i in items] == [b]
    await asyncio.wait_for(creating, 5)


async def test_an_alarm_while_nobody_is_parked_makes_the_next_poll_fetch(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    t = uid("t")
    await create(p, t)
    item = await fetch_one(p)
    poll = await parked(p)
    a = uid("a")
    await create(p, a)  # handed over: the next poll would park at once
    assert [i.instance_id for i in await asyncio.wait_for(poll, 5)] == [a]
    await p.ack_orchestration_item(item.lock_token, commit(
        started(), messages=[raised(t, "later", visible_at=time.time() + 0.1)]))
    await asyncio.sleep(0.3)  # it falls due, and the retry window closes, unseen
    items = await asyncio.wait_for(p.poll_orchestration_items(HOLD, 5, wait=30), 5)
    assert [i.instance_id for i in items] == [t]


async def test_a_parked_poll_wakes_when_a_cool_down_ends(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    iid = uid()
    await create(p, iid)
    item = await fetch_one(p)
    await p.abandon_orchestration_item(item.lock_token, delay=0.3)
    t0 = time.monotonic()
    items = await asyncio.wait_for(p.poll_orchestration_items(HOLD, 5, wait=30), 10)
    assert 0.25 <= time.monotonic() - t0 < 5
    assert [i.instance_id for i in items] == [iid]


async def test_a_start_cancelled_after_it_was_sent_still_reaches_the_parked_poll(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    poll = await parked(p)
    iid = uid()
    creating = asyncio.ensure_future(create(p, iid))
    await asyncio.sleep(0)  # the statement is on its way
    creating.cancel()
    with pytest.raises(asyncio.CancelledError):
        await creating
    (item,) = await asyncio.wait_for(poll, 5)
    assert item.instance_id == iid


async def test_a_poll_cancelled_after_its_fetch_was_sent_gives_the_leases_back(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    iid = uid()
    await create(p, iid)
    fetch = p.fetch_orchestration_items
    fetched = asyncio.Event()

    async def slow(lock_timeout: float, limit: int = 1,
                   exclude: ExcludedWork | None = None) -> list[OrchestrationItem]:
        items = await fetch(lock_timeout, limit, exclude)
        fetched.set()
        await asyncio.sleep(0.2)  # the poll is cancelled meanwhile
        return items

    p.fetch_orchestration_items = slow  # type: ignore[method-assign]
    poll = asyncio.ensure_future(p.poll_orchestration_items(HOLD, 5, wait=30))
    await fetched.wait()
    poll.cancel()
    with pytest.raises(asyncio.CancelledError):
        await poll
    p.fetch_orchestration_items = fetch  # type: ignore[method-assign]
    for _ in range(100):
        items = await fetch(HOLD, 5)
        if items:
            break
        await asyncio.sleep(0.02)
    assert [i.instance_id for i in items] == [iid]


async def test_close_waits_for_leases_being_given_back(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    other = providers(p.schema)
    iid = uid()
    await create(p, iid)
    item = await fetch_one(p)
    p._give_back([item])
    await p.close()
    assert (await fetch_one(other)).instance_id == iid


async def test_news_a_turn_learns_too_late_is_announced_to_other_nodes(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    other = providers(p.schema)
    rec = Recorder()
    rec.bind(other.listen("orchestrator", rec))
    await other.wait_listening()
    c = uid("c")
    item = await _leased_while_noted_after_sending(p, c)
    before = rec.seen().count(c)
    await p.ack_orchestration_item(item.lock_token, commit())
    await rec.wait_exact(c)
    for _ in range(200):
        if rec.seen().count(c) > before:
            break
        await asyncio.sleep(0.01)
    assert rec.seen().count(c) == before + 1


async def test_concurrent_closes_both_return_once_closed(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    other = providers(p.schema)
    iid = uid()
    await create(p, iid)
    item = await fetch_one(p)
    p._give_back([item])
    await asyncio.wait_for(asyncio.gather(p.close(), p.close()), 10)
    with pytest.raises(ProviderError, match="closed"):
        await p.get_instance(iid)
    assert (await fetch_one(other)).instance_id == iid  # given back before the close


async def test_a_lease_given_back_does_not_count_as_an_attempt(
        providers: Callable[..., PostgresProvider]) -> None:
    p = providers()
    other = providers(p.schema)
    iid = uid()
    await create(p, iid)
    item = await fetch_one(p)
    assert item.attempt == 1
    p._give_back([item])  # its poll was cancelled: nobody used it
    await p._settle_leases()
    again = await fetch_one(other)
    assert again.instance_id == iid and again.attempt == 1
    await other.abandon_orchestration_item(again.lock_token)  # a real abandon counts
    assert (await fetch_one(other)).attempt == 2


def test_a_loop_ending_with_the_provider_unclosed_closes_its_connections(
        dsn: str, schemas: Callable[[], str]) -> None:
    import psycopg

    tag = f"duroxy_unclosed_{uuid.uuid4().hex[:10]}"
    sep = "&" if "?" in dsn else "?"
    p = PostgresProvider(f"{dsn}{sep}application_name={tag}", schemas())

    async def main() -> None:
        p.listen("orchestrator", lambda iid: None)
        await asyncio.gather(*(create(p, uid()) for _ in range(8)))  # several connections
        await p.wait_listening()

    asyncio.run(main())  # ends with the provider unclosed: the loop's shutdown releases it

    def sessions(*, used: bool) -> int:
        """The provider's sessions still open; ``used``: only those that ran a query."""
        with psycopg.connect(dsn, autocommit=True) as c:
            ((n,),) = c.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name"
                                " = %s AND (query <> '' OR NOT %s)", (tag, used)).fetchall()
            return int(n)

    def left_after(seconds: float, *, used: bool) -> int:
        deadline = time.monotonic() + seconds
        while (left := sessions(used=used)) and time.monotonic() < deadline:
            time.sleep(0.05)  # the server notices a closed socket a moment later
        return left

    # Every connection the pool opened (each ran its session setup) is closed by the
    # loop's shutdown itself.
    assert left_after(5, used=True) == 0
    # What may outlive it (in about one run in fifteen on a busy machine): one connection
    # attempt that the shutdown caught mid-handshake, inside psycopg, before the pool got
    # it. Such a session never ran a statement and goes with the process (or with its
    # remains, once collected); docs/postgres.md says so. No more than the one attempt
    # that the pool's growth keeps in flight at a time.
    gc.collect()
    assert left_after(2, used=False) <= 1

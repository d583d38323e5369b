"""Several OS processes on one SQLite file, and a process killed right after a commit."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from duroxy.providers.sqlite import SqliteProvider
from duroxy.testing.provider_suite.support import create

pytestmark = pytest.mark.slow

INSTANCES = 300

# One worker process: waits for the go file, then runs turns and activities until every
# instance is COMPLETED. Each instance: turn 1 schedules an activity, the activity's
# completion feeds turn 2, which completes it. Every step taken is printed as JSON.
WORKER = textwrap.dedent("""
    import asyncio, json, os, random, sys, time
    from duroxy.history import ActivityCompleted, OrchestrationCompleted
    from duroxy.providers.sqlite import SqliteProvider
    from duroxy.testing.provider_suite.support import (
        activity_completion, commit, scheduled, started, work)

    path, go, total, me = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

    def log(step, iid):
        print(json.dumps([step, iid]), flush=True)

    async def main():
        store = SqliteProvider(path)
        await store.get_instance("warm-up")  # open and migrate before the start line
        print("ready", flush=True)
        while not os.path.exists(go):
            await asyncio.sleep(0.005)
        while True:
            did = False
            for item in await store.fetch_orchestration_items(30.0, random.randint(1, 4)):
                did = True
                iid = item.instance_id
                kinds = [m.message.event.kind for m in item.messages]
                if kinds == ["OrchestrationStarted"]:
                    await store.ack_orchestration_item(item.lock_token, commit(
                        started(), scheduled(2), activities=[work(iid, 2, input=f'"{me}"')]))
                    log("turn1", iid)
                elif kinds == ["ActivityCompleted"]:
                    ev = item.messages[0].message.event
                    await store.ack_orchestration_item(item.lock_token, commit(
                        ActivityCompleted(event_id=3, source_event_id=2, result=ev.result),
                        OrchestrationCompleted(event_id=4, output=ev.result),
                        state="COMPLETED", output=ev.result))
                    log("turn2", iid)
                else:
                    raise AssertionError(f"unexpected messages {kinds} for {iid}")
            for act in await store.fetch_activity_items(30.0, random.randint(1, 4)):
                did = True
                await store.ack_activity(
                    act.lock_token, activity_completion(act.work, json.dumps(me)))
                log("activity", act.work.instance_id)
            if not did:
                done = await store.list_instances(state="COMPLETED", limit=total + 1)
                if len(done) == total:
                    break
                await asyncio.sleep(0.002)
        await store.close()

    asyncio.run(main())
""")


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


async def test_two_processes_consume_every_message_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    go = tmp_path / "go"
    store = SqliteProvider(path)
    ids = [f"proc-{n:03d}" for n in range(INSTANCES)]
    for iid in ids:
        await create(store, iid)
    procs = [_spawn(WORKER, str(path), str(go), str(INSTANCES), name) for name in ("a", "b")]
    try:
        for p in procs:  # both have opened the file before the work starts
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        go.touch()
        outs = [p.communicate(timeout=100) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "locked" not in err and "busy" not in err, err
    steps = [[tuple(json.loads(line)) for line in out.splitlines()] for out, _ in outs]
    counts = Counter(s for per_proc in steps for s in per_proc)
    expected = {(kind, iid) for iid in ids for kind in ("turn1", "activity", "turn2")}
    assert set(counts) == expected
    assert max(counts.values()) == 1  # nothing was consumed twice
    assert all(per_proc for per_proc in steps), "both processes must have taken part"
    for iid in ids:
        rec = await store.get_instance(iid)
        assert rec is not None and (rec.state, rec.history_len) == ("COMPLETED", 4)
        assert rec.output in ('"a"', '"b"')
    conn = sqlite3.connect(path)
    try:
        for table in ("orchestrator_queue", "activity_queue", "instance_locks"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
        assert conn.execute("SELECT count(*) FROM history").fetchone() == (4 * INSTANCES,)
    finally:
        conn.close()
    await store.close()


# A process that commits a turn, says so, then keeps writing until it is killed.
CRASHER = textwrap.dedent("""
    import asyncio, sys
    from duroxy.providers.sqlite import SqliteProvider
    from duroxy.testing.provider_suite.support import (
        commit, scheduled, start_message, started, work)

    async def main():
        store = SqliteProvider(sys.argv[1])
        await store.create_instance(start_message("crash-1"))
        (item,) = await store.fetch_orchestration_items(60.0)
        await store.ack_orchestration_item(item.lock_token, commit(
            started(), scheduled(2), activities=[work("crash-1", 2)]))
        print("acked", flush=True)
        n = 0
        while True:  # the kill lands in the middle of these
            await asyncio.gather(*(store.create_instance(start_message(f"more-{n}-{k}"))
                                   for k in range(8)))
            n += 1

    asyncio.run(main())
""")


async def test_acknowledged_commit_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    with _spawn(CRASHER, str(path)) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            assert line == "acked", proc.stderr.read() if proc.stderr else line
            await asyncio.sleep(0.2)  # let it get busy with further commits
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == -signal.SIGKILL
    t0 = time.monotonic()
    store = SqliteProvider(path)
    rec = await store.get_instance("crash-1")
    assert rec is not None and (rec.state, rec.history_len) == ("RUNNING", 2)
    assert [e.event_id for e in await store.read_history("crash-1")] == [1, 2]
    (act,) = await store.fetch_activity_items(60.0)
    assert (act.work.instance_id, act.work.event_id) == ("crash-1", 2)
    assert await store.fetch_orchestration_items(60.0, limit=1) != []  # the later starts
    await store.close()
    assert time.monotonic() - t0 < 10
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        # every create that survived is whole: its record and its start message
        records = conn.execute(
            "SELECT count(*) FROM instances WHERE instance_id LIKE 'more-%'").fetchone()[0]
        messages = conn.execute(
            "SELECT count(*) FROM orchestrator_queue WHERE instance_id LIKE 'more-%'"
        ).fetchone()[0]
        assert records > 0 and records == messages
    finally:
        conn.close()

"""The command line's additions of API.md section 10 (``enqueue``, ``kv``, ``prune``,
``tree``, ``stats`` and ``list`` paging), run in this process against a SQLite store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from duroxy import (
    ActivityRegistry,
    Client,
    OrchestrationContext,
    OrchestrationRegistry,
    OrchestrationState,
    Runtime,
)
from duroxy.cli import main
from duroxy.providers.sqlite import SqliteProvider


async def inbox(ctx: OrchestrationContext, rounds: int) -> list[Any]:
    got = await ctx.dequeue_event("inbox")
    ctx.set_kv_value("last", got)
    ctx.set_kv_value("rounds", rounds)
    if rounds < 2:
        ctx.continue_as_new(rounds + 1)
    kids = [ctx.schedule_sub_orchestration("kid", i, instance_id=f"{ctx.instance_id}-k{i}")
            for i in range(2)]
    return await ctx.join(kids)


async def kid(ctx: OrchestrationContext, i: int) -> int:
    return i


REGISTRIES = (ActivityRegistry.builder().build(),
              OrchestrationRegistry.builder().register("inbox", inbox)
              .register("kid", kid).build())


def on_store(path: Path, fn: Callable[[Client], Coroutine[Any, Any, Any]]) -> Any:
    async def run() -> Any:
        store = SqliteProvider(path)
        try:
            async with await Runtime.start(store, *REGISTRIES):
                return await fn(Client(store))
        finally:
            await store.close()

    return asyncio.run(run())


def cli(capsys: pytest.CaptureFixture[str], path: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--store", f"sqlite:///{path}", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_enqueue_kv_prune_tree_stats_and_list_pages(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cli.db"

    async def begin(client: Client) -> None:
        await client.start_orchestration("chat", "inbox", 0)
        for n in range(3):
            await client.start_orchestration(f"other-{n}", "inbox", 5)

    on_store(path, begin)
    for n in range(3):
        code, out, _ = cli(capsys, path, "enqueue", "chat", "inbox", json.dumps({"n": n}))
        assert code == 0 and "enqueued to queue 'inbox' of chat" in out
    code, out, _ = cli(capsys, path, "enqueue", "chat", "inbox", "--json")
    assert code == 0 and json.loads(out) == {"instance_id": "chat", "queue": "inbox",
                                             "enqueued": True}
    assert cli(capsys, path, "enqueue", "nobody", "inbox")[0] == 3
    assert cli(capsys, path, "enqueue", "chat", "inbox", "{bad")[0] == 2

    async def finish(client: Client) -> None:
        status = await client.wait_for_orchestration("chat", 30)
        assert status.state is OrchestrationState.COMPLETED, status.error

    on_store(path, finish)

    code, out, _ = cli(capsys, path, "kv", "chat")
    assert code == 0 and out.splitlines() == ['last    {"n":2}', "rounds  2"]
    code, out, _ = cli(capsys, path, "kv", "chat", "rounds", "--json")
    assert json.loads(out) == {"instance_id": "chat", "key": "rounds", "value": 2}
    code, out, err = cli(capsys, path, "kv", "chat", "absent")
    assert code == 3 and "no KV key 'absent'" in err
    assert cli(capsys, path, "kv", "nobody")[0] == 3

    code, out, _ = cli(capsys, path, "stats", "chat", "--json")
    stats = json.loads(out)
    assert stats["execution_count"] == 3 and stats["kv_user_key_count"] == 2
    code, out, _ = cli(capsys, path, "stats", "chat")
    assert code == 0 and out.splitlines()[-1].split() == ["executions", "3", "stored"]
    assert cli(capsys, path, "stats", "nobody")[0] == 3

    code, out, _ = cli(capsys, path, "tree", "chat")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == [
        "chat", "chat-k0", "chat-k1"]
    assert out.splitlines()[1].startswith("  chat-k0  kid@1.0.0  COMPLETED")
    code, out, _ = cli(capsys, path, "tree", "chat", "--json")
    assert json.loads(out)["parent_of"] == {"chat-k0": "chat", "chat-k1": "chat"}

    code, out, _ = cli(capsys, path, "prune", "chat", "--keep-last", "2")
    assert code == 0 and "pruned 1 execution(s)" in out and "executions left: 2, 3" in out
    code, out, _ = cli(capsys, path, "prune", "chat", "--json")
    assert json.loads(out)["executions_deleted"] == 1
    assert cli(capsys, path, "prune", "chat", "--keep-last", "-1")[0] == 2

    # list: every match without --limit; pages with a token when more match
    code, out, _ = cli(capsys, path, "list", "--json")
    everything = [i["instance_id"] for i in json.loads(out)]
    assert len(everything) == 6 and everything[0] == "chat"
    code, out, _ = cli(capsys, path, "list", "--limit", "4")
    token = out.splitlines()[-1].split("--page-token ")[1]
    assert len(out.splitlines()) == 1 + 4 + 1
    code, out, _ = cli(capsys, path, "list", "--limit", "4", "--page-token", token, "--json")
    page = json.loads(out)
    assert [i["instance_id"] for i in page["items"]] == everything[4:]
    assert page["next_page_token"] is None
    code, out, _ = cli(capsys, path, "list", "--parent", "chat", "--json")
    assert [i["instance_id"] for i in json.loads(out)] == ["chat-k0", "chat-k1"]
    code, _, err = cli(capsys, path, "list", "--state", "RUNNING", "--limit", "4",
                       "--page-token", token)
    assert code == 2 and "other filters" in err

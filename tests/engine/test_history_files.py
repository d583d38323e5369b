"""History files (API.md section 10, "Export and import of histories"):
``Client.export_history``, ``ExecutionHistory``, ``dump_histories``/``load_histories``,
and the CLI's ``history --export`` and ``export``."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from duroxy import (
    ActivityContext,
    ActivityRegistry,
    Client,
    InstanceNotFound,
    OrchestrationContext,
    OrchestrationRegistry,
    PayloadError,
    Runtime,
)
from duroxy.cli import main
from duroxy.history import (
    ActivityCompleted,
    EventRaised,
    ExecutionHistory,
    OrchestrationStarted,
    dump_histories,
    encode_event,
    load_histories,
)
from duroxy.providers.sqlite import SqliteProvider
from duroxy.testing import OrchestrationEnvironment

# Payload texts as a store may hold them: not in the codec's own spelling.
ODD_INPUT = '{ "b": 1,  "a": [1.50, 12345678901234567890] , "é": "\\u00e9\\n" }'


def sample(instance_id: str = "order-42", execution_id: int = 1) -> ExecutionHistory:
    return ExecutionHistory(instance_id, execution_id, "create", "1.0.2", (
        OrchestrationStarted(event_id=1, ts=1_700_000_000_000, name="create",
                             version="1.0.2", input=ODD_INPUT,
                             trace_context={"traceparent": "00-1-2-01"}),
        EventRaised(event_id=2, ts=1_700_000_000_005, name="go", data="[ 1 ,2 ]"),
        ActivityCompleted(event_id=3, ts=1_700_000_000_009, source_event_id=2,
                          result='"\\ud800"'),
    ))


def dumped(histories: list[ExecutionHistory]) -> str:
    buf = io.StringIO()
    dump_histories(histories, buf)
    return buf.getvalue()


# ================================================================ the format
def test_a_file_reads_back_equal_and_writes_back_byte_exact() -> None:
    histories = [sample(), sample("order-43", 2)]
    text = dumped(histories)
    data = json.loads(text)
    assert (data["format"], data["format_version"]) == ("duroxy-history", 1)
    assert [h["instance_id"] for h in data["histories"]] == ["order-42", "order-43"]
    first = data["histories"][0]
    assert {k: first[k] for k in ("execution_id", "name", "version")} == {
        "execution_id": 1, "name": "create", "version": "1.0.2"}
    # events in their stored wire form, payloads copied as stored
    assert first["events"][0]["k"] == "OrchestrationStarted"
    assert first["events"][0]["input"] == ODD_INPUT
    assert [json.dumps(e, ensure_ascii=False, separators=(",", ":"))
            for e in first["events"]] == [encode_event(e) for e in histories[0].events]
    back = load_histories(io.StringIO(text))
    assert back == histories and isinstance(back[0].events, tuple)
    assert back[0].events[0].input == ODD_INPUT  # type: ignore[attr-defined]
    assert back[0].events[0].trace_context == {"traceparent": "00-1-2-01"}  # type: ignore[attr-defined]
    assert dumped(back) == text
    # one event per line: a file kept with the tests diffs line by line
    # (the head, then per history its head, its 3 events and its end, then the end)
    assert len(text.splitlines()) == 1 + 2 * (1 + 3 + 1) + 1
    assert load_histories(io.BytesIO(text.encode("utf-8"))) == histories


def test_one_history_to_json_and_back() -> None:
    h = sample()
    text = h.to_json()
    assert load_histories(io.StringIO(text)) == [h]
    assert ExecutionHistory.from_json(text) == h
    # one element of a file's histories is read too
    element = json.loads(text)["histories"][0]
    assert ExecutionHistory.from_json(json.dumps(element)) == h
    with pytest.raises(PayloadError, match="2 histories"):
        ExecutionHistory.from_json(dumped([h, h]))
    assert h.started is not None and h.started.name == "create"
    listed = ExecutionHistory("i", 1, "n", None, list(h.events))  # type: ignore[arg-type]
    assert listed.events == h.events  # (a list given is kept as a tuple)


def test_readers_ignore_unknown_top_level_keys_and_take_older_versions() -> None:
    data = json.loads(dumped([sample()]))
    data["exported_by"] = "a newer duroxy"
    data["stats"] = {"n": 1}
    assert load_histories(io.StringIO(json.dumps(data))) == [sample()]


@pytest.mark.parametrize(("change", "needle"), [
    ({"format_version": 2}, "newer than this duroxy reads"),
    ({"format": "something-else"}, "not a duroxy history file"),
    ({"format_version": "1"}, "format_version"),
    ({"histories": {}}, "list under 'histories'"),
])
def test_a_newer_version_or_another_format_is_refused(change: dict[str, Any],
                                                       needle: str) -> None:
    data = json.loads(dumped([sample()]))
    data.update(change)
    with pytest.raises(PayloadError, match=needle):
        load_histories(io.StringIO(json.dumps(data)))


@pytest.mark.parametrize(("text", "needle"), [
    ("not json", "must be JSON"),
    ("[1]", "JSON object"),
])
def test_malformed_files_are_refused(text: str, needle: str) -> None:
    with pytest.raises(PayloadError, match=needle):
        load_histories(io.StringIO(text))


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("instance_id", "", "instance_id"),
    ("execution_id", 0, "execution_id"),
    ("name", None, "name"),
    ("version", 3, "version"),
    ("events", "x", "events"),
])
def test_a_malformed_history_is_named(field: str, value: Any, needle: str) -> None:
    data = json.loads(dumped([sample()]))
    data["histories"][0][field] = value
    with pytest.raises(PayloadError, match=f"histories\\[0\\].*{needle}"):
        load_histories(io.StringIO(json.dumps(data)))


def test_an_unknown_event_kind_is_named_with_its_place() -> None:
    data = json.loads(dumped([sample()]))
    data["histories"][0]["events"][1]["k"] = "FromTheFuture"
    with pytest.raises(PayloadError, match=r"order-42.*events\[1\].*FromTheFuture"):
        load_histories(io.StringIO(json.dumps(data)))


def test_dump_takes_execution_histories_only() -> None:
    with pytest.raises(TypeError, match="ExecutionHistory"):
        dump_histories([{"instance_id": "x"}], io.StringIO())  # type: ignore[list-item]


# ================================================================ export from a store
async def hello(ctx: ActivityContext, name: str) -> str:
    return f"hello {name}"


async def greet(ctx: OrchestrationContext, name: str) -> str:
    out = await ctx.schedule_activity("hello", name, output_type=str)
    await ctx.schedule_timer(timedelta(hours=1))
    return out


async def loop_twice(ctx: OrchestrationContext, n: int) -> int:
    await ctx.schedule_activity("hello", str(n))
    if n < 2:
        ctx.continue_as_new(n + 1, version="2.0.0")
    return n


ACTIVITIES = ActivityRegistry.builder().register("hello", hello).build()
ORCHESTRATIONS = (OrchestrationRegistry.builder().register("greet", greet)
                  .register("loop", loop_twice)
                  .register_versioned("loop", "2.0.0", loop_twice).build())


@pytest.fixture
async def env() -> AsyncIterator[OrchestrationEnvironment]:
    async with OrchestrationEnvironment(ACTIVITIES, ORCHESTRATIONS, store="sqlite") as e:
        yield e


async def test_export_history_gives_the_latest_or_the_given_execution(
        env: OrchestrationEnvironment) -> None:
    client = env.client
    await client.start_orchestration_versioned("l-1", "loop", "1.0.0", 1)
    await client.wait_for_orchestration("l-1", timeout=5)
    latest = await client.export_history("l-1")
    assert (latest.instance_id, latest.execution_id, latest.name, latest.version) == (
        "l-1", 2, "loop", "2.0.0")
    assert list(latest.events) == await client.read_history("l-1")
    first = await client.export_history("l-1", 1)
    assert (first.execution_id, first.version) == (1, "1.0.0")  # what that execution ran
    assert first.events[-1].kind == "OrchestrationContinuedAsNew"
    with pytest.raises(KeyError, match="no execution 7"):
        await client.export_history("l-1", 7)
    with pytest.raises(InstanceNotFound):
        await client.export_history("nobody")
    with pytest.raises(ValueError):
        await client.export_history("l-1", 0)


async def test_an_instance_not_started_yet_exports_empty() -> None:
    store = SqliteProvider.in_memory()
    try:
        client = Client(store)
        await client.start_orchestration("p-1", "greet", "x")
        h = await client.export_history("p-1")
        assert (h.execution_id, h.name, h.version, h.events) == (1, "greet", None, ())
    finally:
        await store.close()


async def test_export_from_sqlite_is_byte_exact_with_what_it_stores(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    store = SqliteProvider(str(path))
    client = Client(store)
    try:
        async with await Runtime.start(store, ACTIVITIES, ORCHESTRATIONS):
            await client.start_orchestration("g-1", "greet", "wörld")
            await client.raise_event("g-1", "ignored", {"x": [1, 2]})
            # the 1-hour timer keeps it running: exported mid-way
            while len(await client.read_history("g-1")) < 5:
                await asyncio.sleep(0.01)
        history = await client.export_history("g-1")
    finally:
        await store.close()
    file = tmp_path / "h.json"
    with open(file, "w", encoding="utf-8") as fh:
        dump_histories([history], fh)
    with open(file, encoding="utf-8") as fh:
        [back] = load_histories(fh)
    with closing(sqlite3.connect(path)) as conn:
        rows = [r[0] for r in conn.execute(
            "SELECT event_json FROM history WHERE instance_id = 'g-1' ORDER BY event_id")]
    assert [encode_event(e) for e in back.events] == rows
    assert back == history


# ================================================================ the command line
async def _made_store(path: Path) -> None:
    store = SqliteProvider(str(path))
    client = Client(store)
    try:
        async with await Runtime.start(store, ACTIVITIES, ORCHESTRATIONS):
            await client.start_orchestration_versioned("l-1", "loop", "1.0.0", 1)
            await client.wait_for_orchestration("l-1", timeout=10)
            await client.start_orchestration("g-1", "greet", "a")
            await client.start_orchestration("g-2", "greet", "b")
            for iid in ("g-1", "g-2"):  # (their turns run: each waits on its timer)
                while len(await client.read_history(iid)) < 4:
                    await asyncio.sleep(0.01)
    finally:
        await store.close()


def test_cli_history_export_and_export(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(_made_store(tmp_path / "cli.db"))
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    one = tmp_path / "one.json"
    assert main(["--store", url, "history", "l-1", "--export", str(one)]) == 0
    assert "wrote 1 history" in capsys.readouterr().out
    with open(one, encoding="utf-8") as fh:
        [h] = load_histories(fh)
    assert (h.instance_id, h.execution_id) == ("l-1", 2)
    both = tmp_path / "both.json"
    assert main(["--store", url, "history", "l-1", "--export", str(both),
                 "--all-executions", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["histories"] == 2
    with open(both, encoding="utf-8") as fh:
        assert [x.execution_id for x in load_histories(fh)] == [1, 2]
    assert main(["--store", url, "history", "l-1", "--all-executions"]) == 2
    capsys.readouterr()
    # many instances, filtered; '-' writes the file to standard output
    assert main(["--store", url, "export", "-", "--name", "greet"]) == 0
    out = capsys.readouterr().out
    assert [x.instance_id for x in load_histories(io.StringIO(out))] == ["g-1", "g-2"]
    assert main(["--store", url, "export", str(tmp_path / "c.json"), "--state", "COMPLETED",
                 "--all-executions"]) == 0
    capsys.readouterr()
    with open(tmp_path / "c.json", encoding="utf-8") as fh:
        assert [(x.instance_id, x.execution_id) for x in load_histories(fh)] == [
            ("l-1", 1), ("l-1", 2)]
    assert main(["--store", url, "export", str(tmp_path / "d.json"), "--limit", "1"]) == 0
    with open(tmp_path / "d.json", encoding="utf-8") as fh:
        assert len(load_histories(fh)) == 1
    assert main(["--store", url, "history", "nobody", "--export", str(tmp_path / "n")]) == 3
    assert not (tmp_path / "n").exists() and not (tmp_path / "n.part").exists()

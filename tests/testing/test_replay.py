"""The ``Replayer`` (API.md section 11, "Replaying histories against new code"): recorded
histories replayed against changed code, with no store, exactly where a runtime would
fail the instance; and ``duroxy replay``."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from duroxy import (
    ActivityContext,
    ActivityRegistry,
    Client,
    NondeterminismError,
    NotRegistered,
    OrchestrationContext,
    OrchestrationRegistry,
    OrchestrationState,
    PayloadError,
    Runtime,
    connect,
)
from duroxy.cli import main
from duroxy.history import ExecutionHistory, dump_histories, load_histories
from duroxy.testing import OrchestrationEnvironment, Replayer, ReplayReport

calls: list[str] = []
gate = asyncio.Event()


# ---------------------------------------------------------------- activities
async def act(ctx: ActivityContext, what: str) -> str:
    calls.append(what)
    return what.upper()


async def held(ctx: ActivityContext, what: str) -> str:
    calls.append(what)
    await gate.wait()
    return what


ACTIVITIES = ActivityRegistry.builder().register("act", act).register("held", held).build()


# ---------------------------------------------------------------- the recorded code
async def order(ctx: OrchestrationContext, item: str) -> dict[str, Any]:
    reserved = await ctx.schedule_activity("act", f"reserve {item}")
    charged = await ctx.schedule_activity("act", f"charge {item}")
    await ctx.schedule_timer(timedelta(days=1))
    shipped = await ctx.schedule_activity("act", f"ship {item}")
    return {"out": [reserved, charged, shipped]}


async def approval(ctx: OrchestrationContext, item: str) -> Any:
    await ctx.schedule_activity("act", f"ask {item}")
    answer = await ctx.schedule_wait("answer")
    return await ctx.schedule_activity("act", f"{answer} {item}")


async def counter(ctx: OrchestrationContext, _: Any) -> Any:
    n = ctx.get_kv_value("n", 0)
    await ctx.schedule_activity("act", "first" if n == 0 else f"again {n}")
    if n < 2:
        ctx.set_kv_value("n", n + 1)
        ctx.continue_as_new(None)
    return n


async def hop(ctx: OrchestrationContext, _: Any) -> Any:
    await ctx.schedule_activity("act", "hop")
    ctx.continue_as_new(None, version="9.9.9")


async def pending(ctx: OrchestrationContext, _: Any) -> Any:
    return await ctx.schedule_activity("held", "slow")


def registry(**fns: Callable[..., Any]) -> OrchestrationRegistry:
    builder = OrchestrationRegistry.builder()
    for name, fn in fns.items():
        builder.register(name, fn)
    return builder.build()


RECORDED = registry(order=order, approval=approval, counter=counter, hop=hop,
                    pending=pending)
#: ``duroxy replay test_replay:REGISTRIES``
REGISTRIES = (ACTIVITIES, RECORDED)


# ---------------------------------------------------------------- changed code
async def reordered(ctx: OrchestrationContext, item: str) -> dict[str, Any]:
    charged = await ctx.schedule_activity("act", f"charge {item}")
    reserved = await ctx.schedule_activity("act", f"reserve {item}")
    await ctx.schedule_timer(timedelta(days=1))
    shipped = await ctx.schedule_activity("act", f"ship {item}")
    return {"out": [reserved, charged, shipped]}


async def new_activity(ctx: OrchestrationContext, item: str) -> dict[str, Any]:
    reserved = await ctx.schedule_activity("act", f"reserve {item}")
    await ctx.schedule_activity("act", f"fraud check {item}")
    charged = await ctx.schedule_activity("act", f"charge {item}")
    await ctx.schedule_timer(timedelta(days=1))
    shipped = await ctx.schedule_activity("act", f"ship {item}")
    return {"out": [reserved, charged, shipped]}


async def timer_first(ctx: OrchestrationContext, item: str) -> dict[str, Any]:
    await ctx.schedule_timer(timedelta(hours=1))
    return await order(ctx, item)


async def no_timer(ctx: OrchestrationContext, item: str) -> dict[str, Any]:
    reserved = await ctx.schedule_activity("act", f"reserve {item}")
    charged = await ctx.schedule_activity("act", f"charge {item}")
    shipped = await ctx.schedule_activity("act", f"ship {item}")
    return {"out": [reserved, charged, shipped]}


async def longer_timer(ctx: OrchestrationContext, item: str) -> dict[str, Any]:
    reserved = await ctx.schedule_activity("act", f"reserve {item}")
    charged = await ctx.schedule_activity("act", f"charge {item}")
    await ctx.schedule_timer(timedelta(days=3))  # a timer's delay is not matched
    shipped = await ctx.schedule_activity("act", f"ship {item}")
    return {"out": [reserved, charged, shipped]}


async def fails_at_the_end(ctx: OrchestrationContext, item: str) -> dict[str, Any]:
    await order(ctx, item)
    raise ValueError("no longer ships")


async def other_output(ctx: OrchestrationContext, item: str) -> dict[str, Any]:
    await order(ctx, item)
    return {"something": "else"}


async def approval_changed_after_the_wait(ctx: OrchestrationContext, item: str) -> Any:
    await ctx.schedule_activity("act", f"ask {item}")
    answer = await ctx.schedule_wait("answer")
    await ctx.schedule_timer(1)
    return answer


async def approval_changed_before_the_wait(ctx: OrchestrationContext, item: str) -> Any:
    await ctx.schedule_activity("act", f"ask twice {item}")
    return await ctx.schedule_wait("answer")


async def pending_and_more(ctx: OrchestrationContext, _: Any) -> Any:
    first = ctx.schedule_activity("held", "slow")
    second = ctx.schedule_activity("act", "audit")  # past the recorded history: live
    ctx.trace_info("the code runs past its history")
    return await ctx.join(first, second)


# ---------------------------------------------------------------- recording
async def record(tmp_path: Path) -> Path:
    """Histories recorded on SQLite and exported to a file: two finished orders, an
    approval still waiting, three executions of a counter, a hop to a version nobody
    registered (failed not_registered by the runtime)."""
    calls.clear()
    async with OrchestrationEnvironment(ACTIVITIES, RECORDED, store="sqlite") as env:
        c = env.client
        for iid, name, inp in (("o-1", "order", "book"), ("o-2", "order", "pen"),
                               ("a-1", "approval", "trip"), ("c-1", "counter", None),
                               ("h-1", "hop", None)):
            await c.start_orchestration(iid, name, inp)
        for iid in ("o-1", "o-2", "c-1", "h-1"):
            await c.wait_for_orchestration(iid, timeout=10)
        while (await c.get_orchestration_status("a-1")).state is not OrchestrationState.RUNNING \
                or len(await c.read_history("a-1")) < 4:
            await asyncio.sleep(0.01)
        histories = [await c.export_history(i) for i in ("o-1", "o-2", "a-1")]
        histories += [await c.export_history("c-1", e) for e in (1, 2, 3)]
        histories.append(await c.export_history("h-1"))
    path = tmp_path / "histories.json"
    with open(path, "w", encoding="utf-8") as fh:
        dump_histories(histories, fh)
    return path


@pytest.fixture
async def recorded(tmp_path: Path) -> Path:
    return await record(tmp_path)


def replayer(**fns: Callable[..., Any]) -> Replayer:
    return Replayer(registry(**{**{"order": order, "approval": approval,
                                   "counter": counter, "hop": hop}, **fns}),
                    activities=ACTIVITIES)


# ================================================================ the rules
async def test_unchanged_code_replays_every_history_from_a_file(recorded: Path) -> None:
    done = len(calls)
    # (hop's second execution ran version 9.9.9, which the runtime had not)
    report = await Replayer(
        OrchestrationRegistry.builder().register("order", order)
        .register("approval", approval).register("counter", counter).register("hop", hop)
        .register_versioned("hop", "9.9.9", hop).build(), activities=ACTIVITIES,
    ).replay(recorded)
    assert report.ok, str(report)
    assert [(r.instance_id, r.execution_id) for r in report.results] == [
        ("o-1", 1), ("o-2", 1), ("a-1", 1), ("c-1", 1), ("c-1", 2), ("c-1", 3), ("h-1", 2)]
    assert all(r.kind is None and r.event_id is None and r.message == ""
               for r in report.results)
    assert len(calls) == done  # nothing ran
    assert str(report) == ""  # one line per failure: none


@pytest.mark.parametrize(("fn", "at", "recorded_side", "code_side"), [
    (reordered, 2, "activity 'act'",
     """with a different input '"charge book"' (history: '"reserve book"')"""),
    (new_activity, 4, "activity 'act'",
     """input '"fraud check book"' (history: '"charge book"')"""),
    (timer_first, 2, "activity 'act'", "code scheduled timer"),
    (no_timer, 6, "timer", "code scheduled activity 'act'"),
], ids=["reordered", "new activity", "timer added", "timer removed"])
async def test_changed_code_is_caught_with_both_sides_named(
        recorded: Path, fn: Callable[..., Any], at: int, recorded_side: str,
        code_side: str) -> None:
    with open(recorded, encoding="utf-8") as fh:
        history = load_histories(fh)[0]
    result = await replayer(order=fn).replay_history(history, raise_on_failure=False)
    assert not result.ok and result.kind == "nondeterminism"
    assert result.event_id == at
    assert (result.instance_id, result.execution_id, result.name, result.version) == (
        "o-1", 1, "order", "1.0.0")
    assert f"expected {recorded_side} at event {at}" in result.message
    assert code_side in result.message
    assert "nondeterministic orchestration 'order'" in result.message
    with pytest.raises(NondeterminismError, match=f"at event {at}"):
        await replayer(order=fn).replay_history(history)


async def test_a_different_outcome_kind_fails_a_different_output_does_not(
        recorded: Path) -> None:
    with open(recorded, encoding="utf-8") as fh:
        history = load_histories(fh)[0]
    result = await replayer(order=fails_at_the_end).replay_history(
        history, raise_on_failure=False)
    assert result.kind == "nondeterminism" and result.event_id == len(history.events)
    assert "history has OrchestrationCompleted" in result.message
    assert "code ended with OrchestrationFailed" in result.message
    assert (await replayer(order=other_output).replay_history(history)).ok
    assert (await replayer(order=longer_timer).replay_history(history)).ok


async def test_a_history_that_ends_mid_way_passes_if_consistent_so_far(
        recorded: Path) -> None:
    with open(recorded, encoding="utf-8") as fh:
        waiting = load_histories(fh)[2]
    assert waiting.instance_id == "a-1" and waiting.events[-1].kind == "EventSubscribed"
    assert (await replayer().replay_history(waiting)).ok
    assert (await replayer(approval=approval_changed_after_the_wait)
            .replay_history(waiting)).ok
    failed = await replayer(approval=approval_changed_before_the_wait).replay_history(
        waiting, raise_on_failure=False)
    assert failed.kind == "nondeterminism" and failed.event_id == 2


async def test_each_execution_replays_with_its_recorded_version(recorded: Path) -> None:
    with open(recorded, encoding="utf-8") as fh:
        history = load_histories(fh)[0]
    # the new code is the latest version; the history's own version still replays
    both = Replayer(OrchestrationRegistry.builder().register("order", order)
                    .register_versioned("order", "2.0.0", reordered).build())
    assert (await both.replay_history(history)).ok
    only_new = Replayer(OrchestrationRegistry.builder()
                        .register_versioned("order", "2.0.0", reordered).build())
    result = await only_new.replay_history(history, raise_on_failure=False)
    assert (result.ok, result.kind, result.event_id) == (False, "not_registered", 1)
    assert "version '1.0.0' is not registered" in result.message
    with pytest.raises(NotRegistered):
        await only_new.replay_history(history)


async def test_an_ending_the_runtime_imposed_is_not_the_codes(recorded: Path) -> None:
    with open(recorded, encoding="utf-8") as fh:
        hop2 = load_histories(fh)[-1]
    assert hop2.version == "9.9.9" and hop2.events[-1].kind == "OrchestrationFailed"
    with_it = Replayer(OrchestrationRegistry.builder().register("hop", hop)
                       .register_versioned("hop", "9.9.9", hop).build())
    assert (await with_it.replay_history(hop2)).ok
    result = await replayer().replay_history(hop2, raise_on_failure=False)
    assert result.kind == "not_registered"


async def test_code_past_the_history_runs_nothing_and_logs_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    calls.clear()
    gate.clear()
    async with OrchestrationEnvironment(ACTIVITIES, RECORDED) as env:
        await env.client.start_orchestration("p-1", "pending")
        while "slow" not in calls:
            await asyncio.sleep(0.005)
        history = await env.client.export_history("p-1")
        gate.set()
    assert [e.kind for e in history.events] == ["OrchestrationStarted", "ActivityScheduled"]
    caplog.set_level(logging.DEBUG, logger="duroxy")
    done = len(calls)
    result = await replayer(pending=pending_and_more).replay_history(history)
    assert result.ok
    assert len(calls) == done
    assert not [r for r in caplog.records if "runs past its history" in r.getMessage()]


async def test_kv_state_is_carried_from_execution_to_execution(recorded: Path) -> None:
    with open(recorded, encoding="utf-8") as fh:
        everything = load_histories(fh)
    counters = [h for h in everything if h.instance_id == "c-1"]
    assert (await replayer().replay(counters)).ok
    # alone, execution 3 does not know the KV execution 2 left: it takes another branch
    alone = await replayer().replay(counters[2:])
    assert not alone.ok and alone.failures[0].execution_id == 3


async def test_replay_takes_iterables_async_iterables_files_and_directories(
        recorded: Path, tmp_path: Path) -> None:
    with open(recorded, encoding="utf-8") as fh:
        histories = load_histories(fh)[:3]

    async def stream() -> AsyncIterator[ExecutionHistory]:
        for h in histories:
            yield h

    r = replayer(order=reordered)
    for source in (histories, iter(histories), stream()):
        report = await r.replay(source)
        assert [x.ok for x in report.results] == [False, False, True]
    folder = tmp_path / "dir"
    folder.mkdir()
    for n, h in enumerate(histories):
        (folder / f"{n}.json").write_text(h.to_json(), encoding="utf-8")
    (folder / "README.md").write_text("not a history", encoding="utf-8")
    report = await r.replay(folder)
    assert [x.instance_id for x in report.results] == ["o-1", "o-2", "a-1"]
    assert len(report.failures) == 2 and not report.ok
    lines = str(report).splitlines()
    assert len(lines) == 2 and lines[0].startswith("o-1 (execution 1, order@1.0.0): "
                                                   "nondeterminism at event 2: ")
    with pytest.raises(NondeterminismError):
        await r.replay(histories, raise_on_failure=True)
    assert (await r.replay([])).ok


async def test_an_undecodable_history_is_a_result_the_others_replay(
        recorded: Path, tmp_path: Path) -> None:
    with open(recorded, encoding="utf-8") as fh:
        data = json.load(fh)
    data["histories"][1]["events"][1]["k"] = "FromTheFuture"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data), encoding="utf-8")
    report = await replayer().replay(bad)
    kinds = [(x.instance_id, x.kind) for x in report.results[:3]]
    assert kinds == [("o-1", None), ("o-2", "undecodable"), ("a-1", None)]
    assert "FromTheFuture" in report.results[1].message
    with pytest.raises(PayloadError):
        await replayer().replay(bad, raise_on_failure=True)
    data["format_version"] = 99
    bad.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(PayloadError, match="newer"):
        await replayer().replay(bad)


async def test_replay_store_reads_only(tmp_path: Path) -> None:
    calls.clear()
    db = tmp_path / "app.db"
    url = f"sqlite:///{db}"
    store = connect(url)
    client = Client(store)
    try:
        async with await Runtime.start(store, ACTIVITIES, RECORDED):
            await client.start_orchestration("c-1", "counter")
            await client.start_orchestration("o-1", "order", "x")
            await client.wait_for_orchestration("c-1", timeout=10)
            await client.start_orchestration("a-1", "approval", "y")
            while len(await client.read_history("a-1")) < 4:
                await asyncio.sleep(0.01)
    finally:
        await store.close()
    done = len(calls)
    before = db.read_bytes()
    reader = connect(url, read_only=True)
    try:
        client = Client(reader)
        report = await replayer().replay_store(client)
        # (order o-1 waits on its day-long timer: replayed as it stands)
        assert report.ok, str(report)
        assert [(x.instance_id, x.execution_id) for x in report.results] == [
            ("c-1", 3), ("o-1", 1), ("a-1", 1)]
        report = await replayer().replay_store(client, all_executions=True, name="counter")
        assert [x.execution_id for x in report.results] == [1, 2, 3] and report.ok
        report = await replayer(order=reordered).replay_store(client, state="RUNNING",
                                                              limit=1)
        assert [(x.instance_id, x.ok) for x in report.results] == [("o-1", False)]
        assert (await replayer().replay_store(client, limit=0)).results == ()
    finally:
        await reader.close()
    assert len(calls) == done and db.read_bytes() == before


async def test_a_replayer_needs_registries() -> None:
    with pytest.raises(TypeError, match="OrchestrationRegistry"):
        Replayer(ACTIVITIES)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="activities"):
        Replayer(RECORDED, activities=RECORDED)  # type: ignore[arg-type]
    assert ReplayReport().ok


# ================================================================ the command line
def test_cli_replays_files_and_stores(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = asyncio.run(record(tmp_path))
    with open(path, encoding="utf-8") as fh:
        orders = [h for h in load_histories(fh) if h.name == "order"]
    orders_file = tmp_path / "orders.json"
    with open(orders_file, "w", encoding="utf-8") as fh:
        dump_histories(orders, fh)
    assert main(["replay", "test_replay:REGISTRIES", str(orders_file)]) == 0
    assert "replayed 2 histories: all replayed" in capsys.readouterr().out
    assert main(["replay", "test_replay:CHANGED", str(orders_file), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert (out["ok"], out["replayed"], out["failed"]) == (False, 2, 2)
    assert out["results"][0]["kind"] == "nondeterminism"
    assert out["results"][0]["event_id"] == 2
    assert main(["replay", "test_replay:CHANGED", str(path), "--name", "approval"]) == 0
    capsys.readouterr()
    assert main(["replay", "test_replay:REGISTRIES", str(tmp_path / "missing.json")]) == 2
    assert main(["replay", "no_such_module:X", str(orders_file)]) == 2
    assert main(["replay", "test_replay:REGISTRIES", str(orders_file), "--state",
                 "RUNNING"]) == 2
    # without files: the store (opened read-only); 5 when there is none
    assert main(["--store", f"sqlite:///{tmp_path / 'none.db'}", "replay",
                 "test_replay:REGISTRIES"]) == 5
    capsys.readouterr()


#: ``duroxy replay test_replay:CHANGED``: the orders reordered, the approval unchanged
CHANGED = (ACTIVITIES, registry(order=reordered, approval=approval))

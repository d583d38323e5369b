"""OpenTelemetry (duroxy.otel): one trace per instance tree, the spans of API.md section
12 with their kinds, parents and attributes, none twice after a replay, errors recorded,
metric instruments without instance ids; and nothing of OpenTelemetry without it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the OpenTelemetry SDK is not installed "
                    "(pip install duroxy[otel] opentelemetry-sdk)")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otelapp
from duroxy import (
    ActivityRegistry,
    Client,
    OrchestrationContext,
    OrchestrationRegistry,
    OrchestrationState,
    Runtime,
    RuntimeOptions,
)
from duroxy.history import ActivityScheduled, OrchestrationStarted, SubOrchestrationScheduled
from duroxy.otel import DuroxyInstrumentor
from duroxy.providers.memory import InMemoryProvider
from duroxy.providers.sqlite import SqliteProvider

TESTS_DIR = Path(__file__).resolve().parents[1]
Spans = list[dict[str, Any]]


class Telemetry:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.tracer = self.tracer_provider.get_tracer("tests")

    def spans(self) -> Spans:
        return [otelapp.span_json(s) for s in self.exporter.get_finished_spans()]

    def metrics(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """Instrument name -> [(attributes, value or histogram count)]."""
        data = self.reader.get_metrics_data()
        out: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        assert data is not None
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", getattr(point, "count", None))
                        out.setdefault(metric.name, []).append(
                            (dict(point.attributes or {}), value))
        return out


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    t = Telemetry()
    instrumentor = DuroxyInstrumentor()
    instrumentor.instrument(tracer_provider=t.tracer_provider, meter_provider=t.meter_provider)
    try:
        yield t
    finally:
        instrumentor.uninstrument()
        t.tracer_provider.shutdown()
        t.meter_provider.shutdown()


async def wait_status(client: Client, iid: str, custom: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (await client.get_orchestration_status(iid)).custom_status != custom:
        assert time.monotonic() < deadline, f"{iid} never reached custom status {custom!r}"
        await asyncio.sleep(0.05)


def check_one_trace(spans: Spans, root: dict[str, Any]) -> dict[str, Spans]:
    """The instance tree of ``parent`` (otelapp) is one trace under ``root`` with every
    span of API.md once per schedule call, with its kind, parent and attributes.
    Returns the spans by name."""
    ours = [s for s in spans if s["name"] != root["name"]]
    assert {s["trace_id"] for s in ours} == {root["trace_id"]}
    assert len({s["span_id"] for s in ours}) == len(ours), "a span was exported twice"
    by_name: dict[str, Spans] = {}
    for s in ours:
        by_name.setdefault(s["name"], []).append(s)
    counts = Counter(s["name"] for s in ours)
    # Once per schedule call, whatever the replays: the retried activity once, its
    # attempts three times.
    assert {k: v for k, v in counts.items() if not k.startswith("OrchestrationTurn:")} == {
        "StartOrchestration:parent": 1, "RaiseEvent:go": 1,
        "StartActivity:ok": 2, "StartActivity:flaky": 1, "StartSubOrchestration:child": 1,
        "RunActivity:ok": 2, "RunActivity:flaky": 3}
    assert counts["OrchestrationTurn:parent"] >= 4 and counts["OrchestrationTurn:child"] >= 2

    def one(name: str) -> dict[str, Any]:
        (span,) = by_name[name]
        return span

    start = one("StartOrchestration:parent")
    assert start["kind"] == "PRODUCER" and start["parent_id"] == root["span_id"]
    assert start["attributes"]["duroxy.instance_id"] == "p"
    assert one("RaiseEvent:go")["kind"] == "PRODUCER"
    parent_turns = {s["span_id"] for s in by_name["OrchestrationTurn:parent"]}
    child_turns = {s["span_id"] for s in by_name["OrchestrationTurn:child"]}
    for turn in by_name["OrchestrationTurn:parent"]:
        assert turn["kind"] == "INTERNAL" and turn["parent_id"] == start["span_id"]
        attrs = turn["attributes"]
        assert attrs["duroxy.instance_id"] == "p" and attrs["duroxy.execution_id"] == 1
        assert attrs["duroxy.orchestration.name"] == "parent"
        assert isinstance(attrs["duroxy.turn.replayed"], bool) and attrs["duroxy.worker_id"]
    sub = one("StartSubOrchestration:child")
    assert sub["kind"] == "INTERNAL" and sub["parent_id"] in parent_turns
    for turn in by_name["OrchestrationTurn:child"]:
        assert turn["parent_id"] == sub["span_id"]
        assert turn["attributes"]["duroxy.instance_id"].startswith("p::sub::")
    flaky = one("StartActivity:flaky")
    assert flaky["parent_id"] in parent_turns
    attempts = sorted(by_name["RunActivity:flaky"], key=lambda s: s["attributes"][
        "duroxy.activity.attempt"])
    assert [a["attributes"]["duroxy.activity.attempt"] for a in attempts] == [1, 2, 3]
    for a in attempts:
        assert a["kind"] == "CONSUMER" and a["parent_id"] == flaky["span_id"]
        assert a["attributes"]["duroxy.activity.name"] == "flaky"
        assert a["attributes"]["duroxy.instance_id"] == "p"
    assert [a["status"] for a in attempts] == ["ERROR", "ERROR", "UNSET"]
    assert [a["events"] for a in attempts] == [["exception"], ["exception"], []]
    start_ok = by_name["StartActivity:ok"]
    assert sorted(s["parent_id"] in child_turns for s in start_ok) == [False, True]
    assert all(s["parent_id"] in parent_turns | child_turns for s in start_ok)
    assert sorted(r["parent_id"] for r in by_name["RunActivity:ok"]) == sorted(
        s["span_id"] for s in start_ok)
    return by_name


# ====================================================================== one process
async def test_one_trace_and_no_duplicate_spans_when_every_turn_replays(
        telemetry: Telemetry) -> None:
    store = InMemoryProvider()
    client = Client(store)
    acts, orchs = otelapp.registries()
    # cache_size=0: every turn after the first rebuilds its execution from history.
    async with await Runtime.start(store, acts, orchs, RuntimeOptions(cache_size=0)):
        with telemetry.tracer.start_as_current_span("test-root") as root_span:
            await client.start_orchestration("p", "parent", 5)
            await wait_status(client, "p", "waiting")
            await client.raise_event("p", "go")
        status = await client.wait_for_orchestration("p", 10)
    assert status.state is OrchestrationState.COMPLETED and status.output == [6, 50, 6]
    spans = telemetry.spans()
    root = next(s for s in spans if s["name"] == "test-root")
    assert root["span_id"] == f"{root_span.get_span_context().span_id:016x}"
    by_name = check_one_trace(spans, root)
    replayed = [t["attributes"]["duroxy.turn.replayed"]
                for t in by_name["OrchestrationTurn:parent"]]
    assert replayed[0] is False and all(replayed[1:])  # the first turn had no history
    # The context is stored with the start and the scheduled work, never compared.
    history = await client.read_history("p")
    started = history[0]
    assert isinstance(started, OrchestrationStarted) and started.trace_context is not None
    assert started.trace_context["traceparent"].split("-")[1] == root["trace_id"]
    scheduled = [e for e in history if isinstance(e, ActivityScheduled)]
    flaky = [e.trace_context for e in scheduled if e.name == "flaky"]
    assert len(flaky) == 3 and flaky[0] is not None and flaky.count(flaky[0]) == 3
    assert all(isinstance(e, SubOrchestrationScheduled) and e.trace_context
               for e in history if e.kind == "SubOrchestrationScheduled")

    metrics = telemetry.metrics()
    executions = Counter({attrs["outcome"]: value for attrs, value in
                          metrics["duroxy.activity.executions"]
                          if attrs["activity_name"] == "flaky"})
    assert executions == Counter({"app_error": 2, "success": 1})
    assert sum(v for _a, v in metrics["duroxy.orchestration.starts"]) == 2
    assert sum(v for _a, v in metrics["duroxy.orchestration.completions"]) == 2
    for name in ("duroxy.orchestration.duration", "duroxy.orchestration.turn.duration",
                 "duroxy.activity.duration", "duroxy.orchestrator.queue_depth",
                 "duroxy.worker.queue_depth"):
        assert name in metrics
    for points in metrics.values():
        for attrs, _value in points:
            assert set(attrs) <= {"orchestration_name", "version", "activity_name",
                                  "outcome", "tag"}


async def failing(ctx: OrchestrationContext, _: Any) -> None:
    raise ValueError("no such order")


async def test_a_failed_instance_marks_its_turn_as_an_error(telemetry: Telemetry) -> None:
    store = InMemoryProvider()
    client = Client(store)
    orchs = OrchestrationRegistry.builder().register("failing", failing).build()
    async with await Runtime.start(store, ActivityRegistry.builder().build(), orchs):
        await client.start_orchestration("f", "failing")
        assert (await client.wait_for_orchestration("f", 10)).state is \
            OrchestrationState.FAILED
    (turn,) = [s for s in telemetry.spans() if s["name"] == "OrchestrationTurn:failing"]
    assert turn["status"] == "ERROR" and turn["events"] == ["exception"]
    assert sum(v for _a, v in telemetry.metrics()["duroxy.orchestration.failures"]) == 1


async def again(ctx: OrchestrationContext, n: int) -> int:
    if n < 2:
        ctx.continue_as_new(n + 1)
    return n


async def test_continue_as_new_executions_continue_the_trace(telemetry: Telemetry) -> None:
    store = InMemoryProvider()
    client = Client(store)
    orchs = OrchestrationRegistry.builder().register("again", again).build()
    async with await Runtime.start(store, ActivityRegistry.builder().build(), orchs):
        await client.start_orchestration("a", "again", 0)
        assert (await client.wait_for_orchestration("a", 10)).output == 2
    spans = telemetry.spans()
    (start,) = [s for s in spans if s["name"] == "StartOrchestration:again"]
    turns = [s for s in spans if s["name"] == "OrchestrationTurn:again"]
    assert sorted(t["attributes"]["duroxy.execution_id"] for t in turns) == [1, 2, 3]
    assert {t["trace_id"] for t in turns} == {start["trace_id"]}
    assert {t["parent_id"] for t in turns} == {start["span_id"]}


async def test_uninstrument_stops_every_span(telemetry: Telemetry) -> None:
    DuroxyInstrumentor().uninstrument()
    store = InMemoryProvider()
    client = Client(store)
    orchs = OrchestrationRegistry.builder().register("failing", failing).build()
    async with await Runtime.start(store, ActivityRegistry.builder().build(), orchs):
        await client.start_orchestration("f", "failing")
        await client.wait_for_orchestration("f", 10)
    assert telemetry.spans() == []
    started = (await client.read_history("f"))[0]
    assert isinstance(started, OrchestrationStarted) and started.trace_context is None
    DuroxyInstrumentor().instrument(tracer_provider=telemetry.tracer_provider,
                                    meter_provider=telemetry.meter_provider)


def test_without_instrument_nothing_of_opentelemetry_is_imported() -> None:
    code = (
        "import asyncio, sys\n"
        "import duroxy\n"
        "from duroxy.providers.memory import InMemoryProvider\n"
        "async def hello(ctx, x):\n    return x\n"
        "async def main():\n"
        "    store = InMemoryProvider()\n"
        "    orchs = duroxy.OrchestrationRegistry.builder().register('hello', hello).build()\n"
        "    acts = duroxy.ActivityRegistry.builder().build()\n"
        "    async with await duroxy.Runtime.start(store, acts, orchs):\n"
        "        c = duroxy.Client(store)\n"
        "        await c.start_orchestration('i', 'hello', 1)\n"
        "        await c.raise_event('i', 'e')\n"
        "        await c.wait_for_orchestration('i', 10)\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_the_instrumentor_is_an_entry_point() -> None:
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group="opentelemetry_instrumentor")
             if ep.name == "duroxy"]
    assert len(found) == 1 and found[0].load() is DuroxyInstrumentor


# ====================================================================== two processes
class OtelWorkers:
    def __init__(self, tmp: Path, db: Path) -> None:
        self.tmp, self.db = tmp, db
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, name: str, role: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(TESTS_DIR), env.get("PYTHONPATH", "")) if p)
        spans, ready = self.tmp / f"{name}.spans", self.tmp / f"{name}.ready"
        with (self.tmp / f"{name}.out").open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "otelapp", "--db", str(self.db), "--spans", str(spans),
                 "--role", role, "--ready", str(ready)],
                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc, spans, ready

    async def ready(self, proc: subprocess.Popen[bytes], ready: Path) -> None:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None, "worker exited early"
            assert time.monotonic() < deadline, "worker did not start"
            await asyncio.sleep(0.05)

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
async def otel_workers(tmp_path: Path) -> AsyncIterator[OtelWorkers]:
    workers = OtelWorkers(tmp_path, tmp_path / "otel.db")
    try:
        yield workers
    finally:
        workers.kill_all()


@pytest.mark.slow
async def test_one_trace_across_two_worker_processes_and_a_restart(
        telemetry: Telemetry, otel_workers: OtelWorkers) -> None:
    w = otel_workers
    # The flaky activity runs only in the second process; the orchestrations and "ok"
    # in the first, which is restarted mid-run (its successor replays the history).
    acts, acts_spans, acts_ready = w.spawn("activities", "activities")
    await w.ready(acts, acts_ready)
    orch, orch_spans, orch_ready = w.spawn("orchestrations", "orchestrations")
    await w.ready(orch, orch_ready)
    store = SqliteProvider(w.db)
    try:
        client = Client(store)
        with telemetry.tracer.start_as_current_span("test-root"):
            await client.start_orchestration("p", "parent", 5)
            await wait_status(client, "p", "waiting")
            w.stop(orch)
            orch2, orch2_spans, orch2_ready = w.spawn("orchestrations-2", "orchestrations")
            await w.ready(orch2, orch2_ready)
            await client.raise_event("p", "go")
        status = await client.wait_for_orchestration("p", 30)
    finally:
        await store.close()
    assert status.state is OrchestrationState.COMPLETED and status.output == [6, 50, 6]
    w.stop(orch2)
    w.stop(acts)
    ours = telemetry.spans()
    root = next(s for s in ours if s["name"] == "test-root")
    spans = (ours + otelapp.read_spans(acts_spans) + otelapp.read_spans(orch_spans)
             + otelapp.read_spans(orch2_spans))
    by_name = check_one_trace(spans, root)
    assert {s["pid"] for s in by_name["RunActivity:flaky"]} == {acts.pid}
    assert {s["pid"] for s in by_name["RunActivity:ok"]} == {orch.pid}
    # The restarted worker replayed the history for the event's turn and scheduled
    # nothing anew.
    after = [s for s in by_name["OrchestrationTurn:parent"] if s["pid"] == orch2.pid]
    assert len(after) == 1 and after[0]["attributes"]["duroxy.turn.replayed"] is True
    assert not [s for s in spans if s["pid"] == orch2.pid
                and s["name"].startswith(("Start", "Run"))]

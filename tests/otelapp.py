"""Orchestrations and activities for the OpenTelemetry tests, and a worker process that
exports its spans as JSON lines (``python -m otelapp --db PATH --spans PATH --role R``).

Roles: ``orchestrations`` runs the orchestrations and the ``ok`` activity;
``activities`` runs only ``flaky`` (so a workflow's activities run in two processes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from duroxy import (
    ActivityContext,
    ActivityRegistry,
    BackoffStrategy,
    OrchestrationContext,
    OrchestrationRegistry,
    RetryPolicy,
    Runtime,
    RuntimeOptions,
)
from duroxy.otel import DuroxyInstrumentor
from duroxy.providers.sqlite import SqliteProvider


async def ok(ctx: ActivityContext, x: int) -> int:
    return x + 1


async def flaky(ctx: ActivityContext, x: int) -> int:
    if ctx.attempt < 3:  # the first two attempts fail, the third returns
        raise RuntimeError(f"attempt {ctx.attempt} of flaky fails")
    return x * 10


async def child(ctx: OrchestrationContext, x: int) -> int:
    return int(await ctx.schedule_activity("ok", x))


async def parent(ctx: OrchestrationContext, x: int) -> list[int]:
    a = await ctx.schedule_activity("ok", x)
    b = await ctx.schedule_activity_with_retry("flaky", x,
                                               RetryPolicy(3, BackoffStrategy.Fixed(0)))
    c = await ctx.schedule_sub_orchestration("child", x)
    ctx.set_custom_status("waiting")
    await ctx.schedule_wait("go")
    return [a, b, c]


def registries(role: str = "all") -> tuple[ActivityRegistry, OrchestrationRegistry]:
    acts = ActivityRegistry.builder()
    orchs = OrchestrationRegistry.builder()
    if role in ("all", "orchestrations"):
        acts.register("ok", ok)
        orchs.register("parent", parent).register("child", child)
    if role in ("all", "activities"):
        acts.register("flaky", flaky)
    return acts.build(), orchs.build()


def span_json(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.context
    assert ctx is not None
    return {
        "name": span.name, "kind": span.kind.name,
        "trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
        "attributes": dict(span.attributes or {}), "status": span.status.status_code.name,
        "events": [e.name for e in span.events], "pid": os.getpid()}


class JsonLinesExporter(SpanExporter):
    """Appends each finished span to a file as one JSON line."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a", encoding="utf-8") as out:
            for span in spans:
                out.write(json.dumps(span_json(span)) + "\n")
        return SpanExportResult.SUCCESS


def read_spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def serve(args: argparse.Namespace) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(args.spans)))
    DuroxyInstrumentor().instrument(tracer_provider=provider, meter_provider=MeterProvider())
    store = SqliteProvider(args.db)
    acts, orchs = registries(args.role)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    options = RuntimeOptions(worker_id=f"otelapp-{args.role}:{os.getpid()}",
                             heartbeat_interval=0.5)
    rt = await Runtime.start(store, acts, orchs, options)
    try:
        Path(args.ready).write_text(str(os.getpid()))
        await stop.wait()
    finally:
        await rt.shutdown(timeout=2)
        await store.close()
        provider.shutdown()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="otelapp")
    p.add_argument("--db", required=True)
    p.add_argument("--spans", required=True)
    p.add_argument("--role", choices=("orchestrations", "activities"), required=True)
    p.add_argument("--ready", required=True)
    asyncio.run(serve(p.parse_args(argv)))


if __name__ == "__main__":
    main()

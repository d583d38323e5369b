"""A small application for the multi-process tests: registries and a worker entry point.

Run a worker with ``python -m procapp --db PATH --log PATH [options]`` (``tests`` on
``PYTHONPATH``), or ``--store URL`` instead of ``--db`` for any store ``duroxy.connect``
understands (``postgresql://...?schema=name``). It serves the store until SIGTERM or
SIGINT, then shuts down cleanly.

Every activity appends one JSON line to the side-effect log (``O_APPEND``, then
``fsync``) before it returns, so a test can count executions exactly across processes
and crashes: a line on disk means the activity body ran to its end in that process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from duroxy import (
    ActivityContext,
    ActivityRegistry,
    OrchestrationContext,
    OrchestrationRegistry,
    Runtime,
    RuntimeOptions,
    TagFilter,
    connect,
)
from duroxy.providers.base import Provider
from duroxy.providers.sqlite import SqliteProvider

LOG_ENV = "PROCAPP_LOG"
_log_path: str | None = None


def log_path() -> str:
    path = _log_path or os.environ.get(LOG_ENV)
    if not path:
        raise RuntimeError(f"no side-effect log: pass --log or set {LOG_ENV}")
    return path


def record(ctx: ActivityContext, phase: str, input: Any) -> None:
    """Append one line and make it durable before returning. One ``write`` of a short
    line on an ``O_APPEND`` descriptor lands whole even with several writers."""
    line = json.dumps({"iid": ctx.instance_id, "act": ctx.activity_name, "input": input,
                       "phase": phase, "pid": os.getpid(), "t": time.time(),
                       "sid": ctx.session_id, "tag": ctx.tag}) + "\n"
    fd = os.open(log_path(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """Every complete line of a side-effect log (a missing file is an empty log)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.endswith("}")]


# ------------------------------------------------------------------ activities
def step_result(v: int, k: int) -> int:
    """What ``step`` returns; tests compute expected outputs with it."""
    return v * 2 + k + 1


async def step(ctx: ActivityContext, input: dict[str, Any]) -> int:
    """One step of a chain: sleeps so that work is in flight, then logs and returns."""
    record(ctx, "start", input)
    await asyncio.sleep(input.get("sleep", 0.05 + 0.025 * (input["k"] % 3)))
    record(ctx, "end", input)
    return step_result(int(input["v"]), int(input["k"]))


# ------------------------------------------------------------------ orchestrations
def chain_output(start: int, steps: int) -> int:
    v = start
    for k in range(steps):
        v = step_result(v, k)
    return v


async def chain(ctx: OrchestrationContext, input: dict[str, Any]) -> int:
    """``steps`` sequential activities, each fed the previous one's output."""
    v = int(input["start"])
    for k in range(int(input["steps"])):
        arg: dict[str, Any] = {"v": v, "k": k}
        if "sleep" in input:
            arg["sleep"] = input["sleep"]
        v = await ctx.schedule_activity("step", arg)
    return v


async def clock(ctx: OrchestrationContext, _: Any) -> dict[str, Any]:
    """Records a time and a GUID, publishes them, then waits for ``go``. The output is
    built after the event, from the values the (replayed) code sees then."""
    now = await ctx.utcnow()
    guid = await ctx.new_guid()
    ctx.set_custom_status({"now": now.isoformat(), "guid": guid})
    data = await ctx.schedule_wait("go")
    return {"now": now.isoformat(), "guid": guid, "event": data}


async def kv_step(ctx: ActivityContext, input: dict[str, Any]) -> None:
    """The work between a KV read and its write: sleeps so that work is in flight."""
    record(ctx, "start", input)
    await asyncio.sleep(input.get("sleep", 0.03))
    record(ctx, "end", input)


async def kv_counter(ctx: OrchestrationContext, input: dict[str, Any]) -> int:
    """A read-modify-write loop on a KV counter with an activity between the read and
    the write, continuing as new every ``every`` increments (so the counter crosses
    executions too) until it reaches ``target``."""
    for _ in range(int(input["every"])):
        count = ctx.get_kv_value("count", 0)
        if count >= int(input["target"]):
            return int(count)
        await ctx.schedule_activity("kv_step", {"v": count})
        ctx.set_kv_value("count", count + 1)
    ctx.continue_as_new(input)


# ------------------------------------------------------------------ activity routing
async def routed_step(ctx: ActivityContext, input: dict[str, Any]) -> int:
    """A step that logs its session and tag (with the worker's pid) and returns the pid.
    With ``hold`` (a file path) it waits, once started, while that file exists."""
    record(ctx, "start", input)
    hold = input.get("hold")
    while hold is not None and os.path.exists(hold):
        await asyncio.sleep(0.02)
    await asyncio.sleep(float(input.get("sleep", 0.02)))
    record(ctx, "end", input)
    return os.getpid()


async def session_chain(ctx: OrchestrationContext, input: dict[str, Any]) -> list[int]:
    """``steps`` sequential steps on session ``session``; the pids that ran them."""
    pids = []
    for k in range(int(input["steps"])):
        pids.append(await ctx.schedule_activity(
            "routed_step", {"k": k, "sleep": input.get("sleep", 0.02),
                            "hold": input.get("hold")},
            session_id=input["session"]))
    return pids


async def tagged_fanout(ctx: OrchestrationContext, input: dict[str, Any]) -> list[int]:
    """One step per entry of ``tags`` (``None``: untagged), all at once."""
    return await ctx.join([ctx.schedule_activity("routed_step", {"k": k}, tag=tag)
                           for k, tag in enumerate(input["tags"])])


async def tag_or_timer(ctx: OrchestrationContext, input: dict[str, Any]) -> str:
    """A tagged step raced against a timer: which came first in history."""
    index, _ = await ctx.select2(ctx.schedule_activity("routed_step", {"k": 0},
                                                       tag=input["tag"]),
                                 ctx.schedule_timer(float(input["timeout"])))
    return "activity" if index == 0 else "timer"


def registries(without: tuple[str, ...] = ()
               ) -> tuple[ActivityRegistry, OrchestrationRegistry]:
    """Every activity and orchestration but those named in ``without`` (a worker of an
    older or newer release, in a rolling deploy)."""
    activities = ActivityRegistry.builder()
    for name, act in (("step", step), ("kv_step", kv_step), ("routed_step", routed_step)):
        if name not in without:
            activities.register(name, act)
    orchestrations = OrchestrationRegistry.builder()
    for name, fn in (("chain", chain), ("clock", clock), ("kv_counter", kv_counter),
                     ("session_chain", session_chain), ("tagged_fanout", tagged_fanout),
                     ("tag_or_timer", tag_or_timer)):
        if name not in without:
            orchestrations.register(name, fn)
    return activities.build(), orchestrations.build()


# ------------------------------------------------------------------ worker
def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="procapp")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", help="SQLite file path")
    where.add_argument("--store", help="store URL, e.g. postgresql://host/db?schema=name")
    p.add_argument("--log", required=True)
    p.add_argument("--ready", help="file created once the runtime runs")
    p.add_argument("--orch-lock", type=float, default=5.0)
    p.add_argument("--act-lock", type=float, default=30.0)
    p.add_argument("--act-concurrency", type=int, default=32)
    p.add_argument("--orch-concurrency", type=int, default=8)
    p.add_argument("--shutdown-timeout", type=float, default=2.0)
    p.add_argument("--max-attempts", type=int, default=10)
    p.add_argument("--not-registered-backoff", type=float, default=1.0)
    p.add_argument("--heartbeat-interval", type=float, default=10.0)
    p.add_argument("--without", action="append", default=[], metavar="NAME",
                   help="leave this activity or orchestration unregistered (repeatable)")
    p.add_argument("--app", choices=("procapp", "provisioning"), default="procapp",
                   help="the registries to run: these, or duroxy's example application")
    p.add_argument("--tag-filter", default="DEFAULT_ONLY",
                   help='TagFilter as a heartbeat shows it: DEFAULT_ONLY, ANY, NONE, '
                   'tags ["gpu"], default_and ["gpu"]')
    p.add_argument("--max-sessions", type=int, default=10)
    p.add_argument("--session-idle", type=float, default=300.0)
    p.add_argument("--session-lock", type=float, default=30.0)
    p.add_argument("--node-id", default=None)
    return p.parse_args(argv)


def open_store(args: argparse.Namespace) -> Provider:
    """``--db`` is a SQLite path (kept as is for the SQLite tests); ``--store`` a URL."""
    if args.db is not None:
        return SqliteProvider(args.db)
    return connect(args.store)


async def serve(args: argparse.Namespace) -> None:
    global _log_path
    _log_path = args.log
    store = open_store(args)
    if args.app == "provisioning":
        from duroxy.examples.provisioning import registry

        activities, orchestrations = registry.registries()
    else:
        activities, orchestrations = registries(tuple(args.without))
    tag_filter = TagFilter.from_text(args.tag_filter)
    if tag_filter is None:
        raise SystemExit(f"procapp: bad --tag-filter {args.tag_filter!r}")
    options = RuntimeOptions(
        orchestration_lock_timeout=args.orch_lock, activity_lock_timeout=args.act_lock,
        activity_concurrency=args.act_concurrency,
        orchestration_concurrency=args.orch_concurrency, worker_id=f"procapp:{os.getpid()}",
        max_attempts=args.max_attempts, not_registered_backoff=args.not_registered_backoff,
        heartbeat_interval=args.heartbeat_interval, worker_tag_filter=tag_filter,
        max_sessions_per_runtime=args.max_sessions, session_idle_timeout=args.session_idle,
        session_lock_timeout=args.session_lock, worker_node_id=args.node_id)
    # A split worker leaves out the registry it does not use.
    run_activities: ActivityRegistry | None = activities
    run_orchestrations: OrchestrationRegistry | None = orchestrations
    if not options.runs_activities:
        run_activities = None
    if not options.runs_orchestrations:
        run_orchestrations = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    rt = await Runtime.start(store, run_activities, run_orchestrations, options)
    try:
        if args.ready:
            Path(args.ready).write_text(str(os.getpid()))
        await stop.wait()
    finally:
        await rt.shutdown(timeout=args.shutdown_timeout)
        await store.close()


def main(argv: list[str] | None = None) -> None:
    asyncio.run(serve(_parse(argv)))


if __name__ == "__main__":
    main()

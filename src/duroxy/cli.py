"""The ``duroxy`` command line: run workers, start and watch instances, read histories.

Exit codes (stable, for scripts):

====  ==============================================================================
0     success
1     ``start --wait`` / ``wait``: the instance ended FAILED or CANCELLED;
      ``demo``: an example instance did not end as expected
2     usage error: bad arguments, malformed JSON, an unloadable ``MODULE:ATTR``
3     no instance with that id
4     timed out waiting
5     the store failed, is missing or is not a duroxy store, has a schema newer than
      this duroxy knows, or the request was refused (e.g. deleting a running
      instance without ``--force``, starting a taken id)
====  ==============================================================================

``status`` only reads: it exits 0 whenever it could read the instance, whatever its
state (use ``--json`` and look at ``state``, or ``wait``, to branch on the outcome).

The reading commands (``status``, ``list``, ``history``, ``wait``, ``workers``) open the store
read-only (``connect(url, read_only=True)``): they never create, migrate or change it,
so pointing them at the wrong file (another application's database) changes nothing
and exits 5, naming the file and what is wrong with it. The other commands open it
for writing, creating and migrating it as needed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import inspect
import json
import logging
import os
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from . import __version__
from ._connect import connect
from .client import Client, InstanceInfo, OrchestrationState, WorkerInfo
from .errors import (
    ConfigurationError,
    DuroxyError,
    InstanceAlreadyExists,
    InstanceNotFound,
    ProviderError,
    StoreNotFound,
)
from .history import HistoryEvent
from .options import RuntimeOptions
from .providers.base import Provider
from .runtime import ActivityRegistry, OrchestrationRegistry, Runtime

__all__ = [
    "EXIT_ERROR",
    "EXIT_FAILED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "format_timeline",
    "load_registries",
    "main",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_TIMEOUT = 4
EXIT_ERROR = 5

DEFAULT_STORE = "sqlite:///duroxy.db"
#: Payload fields of history events: JSON text, shown decoded or shortened.
_PAYLOAD_FIELDS = frozenset({"input", "output", "result", "data", "status"})
_STATES = [s.value for s in OrchestrationState if s is not OrchestrationState.NOT_FOUND]


class UsageError(Exception):
    """A mistake in the command line itself (exit code 2)."""


# ====================================================================== output helpers
def _dumps(value: Any, *, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent, default=str,
                      separators=None if indent else (",", ":"))


def _short(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters (``...`` marks the cut); width 0: uncut."""
    text = " ".join(text.split()) if "\n" in text else text
    return text if width <= 0 or len(text) <= width else text[:max(width - 3, 1)] + "..."


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(UTC).isoformat(timespec="milliseconds")


def _human_time(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def instance_json(info: InstanceInfo) -> dict[str, Any]:
    """An instance as a JSON object (``status``/``list``/``start --wait`` with ``--json``)."""
    return {
        "instance_id": info.instance_id, "name": info.name, "version": info.version,
        "state": info.state.value, "execution_id": info.execution_id,
        "created_at": _iso(info.created_at), "updated_at": _iso(info.updated_at),
        "parent_instance_id": info.parent_instance_id, "custom_status": info.custom_status,
        "output": info.output, "error": None if info.error is None else info.error.to_json(),
    }


def _name_at(name: str, version: str | None) -> str:
    return f"{name}@{version}" if version else name


def format_instance(info: InstanceInfo) -> list[str]:
    """An instance as aligned ``label  value`` lines."""
    rows: list[tuple[str, str]] = [
        ("instance", info.instance_id),
        ("name", _name_at(info.name, info.version)),
        ("state", info.state.value),
        ("execution", str(info.execution_id)),
        ("created", _human_time(info.created_at)),
        ("updated", _human_time(info.updated_at)),
    ]
    if info.parent_instance_id:
        rows.append(("parent", info.parent_instance_id))
    if info.custom_status is not None:
        rows.append(("custom", _dumps(info.custom_status)))
    if info.state is OrchestrationState.COMPLETED:
        rows.append(("output", _dumps(info.output)))
    if info.error is not None:
        rows.append(("error", f"{info.error} [{info.error.kind}]"))
    return [f"{label:<10} {value}" for label, value in rows]


# ====================================================================== history
def event_json(event: HistoryEvent) -> dict[str, Any]:
    """A history event as a JSON object; payload fields decoded to JSON values."""
    out: dict[str, Any] = {"event_id": event.event_id, "kind": event.kind,
                           "timestamp": _iso(event.timestamp)}
    for f in dataclasses.fields(event):
        if f.name in ("event_id", "ts"):
            continue
        value = getattr(event, f.name)
        if f.name in _PAYLOAD_FIELDS and isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        out[f.name] = value
    return out


def _event_details(ev: HistoryEvent, width: int) -> str:
    """The interesting fields of one event, for people."""
    def get(name: str) -> Any:
        return getattr(ev, name, None)

    def payload(name: str, label: str | None = None) -> str:
        text = get(name)
        shown = "null" if text is None else _short(str(text), width)
        return f"{label or name}={shown}"

    kind = ev.kind
    src = f"<- #{get('source_event_id')}" if get("source_event_id") is not None else ""
    parts: list[str]
    if kind == "OrchestrationStarted":
        parts = [_name_at(get("name"), get("version")), payload("input")]
        if get("execution_id") != 1:
            parts.append(f"execution={get('execution_id')}")
        if get("parent_instance_id"):
            parts.append(f"parent={get('parent_instance_id')}")
    elif kind == "OrchestrationCompleted":
        parts = [payload("output")]
    elif kind in ("OrchestrationFailed", "ActivityFailed", "SubOrchestrationFailed"):
        parts = [src] if src else []
        error_kind = get("error_kind")
        if error_kind and error_kind != "application":
            parts.append(f"[{error_kind}]")
        parts.append(_short(f"{get('error_type')}: {get('message')}", width))
    elif kind in ("OrchestrationCancelled", "CancellationRequested"):
        parts = [f"reason={get('reason')!r}"] if get("reason") else []
    elif kind == "OrchestrationContinuedAsNew":
        parts = [payload("input")]
        if get("version"):
            parts.append(f"version={get('version')}")
    elif kind == "ActivityScheduled":
        parts = [get("name"), payload("input")]
        if get("attempt") != 1:
            parts.append(f"attempt={get('attempt')}")
    elif kind in ("ActivityCompleted", "SubOrchestrationCompleted"):
        parts = [src, payload("result")]
    elif kind == "TimerCreated":
        delay = (int(get("fire_at")) - ev.ts) / 1000.0
        parts = [f"fires in {delay:.3f}s"]
    elif kind in ("TimerFired", "WorkCancelled"):
        parts = [src]
    elif kind == "EventSubscribed":
        parts = [str(get("name"))]
    elif kind == "EventRaised":
        parts = [str(get("name")), payload("data")]
    elif kind in ("SubOrchestrationScheduled", "DetachedOrchestrationScheduled"):
        parts = [_name_at(get("name"), get("version")), f"id={get('instance_id')}",
                 payload("input")]
    elif kind == "CustomStatusSet":
        parts = [payload("status")]
    elif kind == "UtcNowRecorded":
        parts = [_iso(datetime.fromtimestamp(int(get("value_us")) / 1e6, UTC)) or ""]
    elif kind == "GuidRecorded":
        parts = [str(get("value"))]
    else:  # a kind this CLI does not know yet: every field
        parts = [f"{k}={_short(_dumps(v), width)}" for k, v in event_json(ev).items()
                 if k not in ("event_id", "kind", "timestamp")]
    return " ".join(p for p in parts if p)


def format_timeline(events: Sequence[HistoryEvent], *, width: int = 60,
                    indent: str = "") -> list[str]:
    """One line per event: id, time since the first event, kind, interesting fields
    (payloads cut to ``width`` characters; 0 keeps them whole)."""
    if not events:
        return [f"{indent}(no events)"]
    t0 = events[0].ts
    id_width = len(str(events[-1].event_id))
    return [f"{indent}{ev.event_id:>{id_width}}  {f'+{(ev.ts - t0) / 1000:.3f}s':>9}  "
            f"{ev.kind:<30} {_event_details(ev, width)}".rstrip() for ev in events]


# ====================================================================== registries
def _as_registries(obj: Any, where: str) -> tuple[ActivityRegistry, OrchestrationRegistry]:
    def build(value: Any) -> Any:
        return value.build() if hasattr(value, "build") and not isinstance(
            value, (ActivityRegistry, OrchestrationRegistry)) else value

    if isinstance(obj, (tuple, list)):
        items = [build(x) for x in obj]
        acts = [x for x in items if isinstance(x, ActivityRegistry)]
        orchs = [x for x in items if isinstance(x, OrchestrationRegistry)]
        if len(items) == 2 and len(acts) == 1 and len(orchs) == 1:
            return acts[0], orchs[0]
        raise UsageError(f"{where} is a sequence but not (ActivityRegistry, "
                         "OrchestrationRegistry)")
    if hasattr(obj, "activities") and hasattr(obj, "orchestrations"):
        acts_obj, orchs_obj = build(obj.activities), build(obj.orchestrations)
        if callable(acts_obj) and not isinstance(acts_obj, ActivityRegistry):
            acts_obj = build(acts_obj())
        if callable(orchs_obj) and not isinstance(orchs_obj, OrchestrationRegistry):
            orchs_obj = build(orchs_obj())
        if isinstance(acts_obj, ActivityRegistry) and isinstance(
                orchs_obj, OrchestrationRegistry):
            return acts_obj, orchs_obj
        raise UsageError(f"{where}.activities/.orchestrations are not an ActivityRegistry "
                         "and an OrchestrationRegistry")
    raise UsageError(f"{where} is neither (ActivityRegistry, OrchestrationRegistry) nor an "
                     "object with .activities and .orchestrations")


def load_registries(target: str) -> tuple[ActivityRegistry, OrchestrationRegistry]:
    """Resolve ``MODULE[:ATTR]``: a tuple ``(activities, orchestrations)``, an object or
    module with ``activities`` and ``orchestrations`` attributes, or a callable returning
    either. The working directory is importable, as with ``python -m``."""
    module_name, _, attr = target.partition(":")
    if not module_name:
        raise UsageError(f"worker target {target!r} must look like MODULE:ATTR")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise UsageError(f"cannot import module {module_name!r}: {e}") from None
        raise
    obj: Any = module
    for part in attr.split(".") if attr else []:
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no attribute {attr!r}") from None
    if callable(obj) and not isinstance(obj, (type, ActivityRegistry, OrchestrationRegistry)):
        try:
            inspect.signature(obj).bind()
        except TypeError:
            raise UsageError(f"{target} is a callable that needs arguments; point at "
                             "the registries or at a function without parameters") from None
        except ValueError:  # no signature to inspect (a builtin): just call it
            pass
        obj = obj()
    return _as_registries(obj, target)


# ====================================================================== commands
def _parse_json(text: str | None, what: str) -> Any:
    """Parse a JSON argument; ``@path`` reads it from a file."""
    if text is None:
        return None
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as fh:
                text = fh.read()
        except OSError as e:
            raise UsageError(f"{what}: cannot read {text[1:]!r}: {e.strerror}") from None
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError as e:
        raise UsageError(f"{what} is not valid JSON ({e.msg} at line {e.lineno} column "
                         f"{e.colno}): {_short(text, 40)!r}") from None
    except _NotJson as e:
        raise UsageError(f"{what} is not valid JSON: {e}") from None


class _NotJson(ValueError):
    """What Python's json module accepts but JSON has no form for."""


def _no_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _NotJson(f"{text} is too large for a JSON number")
    return value


@dataclasses.dataclass
class _Env:
    args: argparse.Namespace
    client: Client
    as_json: bool
    out: TextIO

    def print(self, text: str = "") -> None:
        print(text, file=self.out)

    def show(self, value: Any) -> None:
        print(_dumps(value, indent=2), file=self.out)


def _outcome_code(state: OrchestrationState) -> int:
    return EXIT_OK if state is OrchestrationState.COMPLETED else EXIT_FAILED


async def _show_final(env: _Env, instance_id: str, timeout: float) -> int:
    await env.client.wait_for_orchestration(instance_id, timeout)
    info = await env.client.get_instance_info(instance_id)
    if env.as_json:
        env.show(instance_json(info))
    else:
        for line in format_instance(info):
            env.print(line)
    return _outcome_code(info.state)


async def cmd_start(env: _Env) -> int:
    a = env.args
    data = _parse_json(a.input, "--input")
    instance_id = str(uuid.uuid4()) if a.id is None else a.id
    if a.version:
        await env.client.start_orchestration_versioned(instance_id, a.name, a.version, data)
    else:
        await env.client.start_orchestration(instance_id, a.name, data)
    if a.wait:
        if not env.as_json:
            env.print(f"started {instance_id} ({_name_at(a.name, a.version)}); waiting...")
        return await _show_final(env, instance_id, a.timeout)
    if env.as_json:
        env.show({"instance_id": instance_id, "name": a.name, "version": a.version,
                  "state": OrchestrationState.PENDING.value})
    else:
        env.print(f"started {instance_id} ({_name_at(a.name, a.version)})")
    return EXIT_OK


async def cmd_wait(env: _Env) -> int:
    return await _show_final(env, env.args.instance_id, env.args.timeout)


async def cmd_status(env: _Env) -> int:
    info = await env.client.get_instance_info(env.args.instance_id)
    if env.as_json:
        env.show(instance_json(info))
    else:
        for line in format_instance(info):
            env.print(line)
    return EXIT_OK


async def cmd_list(env: _Env) -> int:
    a = env.args
    infos = await env.client.list_instances(state=a.state, name=a.name, limit=a.limit,
                                            offset=a.offset)
    if env.as_json:
        env.show([instance_json(i) for i in infos])
        return EXIT_OK
    if not infos:
        env.print("no instances")
        return EXIT_OK
    rows = [("INSTANCE", "NAME", "STATE", "EXEC", "UPDATED")] + [
        (i.instance_id, _name_at(i.name, i.version), i.state.value, str(i.execution_id),
         _human_time(i.updated_at)) for i in infos]
    widths = [min(max(len(r[c]) for r in rows), 60) for c in range(4)]
    for r in rows:
        env.print("  ".join(f"{r[c]:<{widths[c]}}" for c in range(4)) + "  " + r[4])
    return EXIT_OK


async def cmd_history(env: _Env) -> int:
    a = env.args
    info = await env.client.get_instance_info(a.instance_id)
    execution = a.execution or info.execution_id
    events = await env.client.read_history(a.instance_id, execution)
    if not events and a.execution and a.execution != info.execution_id:
        executions = await env.client.list_executions(a.instance_id)
        raise _NotFound(f"instance {a.instance_id!r} has no execution {a.execution} "
                        f"(executions: {', '.join(map(str, executions)) or 'none'})")
    if env.as_json:
        env.show({"instance_id": a.instance_id, "execution_id": execution,
                  "events": [event_json(e) for e in events]})
        return EXIT_OK
    started = _human_time(events[0].timestamp) if events else "-"
    env.print(f"{a.instance_id}  {_name_at(info.name, info.version)}  {info.state.value}  "
              f"execution {execution} of {info.execution_id}, started {started}")
    for line in format_timeline(events, width=0 if a.full else 72, indent="  "):
        env.print(line)
    return EXIT_OK


async def cmd_raise_event(env: _Env) -> int:
    a = env.args
    data = _parse_json(a.data, "event data")
    await env.client.raise_event(a.instance_id, a.event_name, data)
    if env.as_json:
        env.show({"instance_id": a.instance_id, "event_name": a.event_name, "raised": True})
    else:
        env.print(f"raised {a.event_name!r} on {a.instance_id}")
    return EXIT_OK


async def cmd_cancel(env: _Env) -> int:
    a = env.args
    info = await env.client.get_instance_info(a.instance_id)
    requested = not info.state.is_terminal
    await env.client.cancel_instance(a.instance_id, a.reason)
    if env.as_json:
        env.show({"instance_id": a.instance_id, "cancel_requested": requested,
                  "state": info.state.value})
    elif requested:
        env.print(f"cancellation requested for {a.instance_id}")
    else:
        env.print(f"{a.instance_id} already ended {info.state.value}; nothing to cancel")
    return EXIT_OK


async def cmd_delete(env: _Env) -> int:
    a = env.args
    info = await env.client.get_instance_info(a.instance_id)
    if not info.state.is_terminal and not a.force:
        raise _Refused(f"instance {a.instance_id!r} is {info.state.value}; cancel it first, "
                       "or pass --force to delete it while it runs")
    deleted = await env.client.delete_instance(a.instance_id, force=a.force)
    if env.as_json:
        env.show({"instance_id": a.instance_id, "deleted": deleted})
    else:
        env.print(f"deleted {a.instance_id}" + (f" and {deleted - 1} child instance(s)"
                                                if deleted > 1 else ""))
    return EXIT_OK


def worker_json(info: WorkerInfo) -> dict[str, Any]:
    """A worker as a JSON object (``workers --json``): every ``WorkerInfo`` field."""
    out = {f.name: getattr(info, f.name) for f in dataclasses.fields(info)}
    for name in ("started_at", "last_seen_at", "stopped_at"):
        out[name] = _iso(out[name])
    out["orchestrations"], out["activities"] = list(info.orchestrations), list(info.activities)
    return out


def _worker_state(info: WorkerInfo) -> str:
    if info.stopped_at is not None:
        return "stopped"
    return "alive" if info.alive else "silent"  # silent: not seen lately, maybe dead


def _ago(dt: datetime, now: datetime) -> str:
    secs = max((now - dt).total_seconds(), 0.0)
    if secs < 120:
        return f"{secs:.1f} s ago"
    if secs < 7200:
        return f"{secs / 60:.0f} min ago"
    return f"{secs / 3600:.1f} h ago"


async def cmd_workers(env: _Env) -> int:
    infos = await env.client.list_workers(include_stopped=env.args.all)
    if env.as_json:
        env.show([worker_json(i) for i in infos])
        return EXIT_OK
    if not infos:
        env.print("no workers" + ("" if env.args.all else " running (--all shows stopped "
                                   "ones too)") + "; start one with: duroxy worker MODULE:ATTR")
        return EXIT_OK
    now = datetime.now(UTC)
    rows = [("WORKER", "STATE", "HOST", "PID", "STARTED", "LAST SEEN", "TURNS", "ACTIVITIES",
             "RUNNING", "DUROXY")] + [
        (i.worker_id, _worker_state(i), i.host, str(i.pid), _human_time(i.started_at)[:-4],
         _ago(i.last_seen_at, now), str(i.orchestration_concurrency),
         str(i.activity_concurrency), str(i.active_activities), i.duroxy_version)
        for i in infos]
    widths = [min(max(len(r[c]) for r in rows), 40) for c in range(len(rows[0]))]
    for n, r in enumerate(rows):
        env.print("  ".join(f"{r[c]:<{widths[c]}}" for c in range(len(r))).rstrip())
        if n:  # what the worker runs: during a rolling deploy, who runs which version
            info = infos[n - 1]
            env.print(f"    orchestrations  {', '.join(info.orchestrations) or '-'}")
            env.print(f"    activities      {', '.join(info.activities) or '-'}")
    return EXIT_OK


class _Formatter(logging.Formatter):
    """Adds the instance id that duroxy's trace calls attach to their records."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        iid = getattr(record, "instance_id", None)
        return f"{text} [{iid}]" if iid else text


async def cmd_worker(env: _Env, provider: Provider) -> int:
    a = env.args
    acts, orchs = load_registries(a.target)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=a.log_level.upper(), handlers=[handler], force=True)
    try:
        options = RuntimeOptions(**{k: v for k, v in (
            ("orchestration_concurrency", a.orchestration_concurrency),
            ("activity_concurrency", a.activity_concurrency),
            ("worker_id", a.worker_id)) if v is not None})
    except ValueError as e:
        raise UsageError(str(e)) from None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not on this platform / thread
            pass
    rt = await Runtime.start(provider, acts, orchs, options)
    print(f"duroxy worker {rt.worker_id}: {len(orchs)} orchestration version(s), "
          f"{len(acts)} activities on {a.store_url}; Ctrl-C stops", file=sys.stderr,
          flush=True)
    try:
        await stop.wait()
    finally:
        print("stopping: finishing in-flight work...", file=sys.stderr, flush=True)
        await rt.shutdown(timeout=a.shutdown_timeout)
        for sig in installed:
            loop.remove_signal_handler(sig)
    print("worker stopped", file=sys.stderr, flush=True)
    return EXIT_OK


class _NotFound(Exception):
    """Something named on the command line does not exist (exit code 3)."""


class _Refused(Exception):
    """The store holds the request back, e.g. deleting a running instance (exit code 5)."""


# ====================================================================== parser
def build_parser() -> argparse.ArgumentParser:
    # Global options live on a parent parser added to every subcommand too, with
    # SUPPRESS defaults, so they may come before or after the command name.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", metavar="URL", default=argparse.SUPPRESS,
                        help="store URL: sqlite:///relative.db, sqlite:////abs/path.db, "
                        "postgresql://... (default: $DUROXY_STORE, else "
                        f"{DEFAULT_STORE})")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable JSON output")
    parser = argparse.ArgumentParser(
        prog="duroxy", parents=[common],
        description="Run and manage duroxy orchestrations.",
        epilog="exit codes: 0 ok, 1 instance FAILED/CANCELLED (start --wait, wait) or "
        "demo mismatch, 2 usage, 3 not found, 4 timeout, 5 store or refused request")
    parser.add_argument("--version", action="version", version=f"duroxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help, description=help)

    p = add("worker", "run a runtime for the registries in MODULE:ATTR until Ctrl-C/SIGTERM")
    p.add_argument("target", metavar="MODULE:ATTR",
                   help="(ActivityRegistry, OrchestrationRegistry), an object or module with "
                   ".activities and .orchestrations, or a callable returning either")
    p.add_argument("--orchestration-concurrency", type=int, metavar="N",
                   help="orchestration turns run at once (default 32)")
    p.add_argument("--activity-concurrency", type=int, metavar="N",
                   help="activities run at once (default 32)")
    p.add_argument("--worker-id", help="name of this worker (default host:pid)")
    p.add_argument("--shutdown-timeout", type=float, default=10.0, metavar="S",
                   help="seconds in-flight work may take to finish on shutdown (default 10)")
    p.add_argument("--log-level", default="INFO",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR", "debug", "info", "warning",
                            "error"], help="default INFO")

    p = add("start", "start an orchestration instance")
    p.add_argument("name", help="registered orchestration name")
    p.add_argument("--id", help="instance id (default: a random UUID)")
    p.add_argument("--input", metavar="JSON", help="input as JSON (or @file.json)")
    p.add_argument("--version", help="run this version instead of the latest")
    p.add_argument("--wait", action="store_true", help="wait for the outcome (needs a worker)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="with --wait: seconds to wait (default 60)")

    p = add("wait", "wait for an instance to finish and show its outcome")
    p.add_argument("instance_id", metavar="ID")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="seconds to wait (default 60)")

    p = add("status", "show an instance's state, output or error")
    p.add_argument("instance_id", metavar="ID")

    p = add("list", "list instances, oldest first")
    p.add_argument("--state", type=str.upper, choices=_STATES)
    p.add_argument("--name", help="only this orchestration name")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="default 100")
    p.add_argument("--offset", type=int, default=0, metavar="N")

    p = add("history", "show an instance's history as a timeline")
    p.add_argument("instance_id", metavar="ID")
    p.add_argument("--execution", type=int, metavar="N",
                   help="this execution (default: the latest)")
    p.add_argument("--full", action="store_true", help="do not shorten payloads")

    p = add("raise-event", "deliver an external event to an instance")
    p.add_argument("instance_id", metavar="ID")
    p.add_argument("event_name", metavar="NAME")
    p.add_argument("data", metavar="JSON", nargs="?", help="event data (default null)")

    p = add("cancel", "cancel a running instance")
    p.add_argument("instance_id", metavar="ID")
    p.add_argument("--reason", default="", help="recorded with the cancellation")

    p = add("delete", "delete an instance, its history and its children")
    p.add_argument("instance_id", metavar="ID")
    p.add_argument("--force", action="store_true", help="also delete a running instance")

    p = add("workers", "list the workers (runtimes) serving the store, from their heartbeats")
    p.add_argument("--all", action="store_true",
                   help="also the workers that shut down (kept for a day)")

    p = add("demo", "run the bundled provisioning example on a throwaway SQLite store "
            "(--store is ignored)")
    p.add_argument("--keep", metavar="PATH",
                   help="keep the store in this SQLite file for a look afterwards")
    return parser


_COMMANDS: dict[str, Callable[[_Env], Awaitable[int]]] = {
    "start": cmd_start, "wait": cmd_wait, "status": cmd_status, "list": cmd_list,
    "history": cmd_history, "raise-event": cmd_raise_event, "cancel": cmd_cancel,
    "delete": cmd_delete, "workers": cmd_workers,
}
#: Commands that only make sense on an existing store (they never create one).
_NEEDS_EXISTING = frozenset(_COMMANDS) - {"start"}
#: Commands that only read: they open the store read-only (see the module docstring).
_READING = frozenset({"status", "list", "history", "wait", "workers"})
#: Added to the error of a store that is not there.
_STORE_HINT = "(pass --store URL or set DUROXY_STORE)"


def _error(message: str) -> None:
    print(f"duroxy: error: {message}", file=sys.stderr, flush=True)


async def _run(args: argparse.Namespace, out: TextIO) -> int:
    as_json = bool(getattr(args, "json", False))
    if args.command == "demo":
        from .examples.provisioning.demo import run_demo

        try:
            return await run_demo(json_output=as_json, keep=args.keep, out=out)
        except TimeoutError as e:
            _error(f"the demo got stuck: {e}")
            return EXIT_TIMEOUT
    url = getattr(args, "store", None) or os.environ.get("DUROXY_STORE") or DEFAULT_STORE
    args.store_url = url
    try:
        provider = connect(url, read_only=args.command in _READING)
    except ConfigurationError as e:  # a malformed --store: a bad argument
        _error(str(e))
        return EXIT_USAGE
    try:
        path = getattr(provider, "path", None)
        # (A store opened read-only says so itself, at its first read.)
        if (args.command in _NEEDS_EXISTING and not provider.read_only
                and isinstance(path, str) and not os.path.exists(path)):
            _error(f"no such store file: {os.path.abspath(path)} {_STORE_HINT}")
            return EXIT_ERROR
        env = _Env(args, Client(provider), as_json, out)
        if args.command == "worker":
            return await cmd_worker(env, provider)
        return await _COMMANDS[args.command](env)
    except UsageError as e:
        _error(str(e))
        return EXIT_USAGE
    except InstanceNotFound as e:
        _error(str(e))
        return EXIT_NOT_FOUND
    except _NotFound as e:
        _error(str(e))
        return EXIT_NOT_FOUND
    except TimeoutError as e:
        _error(str(e) or "timed out")
        return EXIT_TIMEOUT
    except ConfigurationError as e:  # before ValueError: it is one
        _error(str(e))
        return EXIT_USAGE if args.command == "start" else EXIT_ERROR
    except StoreNotFound as e:  # before ProviderError: it is one
        _error(f"{e} {_STORE_HINT}")
        return EXIT_ERROR
    except (_Refused, InstanceAlreadyExists, ProviderError, DuroxyError) as e:
        _error(str(e))
        return EXIT_ERROR
    except ValueError as e:  # a malformed id or name
        _error(str(e))
        return EXIT_USAGE
    finally:
        await provider.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``duroxy`` console script and ``python -m duroxy``."""
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(_run(args, sys.stdout))
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # an unexpected failure: one line, the traceback on request
        if os.environ.get("DUROXY_DEBUG"):
            raise
        _error(f"{type(e).__name__}: {e} (set DUROXY_DEBUG=1 for the traceback)")
        return EXIT_ERROR

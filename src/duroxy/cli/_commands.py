"""The commands of the ``duroxy`` command line, one coroutine each (``cmd_<name>``),
given the parsed arguments and a client on the store."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import uuid
from datetime import UTC, datetime
from shlex import quote as shell_quote

from .._names import did_you_mean
from .._redact import redact
from .._render import (
    ago,
    event_json,
    format_instance,
    format_timeline,
    human_time,
    instance_json,
    name_at,
    worker_json,
    worker_state,
)
from ..client import OrchestrationState
from ..options import RuntimeOptions, TagFilter
from ..providers.base import Provider
from ..runtime import Runtime
from ._common import (
    DEFAULT_STORE,
    EXIT_FAILED,
    EXIT_OK,
    Env,
    NotFound,
    Refused,
    UsageError,
    load_registries,
    parse_json,
)
from ._export import export_instance


def _outcome_code(state: OrchestrationState) -> int:
    return EXIT_OK if state is OrchestrationState.COMPLETED else EXIT_FAILED


#: How long ``start --wait`` and ``wait`` wait before they look for a worker that can
#: run the instance (one that is running finishes most instances well before).
WORKER_HINT_AFTER_S = 1.0


async def _show_final(env: Env, instance_id: str, timeout: float,
                      name: str | None = None, version: str | None = None) -> int:
    hint = asyncio.ensure_future(_worker_hint(env, instance_id, name, version))
    try:
        await env.client.wait_for_orchestration(instance_id, timeout)
    finally:
        hint.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await hint
    info = await env.client.get_instance_info(instance_id)
    if env.as_json:
        env.show(instance_json(info))
    else:
        for line in format_instance(info):
            env.print(line)
    return _outcome_code(info.state)


async def _worker_hint(env: Env, instance_id: str, name: str | None,
                       version: str | None) -> None:
    """After ``WORKER_HINT_AFTER_S``, if the instance is still waiting, say on stderr
    when no live worker could run it (from the workers' heartbeats), and how to start
    one; the wait goes on (a worker started meanwhile serves the instance)."""
    await asyncio.sleep(WORKER_HINT_AFTER_S)
    if name is None:
        info = await env.client.get_instance_info(instance_id)
        if info.state.is_terminal:
            return
        name, version = info.name, info.version
    message = await worker_problem(env, name, version)
    if message is not None:
        env.warn(message, kind="no_worker")


async def worker_problem(env: Env, name: str, version: str | None) -> str | None:
    """Why no live worker will run orchestration ``name`` (at ``version``), or None."""
    workers = [w for w in await env.client.list_workers() if w.alive]
    url = env.args.store_url
    store = "" if url == DEFAULT_STORE and "DUROXY_STORE" not in os.environ \
        else f" --store {shell_quote(redact(url))}"
    start = (f"start one in another terminal with: duroxy{store} worker MODULE:ATTR "
             "(MODULE:ATTR names your registries, e.g. "
             "duroxy.examples.provisioning.registry)")
    if not workers:
        return (f"no worker is running on this store ({redact(url)}), so nothing runs "
                f"{name_at(name, version)!r} yet; {start}")
    key = f"{name}@{version}" if version else None
    if any((key in w.orchestrations) if key else any(o.rpartition("@")[0] == name
                                                     for o in w.orchestrations)
           for w in workers):
        return None
    registered = sorted({o.rpartition("@")[0] for w in workers for o in w.orchestrations})
    has_name = name in registered
    what = (f"version {version} of orchestration {name!r}" if has_name and version
            else f"orchestration {name!r}")
    running = "; ".join(f"{w.worker_id} has {', '.join(w.orchestrations) or 'none'}"
                        for w in workers[:5])
    guess = "" if has_name else did_you_mean(name, registered)
    return (f"no running worker registers {what}{guess} (running: {running}); the "
            "instance waits for a worker that has it: "
            f"register it and restart the worker, or {start}")


async def cmd_start(env: Env) -> int:
    a = env.args
    data = parse_json(a.input, "--input")
    instance_id = str(uuid.uuid4()) if a.id is None else a.id
    if a.version:
        await env.client.start_orchestration_versioned(instance_id, a.name, a.version, data)
    else:
        await env.client.start_orchestration(instance_id, a.name, data)
    if a.wait:
        if not env.as_json:
            env.print(f"started {instance_id} ({name_at(a.name, a.version)}); waiting...")
        return await _show_final(env, instance_id, a.timeout, a.name, a.version)
    if env.as_json:
        env.show({"instance_id": instance_id, "name": a.name, "version": a.version,
                  "state": OrchestrationState.PENDING.value})
    else:
        env.print(f"started {instance_id} ({name_at(a.name, a.version)})")
    return EXIT_OK


async def cmd_wait(env: Env) -> int:
    return await _show_final(env, env.args.instance_id, env.args.timeout)


async def cmd_status(env: Env) -> int:
    info = await env.client.get_instance_info(env.args.instance_id)
    if env.as_json:
        env.show(instance_json(info))
    else:
        for line in format_instance(info):
            env.print(line)
    return EXIT_OK


async def cmd_list(env: Env) -> int:
    a = env.args
    token: str | None = None
    if a.offset and a.page_token is not None:
        raise UsageError("--offset and --page-token do not mix: page with the printed token")
    if a.page_token is None and (a.limit is None or a.offset):
        # every match (or, with --offset, the old offset paging, without a token)
        if a.limit is not None and a.limit < 0:
            raise UsageError(f"--limit must be 0 or more, not {a.limit}")
        infos = await env.client.list_instances(state=a.state, name=a.name,
                                                parent_instance_id=a.parent, limit=a.limit,
                                                offset=a.offset)
        paged = False
    else:
        limit = 100 if a.limit is None else a.limit
        try:
            page = await env.client.list_instances_page(
                state=a.state, name=a.name, parent_instance_id=a.parent, limit=limit,
                page_token=a.page_token)
        except ValueError as e:
            raise UsageError(str(e)) from None
        infos, token, paged = list(page.items), page.next_page_token, True
    if env.as_json:
        items = [instance_json(i) for i in infos]
        env.show({"items": items, "next_page_token": token} if paged else items)
        return EXIT_OK
    if not infos:
        env.print("no instances")
        return EXIT_OK
    # PARENT: the instance that started this one as its sub-orchestration ("-": none).
    rows = [("INSTANCE", "NAME", "STATE", "EXEC", "PARENT", "UPDATED")] + [
        (i.instance_id, name_at(i.name, i.version), i.state.value, str(i.execution_id),
         i.parent_instance_id or "-", human_time(i.updated_at)) for i in infos]
    widths = [min(max(len(r[c]) for r in rows), 60) for c in range(5)]
    for r in rows:
        env.print("  ".join(f"{r[c]:<{widths[c]}}" for c in range(5)) + "  " + r[5])
    if token is not None:
        env.print(f"more match; next page: --page-token {token}")
    return EXIT_OK


async def cmd_history(env: Env) -> int:
    a = env.args
    if a.export is not None:
        return await export_instance(env)
    if a.all_executions:
        raise UsageError("--all-executions goes with --export")
    info = await env.client.get_instance_info(a.instance_id)
    execution = a.execution or info.execution_id
    events = await env.client.read_history(a.instance_id, execution)
    if not events and a.execution and a.execution != info.execution_id:
        executions = await env.client.list_executions(a.instance_id)
        raise NotFound(f"instance {a.instance_id!r} has no execution {a.execution} "
                        f"(executions: {', '.join(map(str, executions)) or 'none'})")
    if env.as_json:
        env.show({"instance_id": a.instance_id, "execution_id": execution,
                  "events": [event_json(e) for e in events]})
        return EXIT_OK
    started = human_time(events[0].timestamp) if events else "-"
    env.print(f"{a.instance_id}  {name_at(info.name, info.version)}  {info.state.value}  "
              f"execution {execution} of {info.execution_id}, started {started}")
    for line in format_timeline(events, width=0 if a.full else 72, indent="  "):
        env.print(line)
    return EXIT_OK


async def cmd_raise_event(env: Env) -> int:
    a = env.args
    data = parse_json(a.data, "event data")
    await env.client.raise_event(a.instance_id, a.event_name, data)
    if env.as_json:
        env.show({"instance_id": a.instance_id, "event_name": a.event_name, "raised": True})
    else:
        env.print(f"raised {a.event_name!r} on {a.instance_id}")
    return EXIT_OK


async def cmd_cancel(env: Env) -> int:
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


async def cmd_delete(env: Env) -> int:
    a = env.args
    info = await env.client.get_instance_info(a.instance_id)
    if not info.state.is_terminal and not a.force:
        raise Refused(f"instance {a.instance_id!r} is {info.state.value}; cancel it first, "
                       "or pass --force to delete it while it runs")
    deleted = await env.client.delete_instance(a.instance_id, force=a.force)
    if env.as_json:
        env.show({"instance_id": a.instance_id, "deleted": deleted})
    else:
        env.print(f"deleted {a.instance_id}" + (f" and {deleted - 1} child instance(s)"
                                                if deleted > 1 else ""))
    return EXIT_OK


async def cmd_workers(env: Env) -> int:
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
        (i.worker_id, worker_state(i), i.host, str(i.pid), human_time(i.started_at)[:-4],
         ago(i.last_seen_at, now), str(i.orchestration_concurrency),
         str(i.activity_concurrency), str(i.active_activities), i.duroxy_version)
        for i in infos]
    widths = [min(max(len(r[c]) for r in rows), 40) for c in range(len(rows[0]))]
    for n, r in enumerate(rows):
        env.print("  ".join(f"{r[c]:<{widths[c]}}" for c in range(len(r))).rstrip())
        if n:  # what the worker runs: during a rolling deploy, who runs which version
            info = infos[n - 1]
            env.print(f"    orchestrations  {', '.join(info.orchestrations) or '-'}")
            env.print(f"    activities      {', '.join(info.activities) or '-'}")
            node = f", node {info.worker_node_id}" if info.worker_node_id else ""
            env.print(f"    routing         tags {info.tag_filter}, "
                      f"{info.sessions_owned} session(s) owned{node}")
    return EXIT_OK


class _Formatter(logging.Formatter):
    """Adds the instance id that duroxy's trace calls attach to their records, and masks
    the passwords of store URLs and DSNs in every line (a driver's error may quote one)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        iid = getattr(record, "instance_id", None)
        return redact(f"{text} [{iid}]" if iid else text)


_FIXED_FILTERS = {"default": TagFilter.DEFAULT_ONLY, "any": TagFilter.ANY,
                  "none": TagFilter.NONE}


def parse_tag_filter(spec: str) -> TagFilter:
    """``duroxy worker --tags``: ``default``, ``any``, ``none``, a comma list of tags, or
    ``default,`` followed by tags (untagged activities and those tags)."""
    text = spec.strip()
    if text.lower() in _FIXED_FILTERS:
        return _FIXED_FILTERS[text.lower()]
    parts = [part.strip() for part in text.split(",")]
    if "" in parts:
        raise UsageError(f"--tags {spec!r}: an empty tag; give 'default', 'any', 'none', "
                         "or tags separated by commas, as in 'gpu,cpu' or 'default,gpu'")
    tags = [part for part in parts if part.lower() != "default"]
    for fixed in ("any", "none"):
        if fixed in (tag.lower() for tag in tags):
            raise UsageError(f"--tags {spec!r}: '{fixed}' stands alone, it does not combine "
                             "with tags")
    try:
        if len(tags) < len(parts):
            return TagFilter.default_and(tags) if tags else TagFilter.DEFAULT_ONLY
        return TagFilter.tags(tags)
    except ValueError as e:
        raise UsageError(f"--tags {spec!r}: {e}") from None


#: the options a refusal names, as the flags that set them
_WORKER_FLAGS = {"orchestration_concurrency": "--orchestration-concurrency",
                 "activity_concurrency": "--activity-concurrency", "worker_id": "--worker-id",
                 "worker_tag_filter": "--tags", "max_sessions_per_runtime": "--max-sessions",
                 "worker_node_id": "--node-id"}


def _in_flags(message: str) -> str:
    """A ``RuntimeOptions`` refusal with the options it names given as their flags."""
    for field, flag in _WORKER_FLAGS.items():
        message = message.replace(f"RuntimeOptions.{field}", flag)
    return message


async def cmd_worker(env: Env, provider: Provider) -> int:
    a = env.args
    acts, orchs = load_registries(a.target)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=a.log_level.upper(), handlers=[handler], force=True)
    given: dict[str, object] = {
        "orchestration_concurrency": a.orchestration_concurrency,
        "activity_concurrency": a.activity_concurrency,
        "worker_id": a.worker_id,
        "worker_tag_filter": None if a.tags is None else parse_tag_filter(a.tags),
        "max_sessions_per_runtime": a.max_sessions,
        "worker_node_id": a.node_id}
    try:
        # RuntimeOptions checks each value's type and range itself
        options = RuntimeOptions(**{k: v for k, v in given.items()
                                    if v is not None})  # type: ignore[arg-type]
    except ValueError as e:
        raise UsageError(_in_flags(str(e))) from None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not on this platform / thread
            pass
    try:
        rt = await Runtime.start(provider, acts, orchs, options)
    except ValueError as e:  # a node id in use by a live worker
        raise UsageError(_in_flags(str(e))) from None
    runs = (f"{len(orchs)} orchestration version(s)" if options.runs_orchestrations
            else "no orchestrations")
    runs += (f", {len(acts)} activities" if options.runs_activities else ", no activities")
    if options.runs_activities and options.worker_tag_filter != TagFilter.DEFAULT_ONLY:
        runs += f" (tags {options.worker_tag_filter.to_text()})"
    print(f"duroxy worker {rt.worker_id}: {runs} on {redact(a.store_url)}; Ctrl-C stops",
          file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        print("stopping: finishing in-flight work...", file=sys.stderr, flush=True)
        await rt.shutdown(timeout=a.shutdown_timeout)
        for sig in installed:
            loop.remove_signal_handler(sig)
    print("worker stopped", file=sys.stderr, flush=True)
    return EXIT_OK


# ====================================================================== ui
def ui_refusal(args: argparse.Namespace) -> str | None:
    """Why ``duroxy ui`` must not start as asked (checked before the store is opened)."""
    if not 0 < args.port < 65536:
        return f"--port must be 1 to 65535, got {args.port}"
    try:
        from ..ui import check_settings
    except ImportError as e:
        return f"duroxy ui needs the ui extra: pip install 'duroxy[ui]' ({e})"
    return check_settings(args.host, args.token, args.read_only)


async def cmd_ui(env: Env) -> int:
    from ..ui import UiSettings, serve

    args = env.args
    settings = UiSettings(read_only=args.read_only, token=args.token,
                          store=redact(args.store_url))
    await serve(env.client, settings, host=args.host, port=args.port, open_browser=args.open)
    return EXIT_OK


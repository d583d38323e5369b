"""Parsing the command line and running one command (see the package docstring)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, TextIO

from .. import __version__
from .._connect import connect
from .._redact import redact
from .._render import dumps
from ..client import Client
from ..errors import (
    ConfigurationError,
    DuroxyError,
    InstanceAlreadyExists,
    InstanceNotFound,
    ProviderError,
    StoreNotFound,
)
from . import _lint
from ._admin import cmd_enqueue, cmd_kv, cmd_prune, cmd_stats, cmd_tree
from ._commands import (
    cmd_cancel,
    cmd_delete,
    cmd_history,
    cmd_list,
    cmd_raise_event,
    cmd_start,
    cmd_status,
    cmd_ui,
    cmd_wait,
    cmd_worker,
    cmd_workers,
    ui_refusal,
)
from ._common import (
    DEFAULT_STORE,
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    STATES,
    Env,
    NotFound,
    Refused,
    UsageError,
)
from ._export import add_export_parser, add_history_export, cmd_export
from ._replay import add_replay_parser, cmd_replay, replay_files
from ._watch import cmd_watch

__all__ = ["build_parser", "main"]


# ====================================================================== parser
class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors given as a JSON object under ``--json``."""

    #: set by :func:`main` from the raw arguments (an error may come before ``--json``
    #: is parsed); shared by the subcommands' parsers, which argparse makes of this class
    json_errors = False

    def error(self, message: str) -> NoReturn:
        if _Parser.json_errors:
            _report_error(message, kind="usage", code=EXIT_USAGE, as_json=True,
                          usage=self.format_usage().strip())
            sys.exit(EXIT_USAGE)
        super().error(redact(message))


def build_parser() -> argparse.ArgumentParser:
    # Global options live on a parent parser added to every subcommand too, with
    # SUPPRESS defaults, so they may come before or after the command name.
    common = _Parser(add_help=False)
    common.add_argument("--store", metavar="URL", default=argparse.SUPPRESS,
                        help="store URL: sqlite:///relative.db, sqlite:////abs/path.db, "
                        "postgresql://... (default: $DUROXY_STORE, else "
                        f"{DEFAULT_STORE})")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable JSON output")
    parser = _Parser(
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
                   help="orchestration turns run at once (default 32; 0: an activity-only worker)")
    p.add_argument("--activity-concurrency", type=int, metavar="N",
                   help="activities run at once (default 32; 0: an orchestration-only worker)")
    p.add_argument("--worker-id", help="name of this worker (default host:pid)")
    p.add_argument("--tags", metavar="SPEC",
                   help="which activities it runs, by tag: 'default' (untagged ones, the "
                   "default), 'any', 'none' (orchestrations only), 'gpu,cpu' (those tags "
                   "only), 'default,gpu' (untagged ones and gpu)")
    p.add_argument("--max-sessions", type=int, metavar="N",
                   help="activity sessions it owns at once (default 10; 0: none)")
    p.add_argument("--node-id", metavar="ID",
                   help="stable identity for session ownership: a worker restarted with "
                   "the same id takes its sessions back at once")
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

    p = add("list", "list instances, oldest first: every match, or one page with --limit "
            "(the next page's token is printed when more match)")
    p.add_argument("--state", type=str.upper, choices=STATES)
    p.add_argument("--name", help="only this orchestration name")
    p.add_argument("--parent", metavar="ID", help="only the children of this instance")
    p.add_argument("--limit", type=int, metavar="N",
                   help="a page of at most N (1 to 1000); default: every match")
    p.add_argument("--page-token", metavar="T",
                   help="the page after the one that printed this token")
    p.add_argument("--offset", type=int, default=0, metavar="N",
                   help="skip the first N matches (without --page-token)")

    p = add("history", "show an instance's history as a timeline")
    p.add_argument("instance_id", metavar="ID")
    p.add_argument("--execution", type=int, metavar="N",
                   help="this execution (default: the latest)")
    p.add_argument("--full", action="store_true", help="do not shorten payloads")
    add_history_export(p)
    add_export_parser(add)

    p = add("watch", "follow an instance's history live: print each event as it is "
            "recorded, exit when the instance ends (0 COMPLETED, 1 FAILED/CANCELLED)")
    p.add_argument("instance_id", metavar="ID")
    p.add_argument("--interval", type=float, default=1.0, metavar="S",
                   help="longest time between two looks at the store while nothing "
                   "happens (default 1)")
    p.add_argument("--full", action="store_true", help="do not shorten payloads")

    p = add("raise-event", "deliver an external event to an instance")
    p.add_argument("instance_id", metavar="ID")
    p.add_argument("event_name", metavar="NAME")
    p.add_argument("data", metavar="JSON", nargs="?", help="event data (default null)")

    p = add("enqueue", "send a message to one of an instance's queues")
    p.add_argument("instance_id", metavar="ID")
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("data", metavar="JSON", nargs="?", help="message data (default null)")

    p = add("kv", "show an instance's key-value state (every key, or KEY's value)")
    p.add_argument("instance_id", metavar="ID")
    p.add_argument("key", metavar="KEY", nargs="?")

    p = add("prune", "delete an instance's past executions and their histories")
    p.add_argument("instance_id", metavar="ID")
    p.add_argument("--keep-last", type=int, default=1, metavar="N",
                   help="executions to keep, the current one included (default 1: it "
                   "alone; it is never pruned)")

    p = add("tree", "show an instance and its descendants")
    p.add_argument("instance_id", metavar="ID")

    p = add("stats", "show an instance's sizes: history, pending messages, KV, executions")
    p.add_argument("instance_id", metavar="ID")

    p = add("cancel", "cancel a running instance")
    p.add_argument("instance_id", metavar="ID")
    p.add_argument("--reason", default="", help="recorded with the cancellation")

    p = add("delete", "delete an instance, its history and its children")
    p.add_argument("instance_id", metavar="ID")
    p.add_argument("--force", action="store_true", help="also delete a running instance")

    p = add("workers", "list the workers (runtimes) serving the store, from their heartbeats")
    p.add_argument("--all", action="store_true",
                   help="also the workers that shut down (kept for a day)")

    _lint.add_parser(add)
    add_replay_parser(add)
    p = add("ui", "serve a web dashboard of the store (needs duroxy[ui]); Ctrl-C stops it")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only); "
                   "another host needs --token, or --read-only")
    p.add_argument("--port", type=int, default=8079, help="default 8079")
    p.add_argument("--read-only", action="store_true",
                   help="open the store read-only and serve no actions at all")
    p.add_argument("--token", help="token every request must carry (Authorization: Bearer, "
                   "or the login form); default $DUROXY_UI_TOKEN")
    p.add_argument("--open", action="store_true", help="open the dashboard in a browser")

    p = add("demo", "run the bundled provisioning example on a throwaway SQLite store "
            "(--store is ignored)")
    p.add_argument("--keep", metavar="PATH",
                   help="keep the store in this SQLite file for a look afterwards")
    return parser


_COMMANDS: dict[str, Callable[[Env], Awaitable[int]]] = {
    "start": cmd_start, "wait": cmd_wait, "status": cmd_status, "list": cmd_list,
    "history": cmd_history, "raise-event": cmd_raise_event, "cancel": cmd_cancel,
    "delete": cmd_delete, "workers": cmd_workers, "watch": cmd_watch,
    "enqueue": cmd_enqueue, "kv": cmd_kv, "prune": cmd_prune, "tree": cmd_tree,
    "stats": cmd_stats, "export": cmd_export, "replay": cmd_replay,
}
#: Commands that only make sense on an existing store (they never create one).
_NEEDS_EXISTING = frozenset(_COMMANDS) - {"start"} | {"ui"}
#: Commands that only read: they open the store read-only (see the module docstring).
_READING = frozenset({"status", "list", "history", "wait", "workers", "watch", "kv",
                      "tree", "stats", "export", "replay"})
#: Added to the error of a store that is not there.
_STORE_HINT = "(pass --store URL or set DUROXY_STORE)"


#: The ``kind`` of a ``--json`` error object, by what went wrong.
ERROR_KINDS = {
    EXIT_USAGE: "usage",
    EXIT_NOT_FOUND: "not_found",
    EXIT_TIMEOUT: "timeout",
}


def _report_error(message: str, *, kind: str, code: int, as_json: bool, **extra: Any) -> int:
    """Say what went wrong on stderr and give the exit code: one line of text, or under
    ``--json`` one JSON object ``{"error": {"kind", "message", "exit_code", ...}}``.
    Passwords of store URLs and DSNs never show (see ``duroxy._redact``)."""
    message = redact(message)
    if as_json:
        body = {"kind": kind, "message": message, "exit_code": code,
                **{k: redact(v) if isinstance(v, str) else v for k, v in extra.items()}}
        print(dumps({"error": body}), file=sys.stderr, flush=True)
    else:
        print(f"duroxy: error: {message}", file=sys.stderr, flush=True)
    return code


async def _run(args: argparse.Namespace, out: TextIO) -> int:
    as_json = bool(getattr(args, "json", False))
    def fail(message: str, code: int, kind: str | None = None, **extra: Any) -> int:
        return _report_error(message, kind=kind or ERROR_KINDS.get(code, "error"), code=code,
                             as_json=as_json, **extra)

    if args.command == "lint":  # reads source code: no store
        return _lint.run(args, out, as_json, lambda message: fail(message, EXIT_USAGE))
    if args.command == "replay" and args.files:  # reads history files: no store
        try:
            return await replay_files(args, out, as_json)
        except UsageError as e:
            return fail(str(e), EXIT_USAGE)
    if args.command == "demo":
        from ..examples.provisioning.demo import run_demo

        if args.keep and os.path.exists(args.keep):
            return fail(f"{args.keep!r} exists; --keep wants a new file", EXIT_USAGE)
        try:
            return await run_demo(json_output=as_json, keep=args.keep, out=out)
        except TimeoutError as e:
            return fail(f"the demo got stuck: {e}", EXIT_TIMEOUT)
    url = getattr(args, "store", None) or os.environ.get("DUROXY_STORE") or DEFAULT_STORE
    args.store_url = url
    if args.command == "ui":
        args.token = args.token or os.environ.get("DUROXY_UI_TOKEN") or None
        problem = ui_refusal(args)
        if problem is not None:
            return fail(problem, EXIT_USAGE)
    try:
        provider = connect(url, read_only=args.command in _READING
                           or (args.command == "ui" and args.read_only))
    except ConfigurationError as e:  # a malformed --store: a bad argument
        return fail(str(e), EXIT_USAGE)
    except ValueError as e:  # a malformed DSN
        return fail(f"bad store URL {url}: {e}", EXIT_USAGE)
    try:
        path = getattr(provider, "path", None)
        # (A store opened read-only says so itself, at its first read.)
        if (args.command in _NEEDS_EXISTING and not provider.read_only
                and isinstance(path, str) and not os.path.exists(path)):
            return fail(f"no such store file: {os.path.abspath(path)} {_STORE_HINT}",
                        EXIT_ERROR, "store")
        env = Env(args, Client(provider), as_json, out)
        if args.command == "worker":
            return await cmd_worker(env, provider)
        if args.command == "ui":
            return await cmd_ui(env)
        return await _COMMANDS[args.command](env)
    except UsageError as e:
        return fail(str(e), EXIT_USAGE)
    except InstanceNotFound as e:
        return fail(str(e), EXIT_NOT_FOUND, instance_id=e.instance_id)
    except NotFound as e:
        return fail(str(e), EXIT_NOT_FOUND)
    except TimeoutError as e:
        return fail(str(e) or "timed out", EXIT_TIMEOUT)
    except ConfigurationError as e:  # before ValueError: it is one
        if args.command == "start":
            return fail(str(e), EXIT_USAGE)
        return fail(str(e), EXIT_ERROR, "store")
    except StoreNotFound as e:  # before ProviderError: it is one
        return fail(f"{e} {_STORE_HINT}", EXIT_ERROR, "store")
    except ProviderError as e:
        # A file store's errors name its file, and the specific ones (schema version,
        # read-only) their store; a server's failure does not: name it (its password
        # masked by fail()).
        named = isinstance(getattr(provider, "path", None), str) or type(e) is not ProviderError
        return fail(str(e) if named else f"{e} (store: {url})", EXIT_ERROR, "store",
                    retryable=e.retryable)
    except (Refused, InstanceAlreadyExists, DuroxyError) as e:
        return fail(str(e), EXIT_ERROR, "refused")
    except ValueError as e:  # a malformed id or name
        return fail(str(e), EXIT_USAGE)
    finally:
        await provider.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``duroxy`` console script and ``python -m duroxy``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _Parser.json_errors = "--json" in argv
    args = build_parser().parse_args(argv)
    as_json = bool(getattr(args, "json", False))
    try:
        return asyncio.run(_run(args, sys.stdout))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`duroxy history ID | head`): what it read is all it
        # wanted. Nothing more can reach it, not even at exit, so stdout goes nowhere.
        _quiet_stdout()
        return EXIT_OK
    except Exception as e:  # an unexpected failure: one line, the traceback on request
        if os.environ.get("DUROXY_DEBUG"):
            raise
        return _report_error(f"{type(e).__name__}: {e} (set DUROXY_DEBUG=1 for the "
                             "traceback)", kind="internal", code=EXIT_ERROR, as_json=as_json)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's flush at exit finds no
    broken pipe to complain about."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no file descriptor behind stdout (embedded use)
        pass

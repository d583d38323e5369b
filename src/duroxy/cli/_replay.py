"""``duroxy replay MODULE:ATTR [FILE ...]``: recorded histories replayed against the
code of the registries in MODULE:ATTR (the ``Replayer`` of :mod:`duroxy.testing`).
With files it reads them and needs no store; without, it replays the store, opened
read-only. Exit codes: 0 every history replayed, 1 some did not, 2 a usage error (a
bad target, a file that is not a history file), 5 the store failed."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from .._render import dumps
from ..errors import PayloadError
from ..testing import Replayer, ReplayReport, ReplayResult
from ._common import EXIT_FAILED, EXIT_OK, STATES, Env, UsageError, load_registries

__all__ = ["add_replay_parser", "cmd_replay", "replay_files"]


def add_replay_parser(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = add("replay", "replay recorded histories against the code of MODULE:ATTR (files "
            "from duroxy export, or the store's instances): exit 1 when the code cannot "
            "replay one, as a deployment would fail it for nondeterminism")
    p.add_argument("target", metavar="MODULE:ATTR",
                   help="the registries, as for duroxy worker")
    p.add_argument("files", metavar="FILE", nargs="*",
                   help="history files or directories of them (default: the store)")
    p.add_argument("--name", help="only histories of this orchestration name")
    p.add_argument("--state", type=str.upper, choices=STATES,
                   help="only instances in this state (store only)")
    p.add_argument("--limit", type=int, metavar="N", default=1000,
                   help="at most N instances, oldest first (store only; default 1000)")
    p.add_argument("--all-executions", action="store_true",
                   help="every stored execution of each instance, not only the latest "
                   "(store only)")


def _replayer(target: str) -> Replayer:
    activities, orchestrations = load_registries(target)
    return Replayer(orchestrations, activities=activities)


def _report(report: ReplayReport, out: TextIO, as_json: bool) -> int:
    if as_json:
        print(dumps({"ok": report.ok, "replayed": len(report.results),
                     "failed": len(report.failures),
                     "results": [{"instance_id": r.instance_id,
                                  "execution_id": r.execution_id, "name": r.name,
                                  "version": r.version, "ok": r.ok, "kind": r.kind,
                                  "event_id": r.event_id, "message": r.message}
                                 for r in report.results]}, indent=2), file=out)
    else:
        for failure in report.failures:
            print(str(failure), file=out)
        n, failed = len(report.results), len(report.failures)
        print(f"replayed {n} histor{'y' if n == 1 else 'ies'}: "
              + (f"{failed} failed" if failed else "all replayed"), file=out)
    return EXIT_OK if report.ok else EXIT_FAILED


async def replay_files(args: argparse.Namespace, out: TextIO, as_json: bool) -> int:
    """The FILE form: no store is opened."""
    if args.state is not None or args.all_executions:
        raise UsageError("--state and --all-executions select instances of a store: give "
                         "them without FILE")
    replayer = _replayer(args.target)
    results: list[ReplayResult] = []
    for name in args.files:
        try:
            part = await replayer.replay(Path(name))
        except (PayloadError, OSError) as e:
            raise UsageError(f"cannot read {name!r} as history files: {e}") from None
        results.extend(r for r in part.results if args.name is None or r.name == args.name)
    return _report(ReplayReport(tuple(results)), out, as_json)


async def cmd_replay(env: Env) -> int:
    """The store form (the store is opened read-only)."""
    a = env.args
    if a.limit < 0:
        raise UsageError(f"--limit must be 0 or more, got {a.limit}")
    replayer = _replayer(a.target)
    report = await replayer.replay_store(env.client, name=a.name, state=a.state,
                                         limit=a.limit, all_executions=a.all_executions)
    return _report(report, env.out, env.as_json)

"""``duroxy history ID --export FILE`` and ``duroxy export FILE``: histories written in
the history file format (``duroxy.history.dump_histories``), for the replayer of
``duroxy.testing`` and ``duroxy replay``. Both only read the store."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

from ..errors import InstanceNotFound
from ..history import ExecutionHistory, dump_histories
from ._common import EXIT_OK, STATES, Env, NotFound, UsageError

__all__ = ["add_export_parser", "cmd_export", "export_instance"]


def add_export_parser(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = add("export", "write the histories of many instances to a history file (the "
            "latest execution of each; for duroxy replay and tests)")
    p.add_argument("file", metavar="FILE", help="the file to write ('-': standard output)")
    p.add_argument("--state", type=str.upper, choices=STATES)
    p.add_argument("--name", help="only this orchestration name")
    p.add_argument("--limit", type=int, metavar="N",
                   help="at most N instances, oldest first (default: every match)")
    p.add_argument("--all-executions", action="store_true",
                   help="every stored execution of each instance, not only the latest")


def add_history_export(p: argparse.ArgumentParser) -> None:
    """The ``--export`` options of ``duroxy history``."""
    p.add_argument("--export", metavar="FILE",
                   help="write the history to FILE in the history file format instead of "
                   "showing it ('-': standard output)")
    p.add_argument("--all-executions", action="store_true",
                   help="with --export: every stored execution, not only the latest")


@contextlib.contextmanager
def _opened(path: str, out: TextIO) -> Iterator[TextIO]:
    """The file to write (``-``: ``out``), written whole or not at all: a file is written
    beside its place and moved there once complete."""
    if path == "-":
        yield out
        return
    tmp = f"{path}.part"
    try:
        fh = open(tmp, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as e:
        raise UsageError(f"cannot write {path!r}: {e.strerror}") from None
    try:
        with fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _write(env: Env, path: str, histories: list[ExecutionHistory]) -> int:
    with _opened(path, env.out) as fh:
        dump_histories(histories, fh)
    if path == "-":
        return EXIT_OK
    events = sum(len(h.events) for h in histories)
    instances = len({h.instance_id for h in histories})
    summary = {"file": path, "instances": instances, "histories": len(histories),
               "events": events}
    if env.as_json:
        env.show(summary)
    else:
        # (on stderr when the histories go to stdout: never mixed into the file)
        print(f"wrote {len(histories)} histor{'y' if len(histories) == 1 else 'ies'} of "
              f"{instances} instance{'' if instances == 1 else 's'} ({events} events) to "
              f"{path}", file=env.out if path != "-" else sys.stderr)
    return EXIT_OK


async def _histories_of(env: Env, instance_id: str, all_executions: bool
                        ) -> list[ExecutionHistory]:
    if not all_executions:
        return [await env.client.export_history(instance_id)]
    out = []
    for eid in await env.client.list_executions(instance_id):
        with contextlib.suppress(KeyError):  # (pruned meanwhile)
            out.append(await env.client.export_history(instance_id, eid))
    return out or [await env.client.export_history(instance_id)]


async def export_instance(env: Env) -> int:
    """``duroxy history ID --export FILE [--all-executions] [--execution N]``."""
    a = env.args
    if a.execution is not None and a.all_executions:
        raise UsageError("--execution and --all-executions exclude each other")
    if a.execution is not None:
        try:
            histories = [await env.client.export_history(a.instance_id, a.execution)]
        except KeyError as e:
            raise NotFound(str(e.args[0])) from None
    else:
        histories = await _histories_of(env, a.instance_id, a.all_executions)
    return _write(env, a.export, histories)


async def cmd_export(env: Env) -> int:
    a = env.args
    if a.limit is not None and a.limit < 0:
        raise UsageError(f"--limit must be 0 or more, got {a.limit}")
    histories: list[ExecutionHistory] = []
    seen = 0
    async for info in env.client.iter_instances(state=a.state, name=a.name):
        if a.limit is not None and seen >= a.limit:
            break
        seen += 1
        with contextlib.suppress(KeyError, InstanceNotFound):  # (deleted or pruned meanwhile)
            histories.extend(await _histories_of(env, info.instance_id, a.all_executions))
    return _write(env, a.file, histories)

"""``duroxy lint``: the determinism lint of :mod:`duroxy.testing` on the command line.
It reads source code only and needs no store."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import TextIO

from ..runtime.registry import RegistriesNotFound
from ..testing import lint
from ._common import EXIT_FAILED, EXIT_OK, EXIT_USAGE

__all__ = ["add_parser", "run"]


def add_parser(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = add("lint", "find nondeterministic calls in orchestration code (reads the source, "
            "runs nothing)")
    p.add_argument("targets", nargs="+", metavar="TARGET",
                   help="MODULE:ATTR (the registries found there), MODULE (its registries "
                   "and its async defs taking an OrchestrationContext) or a .py path")
    p.add_argument("--select", metavar="IDS", help="only these rules (DUR001,DUR006,...)")
    p.add_argument("--ignore", metavar="IDS", help="all rules but these")


def run(args: argparse.Namespace, out: TextIO, as_json: bool,
        error: Callable[[str], object]) -> int:
    """Exit code 0: nothing found; 1: findings; 2: a target or a rule id that is wrong."""
    try:
        findings = lint(*args.targets, select=args.select, ignore=args.ignore)
    except (RegistriesNotFound, ValueError, TypeError, ImportError, SyntaxError,
            OSError) as e:
        error(str(e))
        return EXIT_USAGE
    if as_json:
        print(json.dumps([f.to_json() for f in findings], indent=2), file=out)
    else:
        for f in findings:
            print(str(f), file=out)
    return EXIT_FAILED if findings else EXIT_OK

"""What the command line's parts share: exit codes, its errors, the environment a
command runs in, and reading its arguments (JSON values, ``MODULE:ATTR`` registries)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
import os
import sys
from typing import Any, TextIO

from .._redact import redact
from .._render import (
    dumps,
    short,
)
from ..client import Client, OrchestrationState
from ..runtime import ActivityRegistry, OrchestrationRegistry

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_TIMEOUT = 4
EXIT_ERROR = 5

DEFAULT_STORE = "sqlite:///duroxy.db"
#: Payload fields of history events: JSON text, shown decoded or shortened.
STATES = [s.value for s in OrchestrationState if s is not OrchestrationState.NOT_FOUND]


class UsageError(Exception):
    """A mistake in the command line itself (exit code 2)."""



class NotFound(Exception):
    """Something named on the command line does not exist (exit code 3)."""


class Refused(Exception):
    """The store holds the request back, e.g. deleting a running instance (exit code 5)."""



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



# ====================================================================== arguments
def parse_json(text: str | None, what: str) -> Any:
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
                         f"{e.colno}): {short(text, 40)!r}") from None
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
class Env:
    args: argparse.Namespace
    client: Client
    as_json: bool
    out: TextIO

    def print(self, text: str = "") -> None:
        print(text, file=self.out)

    def show(self, value: Any) -> None:
        print(dumps(value, indent=2), file=self.out)

    def warn(self, message: str, *, kind: str) -> None:
        """A warning on stderr (the command goes on): a line of text, or under ``--json``
        one JSON object ``{"warning": {"kind", "message"}}``. Passwords never show."""
        message = redact(message)
        if self.as_json:
            print(dumps({"warning": {"kind": kind, "message": message}}), file=sys.stderr,
                  flush=True)
        else:
            print(f"duroxy: warning: {message}", file=sys.stderr, flush=True)



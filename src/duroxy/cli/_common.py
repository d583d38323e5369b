"""What the command line's parts share: exit codes, its errors, the environment a
command runs in, and reading its arguments (JSON values, ``MODULE:ATTR`` registries)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, TextIO

from .._redact import redact
from .._render import (
    dumps,
    short,
)
from ..client import Client, OrchestrationState
from ..runtime import ActivityRegistry, OrchestrationRegistry
from ..runtime.registry import RegistriesNotFound
from ..runtime.registry import load_registries as _load_registries

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
def load_registries(target: str) -> tuple[ActivityRegistry, OrchestrationRegistry]:
    """The registries ``MODULE[:ATTR]`` names (see
    :func:`duroxy.runtime.registry.load_registries`); a bad target is a usage error."""
    try:
        return _load_registries(target)
    except RegistriesNotFound as e:
        raise UsageError(str(e)) from None



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



"""Hooks: the few points at which the runtime and the client tell observers what they do.

The runtime calls a small set of hooks (a turn starts and ends, with whether it
replayed; an activity attempt starts and ends; work is fetched; a store operation
fails) and the client calls one around each start or signal. The runtime's metrics
(``runtime.metrics_snapshot()``), the slow-turn warning and OpenTelemetry
(:mod:`duroxy.otel`) are all built on them; nothing else in duroxy knows of any of the
three.

Every runtime has hooks of its own (its metrics); an integration adds hooks for every
runtime and client of the process with :func:`install` (and takes them away with
:func:`uninstall`). Until one is installed, the client runs no hook code at all and the
runtime only its own counters.

Invariants:

* Hooks run on the caller's event loop, synchronously: they must be quick and never
  block. An installed hook that raises is logged and ignored; it never fails a turn, an
  activity or a client call.
* For every ``turn_start`` there is exactly one ``turn_end``; ``turn_committing`` comes
  between them only when the turn is about to be committed, with its outcome known
  (so counters updated there are seen by anyone who sees the commit's result), and
  ``turn_end`` tells whether the commit returned (``turn.committed``). The same holds
  for ``activity_start`` / ``activity_committing`` / ``activity_end``.
* ``schedule`` is called once per *new* schedule call of the orchestration code (never
  while replaying, once for an activity with retries whatever its attempts) and may
  return a trace context that travels with the work it scheduled.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import ErrorDetails

__all__ = [
    "ActivityAttempt",
    "ClientHooks",
    "RuntimeHooks",
    "Turn",
    "client_call",
    "client_hooks",
    "install",
    "installed_runtime_hooks",
    "uninstall",
]

logger = logging.getLogger("duroxy.runtime")

#: a W3C trace context as stored (``traceparent``, ``tracestate``)
Carrier = dict[str, str]


@dataclass(slots=True, eq=False)
class Turn:
    """One orchestration turn as the hooks see it. The fields after ``trace_context``
    are filled in as the turn goes: by ``turn_committing`` its outcome is known."""

    instance_id: str
    execution_id: int
    name: str
    version: str | None
    worker_id: str
    #: the execution was rebuilt by replaying its stored history (not from the cache)
    replayed: bool = False
    #: the execution's first turn (its start was among the turn's events)
    first: bool = False
    #: the trace context the execution continues (its start's)
    trace_context: Carrier | None = None
    #: history events the turn replayed before handling new ones
    replayed_events: int = 0
    #: the instance's state the commit writes: RUNNING, COMPLETED, FAILED, CANCELLED, or
    #: CONTINUED_AS_NEW for an execution that ended so
    state: str = "RUNNING"
    error: ErrorDetails | None = None
    #: seconds the engine's turn took (the orchestration code and any replay)
    duration: float = 0.0
    #: when the execution started (epoch ms of its start event)
    execution_started_ms: int = 0
    #: new schedule calls of child orchestrations in this turn
    suborchestrations: int = 0
    #: messages dropped by a continue-as-new (past the carry-forward cap)
    dropped: int = 0
    #: whether the commit returned, else what it raised (set before ``turn_end``)
    committed: bool = False
    commit_error: BaseException | None = None
    #: what each hook's ``turn_start`` returned, by hook (the runtime's business)
    tokens: list[Any] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class ActivityAttempt:
    """One activity attempt as the hooks see it."""

    instance_id: str
    execution_id: int
    orchestration_name: str
    orchestration_version: str | None
    name: str
    #: the retry attempt (``ActivityContext.attempt``)
    attempt: int
    worker_id: str
    trace_context: Carrier | None = None
    tag: str | None = None
    #: success, app_error, config_error, infra_error or poison (known by
    #: ``activity_committing``)
    outcome: str = "success"
    error: ErrorDetails | None = None
    #: the exception the activity raised, when it did
    exception: BaseException | None = None
    #: seconds the activity ran
    duration: float = 0.0
    committed: bool = False
    commit_error: BaseException | None = None
    tokens: list[Any] = field(default_factory=list)


class RuntimeHooks:
    """What a runtime tells an observer; every method does nothing unless overridden.
    A method's return value (``turn_start``, ``activity_start``) is handed back to the
    same hook's later calls for that turn or attempt as ``token``."""

    def turn_start(self, turn: Turn) -> Any:
        return None

    def schedule(self, turn: Turn, token: Any, kind: str, name: str) -> Carrier | None:
        """A new schedule call (``kind``: ``activity`` or ``sub_orchestration``); a
        returned trace context is carried with the scheduled work."""
        return None

    def turn_committing(self, turn: Turn, token: Any) -> None:
        pass

    def turn_end(self, turn: Turn, token: Any) -> None:
        pass

    def activity_start(self, attempt: ActivityAttempt) -> Any:
        return None

    def activity_committing(self, attempt: ActivityAttempt, token: Any) -> None:
        pass

    def activity_end(self, attempt: ActivityAttempt, token: Any) -> None:
        pass

    def fetched(self, kind: str, count: int) -> None:
        """``count`` items of ``kind`` (``orchestration`` or ``activity``) were handed
        to this runtime by its store (fetched, or claimed by a turn's commit)."""

    def provider_error(self, error: BaseException) -> None:
        """A store operation raised ``ProviderError`` (lock losses are answers, not
        errors, and are not reported)."""

    def runtime_started(self, worker_id: str, held: Callable[[], tuple[int, int]]) -> None:
        """A runtime runs (or this hook was installed while it ran). ``held()`` gives
        the turns and the activities it holds now (fetched or claimed, not finished);
        it may be called from any thread."""

    def runtime_stopped(self, worker_id: str) -> None:
        pass


class ClientHooks:
    """What a client tells an observer."""

    @contextlib.contextmanager
    def call(self, operation: str, name: str, instance_id: str) -> Iterator[Carrier | None]:
        """Around a client call (``operation``: ``start``, ``raise_event``,
        ``enqueue_event``) naming ``name`` (the orchestration, event or queue). For a
        start, the trace context yielded is stored with the instance."""
        yield None


# ====================================================================== installed hooks
_runtime_hooks: tuple[RuntimeHooks, ...] = ()
_client_hooks: tuple[ClientHooks, ...] = ()
#: grows with every install and uninstall, so runtimes notice a change cheaply
generation = 0


def install(runtime: RuntimeHooks | None = None, client: ClientHooks | None = None) -> None:
    """Add hooks for every runtime and client of this process (running ones too)."""
    global _runtime_hooks, _client_hooks, generation
    if runtime is not None and runtime not in _runtime_hooks:
        _runtime_hooks = (*_runtime_hooks, runtime)
    if client is not None and client not in _client_hooks:
        _client_hooks = (*_client_hooks, client)
    generation += 1


def uninstall(runtime: RuntimeHooks | None = None, client: ClientHooks | None = None) -> None:
    global _runtime_hooks, _client_hooks, generation
    _runtime_hooks = tuple(h for h in _runtime_hooks if h is not runtime)
    _client_hooks = tuple(h for h in _client_hooks if h is not client)
    generation += 1


def installed_runtime_hooks() -> tuple[RuntimeHooks, ...]:
    return _runtime_hooks


def client_hooks() -> tuple[ClientHooks, ...]:
    return _client_hooks


@contextlib.contextmanager
def client_call(operation: str, name: str, instance_id: str) -> Iterator[Carrier | None]:
    """Run the installed client hooks around a client call; yields the trace context
    of the first hook that gives one. A hook that fails is logged and left out; an
    exception of the call itself passes through every hook (which may record it)."""
    with contextlib.ExitStack() as stack:
        carrier: Carrier | None = None
        for hook in _client_hooks:
            try:
                got = stack.enter_context(hook.call(operation, name, instance_id))
            except Exception:
                logger.exception("a client hook failed; ignoring it")
                continue
            if carrier is None:
                carrier = got
        yield carrier

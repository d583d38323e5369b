"""OpenTelemetry for duroxy (extra ``otel``): spans and metrics of clients and runtimes.

``DuroxyInstrumentor().instrument(tracer_provider=..., meter_provider=...)`` (the
``opentelemetry-instrumentation`` ``BaseInstrumentor`` API; providers not given are the
application's global ones) installs hooks (:mod:`duroxy._hooks`) for every client and
runtime of the process, running ones included; ``uninstrument()`` removes them. duroxy
never installs providers, exporters or propagators of its own, and until ``instrument()``
no code of this module runs (it is imported only by whoever uses it, or by
``opentelemetry-instrument`` through the ``opentelemetry_instrumentor`` entry point).

Spans (Temporal's ``Verb:Name`` naming):

* ``StartOrchestration:{name}`` (PRODUCER) around ``Client.start_orchestration*``; the
  current context, with this span, is injected through the global propagator into the
  instance's ``OrchestrationStarted.trace_context`` (W3C ``traceparent``/``tracestate``).
  ``RaiseEvent:{event}`` / ``EnqueueEvent:{queue}`` (PRODUCER) around client signals.
* ``OrchestrationTurn:{name}`` (INTERNAL), child of the execution's stored context, for
  each turn a runtime processes; ``duroxy.turn.replayed`` is true when the turn rebuilt
  the execution by replaying its history. Continue-as-new executions carry the same
  context, so every execution of an instance, and every child, is in one trace.
* ``StartActivity:{name}`` / ``StartSubOrchestration:{name}`` (INTERNAL), children of
  the turn, once per schedule call: the engine tells the hooks only of new decisions,
  never of replayed ones, and a retry's later attempts reuse the first's context. They
  are ended (so exported) only once the turn's commit returned: a turn whose commit
  fails is replayed later and exports its schedule calls then, once.
* ``RunActivity:{name}`` (CONSUMER), child of its ``StartActivity`` span (the context
  travels in the activity's work item, to whichever process runs it), one per attempt,
  current while the activity runs (so the activity's own spans nest under it).

A failed attempt, a turn that failed its instance, or a commit refused by the store sets
status ERROR and records the exception.

Metrics (the application's meter; Duroxide's names with ``duroxy.`` for ``duroxide_``):
counters ``duroxy.orchestration.starts`` / ``.completions`` / ``.failures`` /
``.continue_as_new`` / ``.poison``, ``duroxy.activity.executions`` (``outcome``),
``duroxy.activity.poison``, ``duroxy.provider.errors``; histograms in seconds
``duroxy.orchestration.duration``, ``duroxy.orchestration.turn.duration``,
``duroxy.activity.duration``; gauges ``duroxy.orchestrator.queue_depth`` and
``duroxy.worker.queue_depth`` (the turns and activities the process's runtimes hold:
fetched or claimed, not yet finished). Attributes: ``orchestration_name``, ``version``,
``activity_name``, ``outcome``, ``tag``; never an instance id (cardinality).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from . import _hooks
from ._hooks import ActivityAttempt, Carrier, ClientHooks, RuntimeHooks, Turn
from ._version import __version__
from .errors import ErrorDetails

__all__ = ["DuroxyInstrumentor"]

_SCOPE = "duroxy"
_CLIENT_SPANS = {"start": "StartOrchestration", "raise_event": "RaiseEvent",
                 "enqueue_event": "EnqueueEvent"}
_SCHEDULE_SPANS = {"activity": "StartActivity", "sub_orchestration": "StartSubOrchestration"}
#: an execution's end states (for its duration)
_ENDED = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CONTINUED_AS_NEW"})


def _parent(carrier: Carrier | None) -> otel_context.Context:
    """The context a stored trace context names (an empty one: a new trace)."""
    return propagate.extract(carrier) if carrier else otel_context.Context()


def _carrier(span: Span) -> Carrier | None:
    carrier: Carrier = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return carrier or None


def _record_error(span: Span, error: ErrorDetails | None, exc: BaseException | None) -> None:
    """Status ERROR, with the exception recorded (or, when only its details are known,
    an ``exception`` event with the same attributes)."""
    if exc is not None:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        return
    if error is not None:
        span.add_event("exception", {"exception.type": error.error_type,
                                     "exception.message": error.message,
                                     "duroxy.error.kind": error.kind})
        span.set_status(Status(StatusCode.ERROR, f"{error.error_type}: {error.message}"))


class _TurnScope:
    __slots__ = ("pending", "span")

    def __init__(self, span: Span) -> None:
        self.span = span
        #: schedule-call spans, ended once the turn's commit returned
        self.pending: list[Span] = []


class _RuntimeHooks(RuntimeHooks):
    def __init__(self, tracer: trace.Tracer, meter: metrics.Meter) -> None:
        self.tracer = tracer
        self._held: dict[str, Callable[[], tuple[int, int]]] = {}
        self._lock = threading.Lock()  # _held is read by the metric reader's thread
        counter = meter.create_counter
        self.starts = counter("duroxy.orchestration.starts", "{execution}",
                              "Executions whose first turn ran")
        self.completions = counter("duroxy.orchestration.completions", "{execution}",
                                   "Executions that completed")
        self.failures = counter("duroxy.orchestration.failures", "{execution}",
                                "Executions that failed")
        self.continued = counter("duroxy.orchestration.continue_as_new", "{execution}",
                                 "Executions ended by continue-as-new")
        self.orch_poison = counter("duroxy.orchestration.poison", "{execution}",
                                   "Executions failed as poison")
        self.activities = counter("duroxy.activity.executions", "{attempt}",
                                  "Activity attempts, by outcome")
        self.act_poison = counter("duroxy.activity.poison", "{attempt}",
                                  "Activity attempts refused as poison")
        self.provider_errors = counter("duroxy.provider.errors", "{error}",
                                       "Store operations that failed")
        self.orch_duration = meter.create_histogram(
            "duroxy.orchestration.duration", "s", "Executions, from start to end")
        self.turn_duration = meter.create_histogram(
            "duroxy.orchestration.turn.duration", "s", "Orchestration turns (code and replay)")
        self.act_duration = meter.create_histogram(
            "duroxy.activity.duration", "s", "Activity attempts")
        meter.create_observable_gauge("duroxy.orchestrator.queue_depth", [self._turns_held],
                                      "{turn}", "Turns the process's runtimes hold")
        meter.create_observable_gauge("duroxy.worker.queue_depth", [self._activities_held],
                                      "{activity}", "Activities the process's runtimes hold")

    # ------------------------------------------------------------------ gauges
    def runtime_started(self, worker_id: str, held: Callable[[], tuple[int, int]]) -> None:
        with self._lock:
            self._held[worker_id] = held

    def runtime_stopped(self, worker_id: str) -> None:
        with self._lock:
            self._held.pop(worker_id, None)

    def _observe(self, index: int) -> Sequence[Observation]:
        with self._lock:
            held = list(self._held.values())
        return [Observation(sum(h()[index] for h in held))]

    def _turns_held(self, _options: CallbackOptions) -> Sequence[Observation]:
        return self._observe(0)

    def _activities_held(self, _options: CallbackOptions) -> Sequence[Observation]:
        return self._observe(1)

    # ------------------------------------------------------------------ turns
    def turn_start(self, turn: Turn) -> _TurnScope:
        attributes: dict[str, Any] = {
            "duroxy.instance_id": turn.instance_id, "duroxy.execution_id": turn.execution_id,
            "duroxy.orchestration.name": turn.name, "duroxy.worker_id": turn.worker_id,
            "duroxy.turn.replayed": turn.replayed}
        if turn.version is not None:
            attributes["duroxy.orchestration.version"] = turn.version
        span = self.tracer.start_span(f"OrchestrationTurn:{turn.name}",
                                      context=_parent(turn.trace_context),
                                      kind=SpanKind.INTERNAL, attributes=attributes)
        return _TurnScope(span)

    def schedule(self, turn: Turn, token: Any, kind: str, name: str) -> Carrier | None:
        scope: _TurnScope = token
        attributes: dict[str, Any] = {
            "duroxy.instance_id": turn.instance_id, "duroxy.execution_id": turn.execution_id,
            "duroxy.orchestration.name": turn.name, "duroxy.worker_id": turn.worker_id}
        if kind == "activity":
            attributes["duroxy.activity.name"] = name
        else:
            attributes["duroxy.sub_orchestration.name"] = name
        span = self.tracer.start_span(f"{_SCHEDULE_SPANS[kind]}:{name}",
                                      context=trace.set_span_in_context(scope.span),
                                      kind=SpanKind.INTERNAL, attributes=attributes)
        scope.pending.append(span)
        return _carrier(span)

    def turn_end(self, turn: Turn, token: Any) -> None:
        scope: _TurnScope = token
        span = scope.span
        if turn.committed:
            for pending in scope.pending:
                pending.end()
            if turn.state == "FAILED":
                _record_error(span, turn.error, None)
            span.set_attribute("duroxy.orchestration.state", turn.state)
            self._count_turn(turn)
        else:
            # Never ended, so never exported: the turn is replayed and schedules anew.
            scope.pending.clear()
            if turn.commit_error is not None:
                _record_error(span, None, turn.commit_error)
        span.end()

    def _count_turn(self, turn: Turn) -> None:
        attributes = {"orchestration_name": turn.name}
        if turn.version is not None:
            attributes["version"] = turn.version
        self.turn_duration.record(turn.duration, attributes)
        if turn.first:
            self.starts.add(1, attributes)
        state = turn.state
        if state == "COMPLETED":
            self.completions.add(1, attributes)
        elif state == "FAILED":
            self.failures.add(1, attributes)
            if turn.error is not None and turn.error.kind == "poison":
                self.orch_poison.add(1, attributes)
        elif state == "CONTINUED_AS_NEW":
            self.continued.add(1, attributes)
        if state in _ENDED and turn.execution_started_ms:
            self.orch_duration.record(
                max(0.0, time.time() - turn.execution_started_ms / 1000.0), attributes)

    # ------------------------------------------------------------------ activities
    def activity_start(self, attempt: ActivityAttempt) -> tuple[Span, object]:
        attributes: dict[str, Any] = {
            "duroxy.instance_id": attempt.instance_id,
            "duroxy.execution_id": attempt.execution_id,
            "duroxy.orchestration.name": attempt.orchestration_name,
            "duroxy.activity.name": attempt.name, "duroxy.activity.attempt": attempt.attempt,
            "duroxy.worker_id": attempt.worker_id}
        if attempt.orchestration_version is not None:
            attributes["duroxy.orchestration.version"] = attempt.orchestration_version
        span = self.tracer.start_span(f"RunActivity:{attempt.name}",
                                      context=_parent(attempt.trace_context),
                                      kind=SpanKind.CONSUMER, attributes=attributes)
        # Current while the activity runs (in its task; a plain def activity's thread
        # gets a copy of that context), so spans the activity makes are its children.
        return span, otel_context.attach(trace.set_span_in_context(span))

    def activity_end(self, attempt: ActivityAttempt, token: Any) -> None:
        span, attached = token
        with contextlib.suppress(Exception):
            otel_context.detach(attached)
        if attempt.outcome != "success":
            _record_error(span, attempt.error, attempt.exception)
        elif not attempt.committed and attempt.commit_error is not None:
            _record_error(span, None, attempt.commit_error)
        span.set_attribute("duroxy.activity.outcome", attempt.outcome)
        span.end()
        if not attempt.committed:
            return
        attributes = {"activity_name": attempt.name, "outcome": attempt.outcome}
        if attempt.tag is not None:
            attributes["tag"] = attempt.tag
        self.activities.add(1, attributes)
        if attempt.outcome == "poison":
            self.act_poison.add(1, {"activity_name": attempt.name})
        self.act_duration.record(attempt.duration, attributes)

    # ------------------------------------------------------------------ the store
    def provider_error(self, error: BaseException) -> None:
        self.provider_errors.add(1)


class _ClientHooks(ClientHooks):
    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    @contextlib.contextmanager
    def call(self, operation: str, name: str, instance_id: str) -> Iterator[Carrier | None]:
        attributes: dict[str, Any] = {"duroxy.instance_id": instance_id}
        if operation == "start":
            attributes["duroxy.orchestration.name"] = name
        with self.tracer.start_as_current_span(f"{_CLIENT_SPANS[operation]}:{name}",
                                               kind=SpanKind.PRODUCER,
                                               attributes=attributes):
            # The current context, with this span: what the instance continues.
            carrier: Carrier = {}
            propagate.inject(carrier)
            yield carrier or None


class DuroxyInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Spans and metrics for duroxy's clients and runtimes (see the module's docs).

    ``DuroxyInstrumentor().instrument(tracer_provider=None, meter_provider=None)``;
    ``uninstrument()``. Like every ``BaseInstrumentor`` it is one object per process."""

    _runtime: _RuntimeHooks | None = None
    _client: _ClientHooks | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        tracer = trace.get_tracer(_SCOPE, __version__,
                                  tracer_provider=kwargs.get("tracer_provider"))
        meter = metrics.get_meter(_SCOPE, __version__,
                                  meter_provider=kwargs.get("meter_provider"))
        self._runtime = _RuntimeHooks(tracer, meter)
        self._client = _ClientHooks(tracer)
        _hooks.install(self._runtime, self._client)

    def _uninstrument(self, **kwargs: Any) -> None:
        _hooks.uninstall(self._runtime, self._client)
        self._runtime = self._client = None

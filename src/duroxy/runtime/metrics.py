"""A runtime's own counters (``runtime.metrics_snapshot()``) and the slow-turn
warning, both built on the runtime's hooks (:mod:`duroxy._hooks`).

Counters belong to one runtime, start at zero when it starts and are never reset. A
turn's or an activity attempt's counters move in ``*_committing``, right before its
commit is asked for, so a client that saw the commit's result sees the count too; a
commit that then fails takes its counts back (``*_end`` with ``committed`` false).
Everything runs on the runtime's event loop: the counters need no lock, and a snapshot
is a copy taken between two steps of that loop.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from .._hooks import ActivityAttempt, RuntimeHooks, Turn
from ..errors import LockLost, ProviderError

__all__ = ["Metrics", "MetricsSnapshot"]

logger = logging.getLogger("duroxy.runtime")


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Counters of one runtime since it started (the names are
    Duroxide's ``MetricsSnapshot``'s)."""

    #: executions whose first turn ran here (continue-as-new executions included)
    orch_starts: int = 0
    #: executions that ended COMPLETED here
    orch_completions: int = 0
    #: executions that ended FAILED here (by kind in the four fields after the next)
    orch_failures: int = 0
    #: failures of kind ``application``
    orch_application_errors: int = 0
    #: failures of kind ``nondeterminism`` or ``not_registered``
    orch_configuration_errors: int = 0
    #: failures of kind ``infrastructure``, and turns whose commit the store failed
    orch_infrastructure_errors: int = 0
    #: failures of kind ``poison``
    orch_poison: int = 0
    #: executions ended by continue-as-new (not counted as completions)
    orch_continue_as_new: int = 0
    #: activity attempts that returned
    activity_success: int = 0
    #: activity attempts that raised
    activity_app_errors: int = 0
    #: activity attempts for an activity not registered on any live worker
    activity_config_errors: int = 0
    #: activity attempts whose result the store failed to commit
    activity_infra_errors: int = 0
    #: activity attempts refused as poison (delivered more than ``max_attempts`` times)
    activity_poison: int = 0
    #: orchestration items (turns) the store handed to this runtime
    orch_dispatcher_items_fetched: int = 0
    #: activity items the store handed to this runtime (fetched, or claimed by a turn)
    worker_dispatcher_items_fetched: int = 0
    #: child orchestrations scheduled (new schedule calls, never replays)
    suborchestration_calls: int = 0
    #: store operations that raised ``ProviderError`` (a lost lock is not counted)
    provider_errors: int = 0
    #: messages dropped at continue-as-new, past the carry-forward cap
    carry_forward_dropped: int = 0
    #: turns that took longer than ``RuntimeOptions.slow_turn_threshold``
    slow_turns: int = 0


_FIELDS = tuple(f.name for f in dataclasses.fields(MetricsSnapshot))

#: an execution's end state -> its counter
_ENDS = {"COMPLETED": "orch_completions", "FAILED": "orch_failures",
         "CONTINUED_AS_NEW": "orch_continue_as_new"}
#: a failure's kind -> its counter
_FAILURE_KINDS = {"application": "orch_application_errors",
                  "nondeterminism": "orch_configuration_errors",
                  "not_registered": "orch_configuration_errors",
                  "infrastructure": "orch_infrastructure_errors",
                  "poison": "orch_poison"}
_ACTIVITY_OUTCOMES = {"success": "activity_success", "app_error": "activity_app_errors",
                      "config_error": "activity_config_errors",
                      "infra_error": "activity_infra_errors", "poison": "activity_poison"}


class Metrics(RuntimeHooks):
    """The counters of one runtime, and the slow-turn warning."""

    def __init__(self, slow_turn_threshold: float) -> None:
        self.counts = dict.fromkeys(_FIELDS, 0)
        self.slow_turn_threshold = slow_turn_threshold

    def snapshot(self) -> MetricsSnapshot:
        return MetricsSnapshot(**self.counts)

    # ------------------------------------------------------------------ turns
    # The token of a turn or an attempt is a one-item list: whether its commit was
    # asked for (and so counted).
    def turn_start(self, turn: Turn) -> list[bool]:
        return [False]

    def _turn_counters(self, turn: Turn) -> list[str]:
        names = []
        if turn.first:
            names.append("orch_starts")
        end = _ENDS.get(turn.state)
        if end is not None:
            names.append(end)
            if turn.state == "FAILED":
                kind = turn.error.kind if turn.error is not None else "application"
                names.append(_FAILURE_KINDS.get(kind, "orch_application_errors"))
        return names

    def turn_committing(self, turn: Turn, token: list[bool]) -> None:
        token[0] = True
        counts = self.counts
        for name in self._turn_counters(turn):
            counts[name] += 1
        counts["suborchestration_calls"] += turn.suborchestrations
        counts["carry_forward_dropped"] += turn.dropped
        if turn.duration > self.slow_turn_threshold:
            counts["slow_turns"] += 1
            logger.warning(
                "slow orchestration turn: instance %r (orchestration %r, execution %d) took "
                "%.3f s, more than RuntimeOptions.slow_turn_threshold (%g s)%s. Orchestration "
                "code runs on the runtime's event loop and holds up every other turn while "
                "it runs: move blocking or heavy work into an activity",
                turn.instance_id, turn.name, turn.execution_id, turn.duration,
                self.slow_turn_threshold,
                f"; it replayed {turn.replayed_events} stored events" if turn.replayed else "")

    def turn_end(self, turn: Turn, token: list[bool]) -> None:
        if turn.committed:
            return
        if _store_failure(turn.commit_error):
            self.counts["orch_infrastructure_errors"] += 1
        if not token[0]:
            return
        # Counted when its commit was asked for, which then failed: take them back.
        counts = self.counts
        for name in self._turn_counters(turn):
            counts[name] -= 1
        counts["suborchestration_calls"] -= turn.suborchestrations
        counts["carry_forward_dropped"] -= turn.dropped

    # ------------------------------------------------------------------ activities
    def activity_start(self, attempt: ActivityAttempt) -> list[bool]:
        return [False]

    def activity_committing(self, attempt: ActivityAttempt, token: list[bool]) -> None:
        token[0] = True
        self.counts[_ACTIVITY_OUTCOMES[attempt.outcome]] += 1

    def activity_end(self, attempt: ActivityAttempt, token: list[bool]) -> None:
        if attempt.committed:
            return
        if token[0]:
            self.counts[_ACTIVITY_OUTCOMES[attempt.outcome]] -= 1
        if _store_failure(attempt.commit_error):
            self.counts["activity_infra_errors"] += 1

    # ------------------------------------------------------------------ the store
    def fetched(self, kind: str, count: int) -> None:
        name = ("orch_dispatcher_items_fetched" if kind == "orchestration"
                else "worker_dispatcher_items_fetched")
        self.counts[name] += count

    def provider_error(self, error: BaseException) -> None:
        self.counts["provider_errors"] += 1


def _store_failure(error: BaseException | None) -> bool:
    """Whether ``error`` is the store failing (a lost lock is an answer, not a failure)."""
    return isinstance(error, ProviderError) and not isinstance(error, LockLost)

"""From a fetched orchestration item to a commit: the runtime's half of a turn.

The engine decides; this module translates its decisions into store work (activity
rows, timer messages, child starts, replies to the parent) and the instance record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from .._engine import TurnResult
from .._hooks import Turn
from ..errors import ErrorDetails
from ..history import (
    ActivityScheduled,
    ActivityWork,
    CancellationRequested,
    CustomStatusSet,
    DetachedOrchestrationScheduled,
    EventRaised,
    HistoryEvent,
    KeyValueCleared,
    KeyValueReadScheduled,
    KeyValuesCleared,
    KeyValueSet,
    OrchestrationCancelled,
    OrchestrationCompleted,
    OrchestrationContinuedAsNew,
    OrchestrationFailed,
    OrchestrationStarted,
    OrchestratorMessage,
    QueueEventDelivered,
    SubOrchestrationCompleted,
    SubOrchestrationFailedEvent,
    SubOrchestrationScheduled,
    TimerCreated,
    TimerFired,
)
from ..providers.base import InstanceRecord, KvEntry, OrchestrationCommit, OrchestrationItem

__all__ = ["build_commit", "failure_commit", "noop_commit", "refusals", "reply_to_parent",
           "turn_events", "turn_outcome"]


def reply_to_parent(started: OrchestrationStarted | None, terminal: HistoryEvent
                    ) -> OrchestratorMessage | None:
    """The message telling a parent how its child ended (``None`` for a root)."""
    if started is None or started.parent_instance_id is None or started.parent_event_id is None:
        return None
    sid = started.parent_event_id
    event: HistoryEvent
    if isinstance(terminal, OrchestrationCompleted):
        event = SubOrchestrationCompleted(source_event_id=sid, result=terminal.output)
    elif isinstance(terminal, OrchestrationFailed):
        event = SubOrchestrationFailedEvent(source_event_id=sid, error_type=terminal.error_type,
                                            message=terminal.message)
    elif isinstance(terminal, OrchestrationCancelled):
        event = SubOrchestrationFailedEvent(
            source_event_id=sid, error_type="Cancelled",
            message=f"cancelled{': ' + terminal.reason if terminal.reason else ''}")
    else:
        return None
    return OrchestratorMessage(started.parent_instance_id, event, started.parent_execution_id)


def refusals(instance_id: str, inst: InstanceRecord | None,
             messages: Sequence[OrchestratorMessage], started: OrchestrationStarted | None
             ) -> list[OrchestratorMessage]:
    """Replies to parents that started a child under the id of this instance, which has
    run already or is about to run another start (a start it is not running: a finished
    instance's, a first execution's while another runs or starts): the child fails to
    start, as ``Client.start_orchestration`` would. With no start chosen and nothing
    run, the start among the messages is the instance's own."""
    if inst is None or (not inst.history_len and started is None):
        return []
    return [OrchestratorMessage(ev.parent_instance_id, SubOrchestrationFailedEvent(
                source_event_id=ev.parent_event_id, error_type="InstanceAlreadyExists",
                message=f"instance {instance_id!r} already exists"), ev.parent_execution_id)
            for m in messages if isinstance(ev := m.event, OrchestrationStarted)
            and ev is not started
            and ev.execution_id == 1  # a child's start (later ones: continue-as-new)
            and ev.parent_instance_id is not None and ev.parent_event_id is not None]


def _state_of(terminal: HistoryEvent | None) -> str:
    if isinstance(terminal, OrchestrationCompleted):
        return "COMPLETED"
    if isinstance(terminal, OrchestrationFailed):
        return "FAILED"
    if isinstance(terminal, OrchestrationCancelled):
        return "CANCELLED"
    return "RUNNING"


def build_commit(instance_id: str, started: OrchestrationStarted, result: TurnResult
                 ) -> OrchestrationCommit:
    execution_id = started.execution_id
    commit = OrchestrationCommit(
        execution_id=execution_id, state="RUNNING", name=started.name, version=started.version,
        history=result.new_events, custom_status=result.custom_status, unread=result.unread)
    kv: dict[str, tuple[str, int] | None] | None = None  # key -> value set, or None: gone
    for event in result.new_events:
        if isinstance(event, ActivityScheduled):
            commit.activities.append(ActivityWork(
                instance_id, execution_id, event.event_id, event.name, event.input,
                started.name, started.version, event.attempt, event.trace_context,
                event.session_id, event.tag))
        elif isinstance(event, TimerCreated):
            commit.messages.append(OrchestratorMessage(
                instance_id, TimerFired(source_event_id=event.event_id, fire_at=event.fire_at),
                execution_id, event.fire_at / 1000.0))
        elif isinstance(event, SubOrchestrationScheduled):
            commit.messages.append(OrchestratorMessage(event.instance_id, OrchestrationStarted(
                name=event.name, version=event.version, input=event.input,
                parent_instance_id=instance_id, parent_execution_id=execution_id,
                parent_event_id=event.event_id, trace_context=event.trace_context), 1))
        elif isinstance(event, DetachedOrchestrationScheduled):
            commit.messages.append(OrchestratorMessage(event.instance_id, OrchestrationStarted(
                name=event.name, version=event.version, input=event.input), 1))
        elif isinstance(event, CustomStatusSet):
            commit.custom_status_changed = True
        elif isinstance(event, KeyValueSet):
            kv = {} if kv is None else kv
            kv[event.key] = (event.value, event.updated_at)
        elif isinstance(event, KeyValueCleared):
            kv = {} if kv is None else kv
            kv[event.key] = None
        elif isinstance(event, KeyValuesCleared):
            commit.kv_clear = True
            kv = {}  # what came before is cleared anyway
        elif isinstance(event, KeyValueReadScheduled):
            # The read itself happens after this commit: this message, to the instance
            # itself, makes the dispatcher read and answer it in a turn of its own (and
            # survives a crash in between, as any queued message does).
            commit.messages.append(OrchestratorMessage(instance_id, event, execution_id))
    if kv:
        commit.kv_delete = [k for k, v in kv.items() if v is None]
        commit.kv_set = [(k, v[0], v[1]) for k, v in kv.items() if v is not None]
    for eid in result.cancelled_activities:
        commit.cancel_activities.append((instance_id, execution_id, eid))
    for child in result.cancelled_children:
        commit.messages.append(OrchestratorMessage(
            child, CancellationRequested(reason=f"parent {instance_id!r} cancelled it")))
    terminal = result.terminal
    commit.state = _state_of(terminal)
    if isinstance(terminal, OrchestrationCompleted):
        commit.output = terminal.output
    elif isinstance(terminal, OrchestrationFailed):
        commit.error = terminal.error
    elif isinstance(terminal, OrchestrationCancelled):
        commit.error = ErrorDetails("cancelled", "Cancelled",
                                    terminal.reason or "the instance was cancelled")
    elif isinstance(terminal, OrchestrationContinuedAsNew):
        commit.messages.append(OrchestratorMessage(instance_id, OrchestrationStarted(
            name=started.name, version=terminal.version, input=terminal.input,
            execution_id=execution_id + 1, parent_instance_id=started.parent_instance_id,
            parent_execution_id=started.parent_execution_id,
            parent_event_id=started.parent_event_id,
            custom_status=result.custom_status,
            # (every execution of an instance continues the instance's one trace)
            trace_context=started.trace_context), execution_id + 1))
        # External events and queue messages this execution received and never took go
        # to the next one, addressed to it: there they come first, ahead of those sent
        # while this turn ran, which are queued already (see turn_events).
        for event in result.undelivered:
            if isinstance(event, (EventRaised, QueueEventDelivered)):
                commit.messages.append(OrchestratorMessage(instance_id, event, execution_id + 1))
        # The next execution starts with the KV this one ended with.
        commit.replace_kv_base = True
        commit.kv_base = {k: KvEntry(v, at) for k, (v, at) in (result.kv_final or {}).items()}
    if terminal is not None:
        reply = reply_to_parent(started, terminal)
        if reply is not None:
            commit.messages.append(reply)
    return commit


def failure_commit(instance_id: str, started: OrchestrationStarted | None, name: str,
                   version: str | None, execution_id: int, next_event_id: int,
                   error: ErrorDetails, now_ms: int,
                   cancel_activities: Sequence[tuple[str, int, int]] = ()
                   ) -> OrchestrationCommit:
    """A commit that ends the instance FAILED without running its code (poison,
    not registered, undecodable history)."""
    failed = OrchestrationFailed(event_id=next_event_id, ts=now_ms, error_kind=error.kind,
                                 error_type=error.error_type, message=error.message)
    history: list[HistoryEvent] = []
    if started is not None and next_event_id == 1:
        history.append(dataclasses.replace(started, event_id=1, ts=now_ms))
        failed = dataclasses.replace(failed, event_id=2)
    history.append(failed)
    commit = OrchestrationCommit(execution_id=execution_id, state="FAILED", name=name,
                                 version=version, history=history, error=error,
                                 cancel_activities=list(cancel_activities))
    reply = reply_to_parent(started, failed)
    if reply is not None:
        commit.messages.append(reply)
    return commit


def turn_events(messages: list[OrchestratorMessage], started: OrchestrationStarted | None,
                 execution_id: int, version: str) -> list[HistoryEvent]:
    """The events a turn feeds its execution: the start first (with the version that
    runs it), then the events a continue-as-new carried over to it, then the rest in
    arrival order; messages for an execution that has ended are left out."""
    events: list[HistoryEvent] = []
    head: list[HistoryEvent] = []
    for m in messages:
        ev = m.event
        if m.execution_id is not None and m.execution_id != execution_id:
            continue
        if isinstance(ev, OrchestrationStarted):
            if ev is not started:
                continue
            head.insert(0, dataclasses.replace(ev, version=version))
        elif (started is not None and m.execution_id == execution_id
              and isinstance(ev, (EventRaised, QueueEventDelivered))):
            # Carried over by a continue-as-new (see build_commit): these arrived
            # before anything sent to the instance since, though queued after it.
            head.append(ev)
        else:
            events.append(ev)
    return head + events


def noop_commit(item: OrchestrationItem) -> OrchestrationCommit:
    """Consume the delivered messages and change nothing else."""
    inst = item.instance
    if inst is None:
        return OrchestrationCommit(execution_id=0, state="PENDING", name="", version=None)
    return OrchestrationCommit(
        execution_id=inst.execution_id, state=inst.state, name=inst.name, version=inst.version,
        output=inst.output, error=inst.error, custom_status=inst.custom_status)


def turn_outcome(turn: Turn, commit: OrchestrationCommit, result: TurnResult) -> None:
    """What the turn's commit does to its execution, for the hooks."""
    turn.state = ("CONTINUED_AS_NEW" if isinstance(result.terminal, OrchestrationContinuedAsNew)
                  else commit.state)
    turn.error = commit.error
    turn.dropped = len(result.dropped)

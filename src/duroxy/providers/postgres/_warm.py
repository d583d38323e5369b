"""The statements a new connection runs once before it serves: the hot path's, so that
psycopg prepares each (``prepare_threshold`` 0) and the server plans it on the spot
rather than inside the first turn that needs it. Planning one of the turn statements
costs about a millisecond, on every connection, for every variant and for every
pattern of NULL parameters (psycopg keys a prepared statement by its parameter types,
and a NULL has a type of its own); a pool that round-robins over a few connections
would otherwise pay that again and again in the first turns after a start.

Every call here matches no row (a lock token and instance keys nothing holds, limits of
0), and the write statements change nothing when the lock or instance they name is
missing (the store's ``LockLost`` contract), so a warm-up writes nothing. The
parameters come from the same functions real calls use, for the commonest shapes of
turn, so that their types match those of the calls they stand in for."""

from __future__ import annotations

import uuid
from typing import Any

from ...history import (
    ActivityCompleted,
    ActivityScheduled,
    ActivityWork,
    OrchestrationCompleted,
    OrchestrationStarted,
    OrchestratorMessage,
    TimerCreated,
    TimerFired,
)
from ..base import OrchestrationCommit
from ._marshal import completion_params, consumed, key, turn

__all__ = ["Call", "warm_calls"]

#: (statement name, variant flags or None for a statement without variants, parameters)
Call = tuple[str, frozenset[str] | None, dict[str, Any]]

_NOBODY = "\x01duroxy-warm-up"  # an instance id no caller can create: ids are checked
_VERSION = "1.0.0"  # a turn always names its orchestration's version


def _turns() -> list[tuple[str, OrchestrationCommit, list[OrchestratorMessage]]]:
    """(statement, commit, messages consumed in place) for the turns most workflows are
    made of."""
    iid = _NOBODY
    started = OrchestrationStarted(event_id=1, name="w", input="null")
    work = ActivityWork(iid, 1, 2, "a", "null", "w", None, 1)

    # (a turn's commit always counts its unread messages: an int, never NULL)
    def running(*events: Any, **kw: Any) -> OrchestrationCommit:
        return OrchestrationCommit(execution_id=1, state="RUNNING", name="w",
                                   version=_VERSION, history=list(events), unread=0, **kw)

    def completed(*events: Any, **kw: Any) -> OrchestrationCommit:
        return OrchestrationCommit(
            execution_id=1, state="COMPLETED", name="w", version=_VERSION,
            history=[*events, OrchestrationCompleted(event_id=9, output="null")],
            output="null", unread=0, **kw)

    timer = OrchestratorMessage(iid, TimerFired(source_event_id=2, fire_at=0), 1, 4e9)
    first_activity = running(started, ActivityScheduled(event_id=2, name="a"),
                             activities=[work], claim_activities=1, claim_lock_timeout=30.0)
    fed = {"acked_activities": ["-"]}
    next_activity = running(ActivityCompleted(event_id=3, source_event_id=2),
                            ActivityScheduled(event_id=4, name="a"), activities=[work],
                            claim_activities=1, claim_lock_timeout=30.0, **fed)
    fired = TimerFired(event_id=3, source_event_id=2)
    return [
        ("ack_turn", first_activity, []),
        ("ack_turn", running(started, TimerCreated(event_id=2, fire_at=0), messages=[timer]),
         []),
        ("ack_turn", running(fired), []),
        ("ack_turn", completed(fired), []),
        ("ack_turn", completed(ActivityCompleted(event_id=3, source_event_id=2)), []),
        ("commit_turn", next_activity, []),
        ("commit_turn", running(ActivityCompleted(event_id=3, source_event_id=2),
                                TimerCreated(event_id=4, fire_at=0), messages=[timer], **fed),
         []),
        ("commit_turn", running(ActivityCompleted(event_id=3, source_event_id=2), **fed), []),
        ("commit_turn", completed(ActivityCompleted(event_id=3, source_event_id=2), **fed),
         []),
        # timers fired in place (see the runtime's orchestration dispatcher)
        ("commit_turn", running(fired), [timer]),
        ("commit_turn", running(fired, ActivityScheduled(event_id=4, name="a"),
                                activities=[work], claim_activities=1,
                                claim_lock_timeout=30.0), [timer]),
        ("commit_turn", completed(fired), [timer]),
    ]


def warm_calls(node_id: str, channel: str) -> list[Call]:
    """The warm-up calls of a provider on ``channel``, whose node is ``node_id``."""
    token = f"warm-up-{uuid.uuid4()}"  # held by no row
    nobody = key(_NOBODY)
    calls: list[Call] = [
        ("fetch_orchestrations", frozenset(), {"scan": 0, "limit": 0, "lock_timeout": 30.0}),
        ("lock_instance", None, {"key": nobody, "lock_timeout": 30.0}),
        # (the fetch of a runtime's default route: untagged work, with sessions)
        ("fetch_activities", frozenset({"plain", "tags", "sessions"}), {
            "limit": 0, "lock_timeout": 30.0, "skip_activities": None, "tags": [""],
            "owner": "warm-up", "new_sessions": 0, "session_lock": 30.0}),
        ("get_instance", None, {"key": nobody}),
    ]
    completion = completion_params(OrchestratorMessage(
        _NOBODY, ActivityCompleted(source_event_id=2, result="null"), 1))
    completion.update(token=token, channel=channel, note="-")
    calls.append(("ack_activity", None, completion))
    for statement, commit, consume in _turns():
        t = turn(commit, node_id)
        t.params.update(channel=channel, token=token if statement == "ack_turn" else None)
        if statement == "commit_turn":
            t.params.update(key=nobody, expected_len=2, **consumed(consume))
        calls.append((statement, t.parts, t.params))
    return calls

"""The timers a runtime fires itself: those its own turns committed, on a store that
leaves them to the committing worker (``FastPath.worker_fires_timers``).

Each such timer gets an alarm at its due time. When it rings, every timer of the
instance that is due by then is fired together, by the dispatcher's ``fire`` (in place
when it can: one lock-free commit consuming their messages; else with a locked turn).
Firing them together matters: a lock-free commit is refused while the instance has
another visible message, which a second timer due at the same moment is.

Invariants: a timer is *armed* from its commit until it is fired here or a fetched
turn delivered its message (the fetch then owns it; its alarm does nothing). An alarm
that rings while a turn of this runtime holds the instance waits for that turn's end
(a ``lock_instance`` meanwhile would find the instance held, and the holder's commit
may not see the message yet). A timer whose message the store does not show yet (its
clock lags this host's) is tried again for ``DUE_RETRY_S``, as a store's own alarm
would; after that the fetches' polls find it. Everything here runs on the runtime's
event loop.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from .._alarms import DUE_RETRY_PAUSE_S, DUE_RETRY_S, DueAlarms
from ..history import OrchestratorMessage, TimerFired
from ..providers.base import OrchestrationCommit
from .dispatch import TaskSet

__all__ = ["OwnTimers"]

# (execution id, the timer's event id): one timer of an instance
_Key = tuple[int | None, int]


def _key(msg: OrchestratorMessage) -> _Key:
    assert isinstance(msg.event, TimerFired)
    return msg.execution_id, msg.event.source_event_id


class OwnTimers:
    """``fire(instance_id, messages)`` fires due timers (their queued messages, fire
    times in order); ``in_turn`` is the set of instances a turn of this runtime holds."""

    def __init__(self, alarms: DueAlarms, tasks: TaskSet, in_turn: set[str],
                 fire: Callable[[str, list[OrchestratorMessage]],
                                Coroutine[Any, Any, None]]) -> None:
        self._alarms = alarms
        self._tasks = tasks
        self._in_turn = in_turn
        self._fire = fire
        self._armed: dict[str, dict[_Key, OrchestratorMessage]] = {}
        self._waiting: set[str] = set()  # rang during a turn: ring again at its end
        self.closed = False

    def arm(self, instance_id: str, commit: OrchestrationCommit) -> None:
        """An alarm for each timer ``commit`` (of ``instance_id``) left to this runtime."""
        for msg in commit.messages:
            if isinstance(msg.event, TimerFired) and msg.visible_at is not None:
                self._armed.setdefault(instance_id, {})[_key(msg)] = msg
                self._set(instance_id, msg.visible_at)

    def delivered(self, instance_id: str, messages: Iterable[OrchestratorMessage]) -> None:
        """A fetched turn got these messages: their timers are the fetch's to fire."""
        timers = self._armed.get(instance_id)
        if timers is None:
            return
        for msg in messages:
            if isinstance(msg.event, TimerFired):
                timers.pop(_key(msg), None)
        if not timers:
            del self._armed[instance_id]

    def retry(self, instance_id: str, messages: Iterable[OrchestratorMessage]) -> None:
        """``messages`` were due but the store did not deliver them: again in a moment,
        for a while after their due time."""
        now = time.time()
        for msg in messages:
            if now < (msg.visible_at or 0.0) + DUE_RETRY_S:
                self._armed.setdefault(instance_id, {})[_key(msg)] = msg
                self._set(instance_id, now + DUE_RETRY_PAUSE_S)

    def turn_over(self, instance_id: str) -> None:
        """A turn of this runtime on ``instance_id`` ended (``in_turn`` no longer has it)."""
        if instance_id in self._waiting:
            self._waiting.discard(instance_id)
            self._ring(instance_id)

    def close(self) -> None:
        self.closed = True
        self._armed.clear()
        self._waiting.clear()

    def _set(self, instance_id: str, at: float) -> None:
        self._alarms.at(at, functools.partial(self._ring, instance_id))

    def _ring(self, instance_id: str) -> None:
        if self.closed or instance_id not in self._armed:
            return
        if instance_id in self._in_turn:
            self._waiting.add(instance_id)
            return
        timers = self._armed[instance_id]
        now = time.time()
        due = sorted((m for m in timers.values() if (m.visible_at or 0.0) <= now),
                     key=lambda m: (m.visible_at or 0.0, _key(m)))
        if not due:
            return  # (rang for a timer fired meanwhile; the others have alarms)
        for msg in due:
            del timers[_key(msg)]
        if not timers:
            del self._armed[instance_id]
        self._tasks.spawn(self._fire(instance_id, due))

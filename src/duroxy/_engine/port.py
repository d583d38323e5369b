"""What ``OrchestrationContext`` needs from the execution it speaks for.

The context is the public face; the execution holds history and decides. The context
depends on this port only (as Temporal's workflow context depends on an abstract
runtime), so the two never reach into each other's state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..history import (
    EventSubscribed,
    HistoryEvent,
    KeyValueReadScheduled,
    OrchestrationStarted,
    QueueSubscribed,
)
from .futures import DurableFuture
from .loop import DeterministicLoop

__all__ = ["ExecutionPort"]


class ExecutionPort(Protocol):
    instance_id: str
    #: the start of this execution, once delivered
    started: OrchestrationStarted | None
    is_replaying: bool
    #: ``trace_*`` stays silent even when not replaying (a replay that only checks)
    quiet: bool
    loop: DeterministicLoop
    #: the custom status as of this point of the execution (JSON text)
    custom_status: str | None
    #: the orchestration's time: the time of the event being delivered (epoch ms)
    current_time_ms: int
    #: the registered name of a function (activity or orchestration)
    function_name: Callable[[Callable[..., Any]], str]
    #: the output type registered for an activity name (``None``: plain JSON)
    activity_output_type: Callable[[str], Any]
    #: a fresh random UUID string (drawn only for a decision not yet recorded)
    new_guid: Callable[[], str]
    #: the instance's key-value state at this point of the execution: key -> (value as
    #: JSON text, epoch ms of its last set). The context keeps it in step with the sets
    #: and clears it records.
    kv: dict[str, tuple[str, int]]

    @property
    def next_event_id(self) -> int:
        """The id the next new event of this execution gets."""
        ...

    def scheduled(self, kind: str, name: str) -> dict[str, str] | None:
        """A new schedule call (``activity``, ``sub_orchestration``), never a replayed
        one: told to the runtime, which may give a trace context to record with it."""
        ...

    def record(self, event: HistoryEvent, same: Callable[[HistoryEvent], bool],
               fresh: Callable[[HistoryEvent], HistoryEvent] | None = None) -> HistoryEvent:
        """Match a decision against history, or record it as new (see the execution)."""
        ...

    def open_future(self, kind: str, event: HistoryEvent, output_type: Any = None
                    ) -> DurableFuture[Any]:
        """The future that history resolves for the work ``event`` scheduled."""
        ...

    def scheduled_activity(self, fut: DurableFuture[Any], tag: str | None) -> None:
        """An activity's future was made with ``tag`` (``with_tag`` may still change it
        until the step ends)."""
        ...

    def subscribe(self, event: EventSubscribed | QueueSubscribed, output_type: Any
                  ) -> DurableFuture[Any]:
        """The future of a wait for an external event or of a dequeue (what arrived
        before it first, oldest first)."""
        ...

    def read_kv(self, event: KeyValueReadScheduled, output_type: Any, default: Any
                ) -> DurableFuture[Any]:
        """The future of a read of another instance's KV (``default`` if not found)."""
        ...

    def timer(self, delay: float) -> DurableFuture[None]:
        """A durable timer of ``delay`` seconds from the orchestration's time."""
        ...

    def patch(self, change_id: str, *, deprecated: bool) -> bool:
        """A patch reached by the code: while replaying, whether this execution's
        history holds a marker for ``change_id`` (nothing is recorded); live, a marker is
        recorded (unless history holds one already) and the answer is ``True``."""
        ...

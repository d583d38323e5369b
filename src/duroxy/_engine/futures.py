"""The leaf of the engine: the futures orchestration code awaits, and the exceptions
that carry control flow out of it. Imports nothing of the rest of the engine.

Control flow (continue-as-new, an unwinding after nondeterminism) travels as
``BaseException`` subclasses, so that a user's ``except Exception`` never swallows it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Generic, Protocol, TypeVar

from ..history import HistoryEvent

__all__ = ["ContinueAsNew", "Dated", "DurableFuture", "FutureOwner", "Nondeterministic",
           "Ready"]

T = TypeVar("T")


class ContinueAsNew(BaseException):
    """Raised by ``ctx.continue_as_new``: ends this execution and starts a fresh one."""

    def __init__(self, input_text: str, version: str | None) -> None:
        super().__init__("continue_as_new")
        self.input_text = input_text
        self.version = version


class Nondeterministic(BaseException):
    """Unwinds orchestration code once nondeterminism is found; the turn then fails the
    instance."""


class FutureOwner(Protocol):
    """What a durable future tells when it is cancelled: its work is abandoned."""

    def abandon(self, fut: DurableFuture[Any]) -> None: ...

    def give_back(self, fut: DurableFuture[Any]) -> None: ...

    def retag(self, fut: DurableFuture[Any], tag: str) -> None: ...


#: The context method behind each kind of durable future, for messages.
_CALLS = {
    "activity": "ctx.schedule_activity",
    "timer": "ctx.schedule_timer",
    "wait": "ctx.schedule_wait",
    "sub_orchestration": "ctx.schedule_sub_orchestration",
}


class DurableFuture(asyncio.Future[T], Generic[T]):
    """A future resolved by a history event: an activity, timer, event wait or child.

    ``T`` is what awaiting it gives. Cancelling it (a select loser, a cancelled task)
    abandons the work: activities and children are told to stop, subscriptions are
    dropped.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, owner: FutureOwner, kind: str,
                 event: HistoryEvent, output_type: Any = None) -> None:
        super().__init__(loop=loop)
        self._owner = owner
        self.kind = kind
        self.event = event
        self.output_type = output_type
        #: the id of the history event that resolved it (a select's order among the done)
        self.completed_by: int | None = None
        #: a dequeue's message, until the code has it (see ``lost``)
        self.message: HistoryEvent | None = None
        #: what a read that finds nothing gives (``get_kv_value_from_instance``)
        self.default: Any = None
        #: the loop step that made an activity's future (``with_tag`` is allowed in it)
        self.step: int | None = None

    @property
    def event_id(self) -> int:
        return self.event.event_id

    def describe(self) -> str:
        """The call that made this future, as the code wrote it (for messages about a
        future used where its value was meant): ``ctx.schedule_activity('greet')``."""
        name = getattr(self.event, "name", None)
        call = _CALLS.get(self.kind, f"ctx.schedule_{self.kind}")
        return f"{call}({name!r})" if name is not None else f"{call}(...)"

    def __repr__(self) -> str:
        return f"<DurableFuture {self.describe()} {self._state.lower()}>"

    def with_tag(self, tag: str) -> DurableFuture[T]:
        """Duroxide's spelling of ``schedule_activity(..., tag=tag)``: sets the tag of the
        activity this future stands for and returns the same future. Call it on the
        future straight from ``ctx.schedule_activity``, before the orchestration awaits
        anything (``ctx.schedule_activity(...).with_tag("gpu")``); later it raises
        ``RuntimeError``, and on any other durable future ``TypeError``. A bad tag raises
        ``ValueError``."""
        if self.kind != "activity":
            raise TypeError(f"with_tag applies to an activity's future only, and "
                            f"{self.describe()} is a {self.kind.replace('_', '-')} future")
        self._owner.retag(self, tag)
        return self

    def cancel(self, msg: Any = None) -> bool:
        if self.done():
            return False
        self._owner.abandon(self)
        return super().cancel(msg)

    def lost(self) -> None:
        """It lost a select: cancelled if still pending; a wait or dequeue that already
        took its event or message gives it back (a cancelled one takes nothing), so the
        next wait or dequeue of its name gets it."""
        if not self.done():
            self.cancel()
        elif self.message is not None:
            self._owner.give_back(self)


class Ready(asyncio.Future[T], Generic[T]):
    """A future resolved at once with a recorded value (``ctx.utcnow()``,
    ``ctx.new_guid()``); ``call`` names the call for messages about it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, call: str, value: T) -> None:
        super().__init__(loop=loop)
        self.call = call
        self.set_result(value)

    def describe(self) -> str:
        return self.call


class _Delivering(Protocol):
    #: the id of the history event being delivered
    delivering: int


class Dated(asyncio.Future[T], Generic[T]):
    """The future of a select or join: dated, like the futures it waits for, by the
    history event being delivered when it completed (another select's order among
    futures already done)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: _Delivering) -> None:
        super().__init__(loop=loop)
        self._clock = clock
        self.completed_by: int | None = None

    def set_result(self, result: T) -> None:
        self.completed_by = self._clock.delivering
        super().set_result(result)

    def set_exception(self, exception: type | BaseException) -> None:
        self.completed_by = self._clock.delivering
        super().set_exception(exception)

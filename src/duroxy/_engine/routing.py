"""Activity routing as orchestration code asks for it: the checks of the ``session_id``
and ``tag`` keywords of ``ctx.schedule_activity`` and ``schedule_activity_with_retry``,
and Duroxide's spellings of a session-bound call, mixed into ``OrchestrationContext``.

A session id and a tag are part of the ``ActivityScheduled`` decision: replay compares
them like the name and the input (a change is nondeterminism). The runtime and the store
do the routing; the engine only records what the code asked for.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, overload

from .._names import name_problem, tag_problem
from ..history import ActivityScheduled, HistoryEvent
from ..options import RetryPolicy
from .futures import DurableFuture
from .loop import DeterministicLoop
from .matching import describe, difference

__all__ = ["RetagMethods", "RoutingAliases", "check_routing", "check_tag"]

T = TypeVar("T")
NameOrFn = str | Callable[..., Any]


def check_tag(tag: object) -> str:
    """``tag`` if it is a usable activity tag, else ``ValueError`` naming the rule."""
    problem = tag_problem(tag)
    if problem is not None:
        raise ValueError(f"activity tag {problem}")
    assert isinstance(tag, str)
    return tag


def _session(session_id: object) -> str:
    problem = name_problem(session_id)
    if problem is not None:
        raise ValueError(f"session_id {problem}")
    assert isinstance(session_id, str)
    return session_id


def check_routing(session_id: str | None, tag: str | None) -> None:
    """``ValueError`` at the call for a bad session id (the rule of ids and names) or a
    bad tag; nothing is recorded then."""
    if session_id is not None:
        _session(session_id)
    if tag is not None:
        check_tag(tag)


class _Schedules(Protocol):
    def schedule_activity(self, name_or_fn: NameOrFn, input: Any = None, *,
                          output_type: Any = None, session_id: str | None = None,
                          tag: str | None = None) -> DurableFuture[Any]: ...

    def schedule_activity_with_retry(self, name_or_fn: NameOrFn, input: Any,
                                     retry: RetryPolicy, *, output_type: Any = None,
                                     session_id: str | None = None, tag: str | None = None
                                     ) -> asyncio.Task[Any]: ...


class RoutingAliases:
    """Duroxide's spellings of a session-bound activity call: each is
    ``schedule_activity(..., session_id=...)`` (or ``schedule_activity_with_retry``)."""

    @overload
    def schedule_activity_on_session(self: _Schedules, name_or_fn: NameOrFn, input: Any,
                                     session_id: str, *, output_type: type[T]
                                     ) -> DurableFuture[T]: ...
    @overload
    def schedule_activity_on_session(self: _Schedules, name_or_fn: NameOrFn, input: Any,
                                     session_id: str, *, output_type: Any = None
                                     ) -> DurableFuture[Any]: ...

    def schedule_activity_on_session(self: _Schedules, name_or_fn: NameOrFn, input: Any,
                                     session_id: str, *, output_type: Any = None
                                     ) -> DurableFuture[Any]:
        """``schedule_activity(name_or_fn, input, session_id=session_id)``."""
        return self.schedule_activity(name_or_fn, input, output_type=output_type,
                                      session_id=_session(session_id))

    @overload
    def schedule_activity_on_session_typed(self: _Schedules, name_or_fn: NameOrFn,
                                           input: Any, session_id: str,
                                           output_type: type[T]) -> DurableFuture[T]: ...
    @overload
    def schedule_activity_on_session_typed(self: _Schedules, name_or_fn: NameOrFn,
                                           input: Any, session_id: str,
                                           output_type: Any = None) -> DurableFuture[Any]: ...

    def schedule_activity_on_session_typed(self: _Schedules, name_or_fn: NameOrFn,
                                           input: Any, session_id: str,
                                           output_type: Any = None) -> DurableFuture[Any]:
        return self.schedule_activity(name_or_fn, input, output_type=output_type,
                                      session_id=_session(session_id))

    @overload
    def schedule_activity_with_retry_on_session(
            self: _Schedules, name_or_fn: NameOrFn, input: Any, retry: RetryPolicy,
            session_id: str, *, output_type: type[T]) -> asyncio.Task[T]: ...
    @overload
    def schedule_activity_with_retry_on_session(
            self: _Schedules, name_or_fn: NameOrFn, input: Any, retry: RetryPolicy,
            session_id: str, *, output_type: Any = None) -> asyncio.Task[Any]: ...

    def schedule_activity_with_retry_on_session(
            self: _Schedules, name_or_fn: NameOrFn, input: Any, retry: RetryPolicy,
            session_id: str, *, output_type: Any = None) -> asyncio.Task[Any]:
        """``schedule_activity_with_retry(name_or_fn, input, retry,
        session_id=session_id)``: every attempt runs on the session."""
        return self.schedule_activity_with_retry(name_or_fn, input, retry,
                                                 output_type=output_type,
                                                 session_id=_session(session_id))

    @overload
    def schedule_activity_with_retry_on_session_typed(
            self: _Schedules, name_or_fn: NameOrFn, input: Any, retry: RetryPolicy,
            session_id: str, output_type: type[T]) -> asyncio.Task[T]: ...
    @overload
    def schedule_activity_with_retry_on_session_typed(
            self: _Schedules, name_or_fn: NameOrFn, input: Any, retry: RetryPolicy,
            session_id: str, output_type: Any = None) -> asyncio.Task[Any]: ...

    def schedule_activity_with_retry_on_session_typed(
            self: _Schedules, name_or_fn: NameOrFn, input: Any, retry: RetryPolicy,
            session_id: str, output_type: Any = None) -> asyncio.Task[Any]:
        return self.schedule_activity_with_retry(name_or_fn, input, retry,
                                                 output_type=output_type,
                                                 session_id=_session(session_id))


class RetagMethods:
    """``DurableFuture.with_tag`` as the execution carries it out (mixed into
    ``OrchestrationExecution``, which supplies the attributes named here).

    ``ctx.schedule_activity(...).with_tag("gpu")`` changes a decision already recorded:
    allowed only within the loop step that made the future (before the code next
    awaits). A new decision's event is replaced wherever the turn keeps it. A decision
    matched against history is compared with the recorded tag at the end of its step
    (:meth:`verify_tags`), once the code can no longer change it: a different tag is
    nondeterminism, like a different name or input."""

    loop: DeterministicLoop
    is_replaying: bool
    history: list[HistoryEvent]
    _new: list[HistoryEvent]
    _decisions: list[HistoryEvent]
    _known: dict[int, HistoryEvent]

    def _fail_nondeterminism(self, detail: str, event_id: int) -> None: ...

    def scheduled_activity(self, fut: DurableFuture[Any], tag: str | None) -> None:
        """An activity's future was made (new or matched against history) with ``tag``.
        One matched against history waits for the end of its step to compare tags."""
        loop = self.loop
        fut.step = loop.step
        if self.is_replaying:
            if loop.unverified is None:
                loop.unverified = {}
            loop.unverified[fut] = tag

    def retag(self, fut: DurableFuture[Any], tag: str) -> None:
        check_tag(tag)
        loop = self.loop
        if fut.step != loop.step or fut.done():
            raise RuntimeError(
                f"{fut.describe()}.with_tag({tag!r}) came too late: a tag can only be set on "
                "the future straight from ctx.schedule_activity, before the orchestration "
                "awaits anything; write ctx.schedule_activity(...).with_tag(tag), or pass "
                "tag= to schedule_activity")
        pending = loop.unverified
        if pending is not None and fut in pending:  # matched: compared at the step's end
            pending[fut] = tag
            return
        event = fut.event
        assert isinstance(event, ActivityScheduled)
        tagged = dataclasses.replace(event, tag=tag)
        # A new decision of this step: it is among the last events of each list.
        for events in (self.history, self._new, self._decisions):
            for i in range(len(events) - 1, -1, -1):
                if events[i] is event:
                    events[i] = tagged
                    break
        self._known[event.event_id] = tagged
        fut.event = tagged

    def verify_tags(self) -> None:
        """The end of a loop step: every activity matched against history during it
        must have the tag history recorded."""
        pending = self.loop.unverified
        if not pending:
            return
        self.loop.unverified = None
        for fut, tag in pending.items():
            recorded = fut.event
            assert isinstance(recorded, ActivityScheduled)
            if recorded.tag != tag:
                wanted = dataclasses.replace(recorded, tag=tag)
                self._fail_nondeterminism(
                    f"expected {describe(recorded)} at event {recorded.event_id}, code "
                    f"scheduled {describe(wanted)} with {difference(recorded, wanted)}",
                    recorded.event_id)
                return

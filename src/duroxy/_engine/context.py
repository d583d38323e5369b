"""``OrchestrationContext``: everything orchestration code may ask of duroxy.

Every ``schedule_*`` call records a decision *when called* (not when awaited), in
call order, and returns a future that history resolves. Futures are ordinary asyncio
futures of the orchestration's deterministic loop, so they compose with
``asyncio.gather``/``wait``/``TaskGroup`` as well as with ``select``/``join``.

The context speaks to its execution through :class:`~.port.ExecutionPort` only. Its
futures are typed: ``await ctx.schedule_activity(fn, x)`` is ``fn``'s return type to a
type checker, and an ``output_type`` gives the type it names.

It is the whole surface orchestration code sees, one short method per call of the
Duroxide API with the docstring its reference page shows, which is why it runs past 500
lines; the work behind each call is the execution's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar, overload

from .. import codec
from .._names import name_problem
from .._tracing import TraceMethods
from ..errors import ActivityFailed
from ..history import (
    ActivityScheduled,
    CustomStatusSet,
    DetachedOrchestrationScheduled,
    EventSubscribed,
    GuidRecorded,
    HistoryEvent,
    QueueSubscribed,
    SubOrchestrationScheduled,
    UtcNowRecorded,
)
from ..options import RetryPolicy, to_seconds
from .futures import ContinueAsNew, Dated, DurableFuture, Ready
from .kvstate import KeyValueMethods
from .patching import PatchMethods
from .port import ExecutionPort
from .routing import RoutingAliases, check_routing

__all__ = ["OrchestrationContext"]

logger = logging.getLogger("duroxy.orchestration")

R = TypeVar("R")
T = TypeVar("T")

#: an activity or orchestration function, by the value its awaiting gives
AsyncFn = Callable[..., Coroutine[Any, Any, R]]
NameOrFn = str | Callable[..., Any]


def _check_name(value: str, what: str) -> str:
    problem = name_problem(value)
    if problem is not None:  # ValueError, as the client raises for the same
        raise ValueError(f"{what} {problem}")
    return value


class OrchestrationContext(KeyValueMethods, PatchMethods, RoutingAliases, TraceMethods):
    """The orchestration's view of duroxy, passed as its first argument.

    Every ``schedule_*`` call records a decision in the instance's history when it is
    called (not when awaited), in call order, and returns a future that a later history
    event resolves: activities (``schedule_activity``, ``schedule_activity_with_retry``),
    durable timers (``schedule_timer``, or ``asyncio.sleep``), external events
    (``schedule_wait``), children (``schedule_sub_orchestration``) and detached
    instances (``schedule_orchestration``). ``select``/``select2`` and ``join`` combine
    futures by their order in history. ``utcnow()`` and ``new_guid()`` give values
    recorded once and replayed after; ``continue_as_new`` ends this execution and starts
    a fresh one; ``set_custom_status`` publishes progress; ``trace_*`` log only when not
    replaying. On replay every call returns what history recorded, so the code must ask
    for the same things in the same order (see the determinism rules). Event queues
    (``dequeue_event``) and the instance's key-value state (``set_kv_value`` and the
    rest) are recorded and replayed the same way. ``is_patched``/``deprecate_patch``
    change the code of long-lived instances in place."""

    def __init__(self, execution: ExecutionPort) -> None:
        self._x = execution

    # ------------------------------------------------------------------ properties
    @property
    def instance_id(self) -> str:
        return self._x.instance_id

    @property
    def execution_id(self) -> int:
        started = self._x.started
        return started.execution_id if started else 1

    @property
    def orchestration_name(self) -> str:
        started = self._x.started
        return started.name if started else ""

    @property
    def orchestration_version(self) -> str | None:
        started = self._x.started
        return started.version if started else None

    @property
    def parent_instance_id(self) -> str | None:
        started = self._x.started
        return started.parent_instance_id if started else None

    @property
    def is_replaying(self) -> bool:
        return self._x.is_replaying

    # ------------------------------------------------------------------ activities
    def _activity_name(self, name_or_fn: NameOrFn) -> tuple[str, Any]:
        if isinstance(name_or_fn, str):
            return _check_name(name_or_fn, "activity name"), None
        if callable(name_or_fn):
            return self._x.function_name(name_or_fn), codec.output_type_of(name_or_fn)
        raise ValueError(
            f"activity must be a name or a function, not {type(name_or_fn).__name__}")

    def _activity(self, name: str, input_text: str, attempt: int, output_type: Any,
                  retry_of: HistoryEvent | None = None, session_id: str | None = None,
                  tag: str | None = None) -> DurableFuture[Any]:
        x = self._x

        def fresh(event: HistoryEvent) -> HistoryEvent:
            # A new schedule call is told to the runtime's hooks (which may give it a
            # trace context); a retry's later attempts keep the first attempt's.
            if retry_of is None:
                trace = x.scheduled("activity", name)
            else:
                trace = getattr(retry_of, "trace_context", None)
            assert isinstance(event, ActivityScheduled)
            return event if trace is None else dataclasses.replace(event, trace_context=trace)

        # The tag is compared once the code can no longer change it (``with_tag``).
        event = x.record(
            ActivityScheduled(name=name, input=input_text, attempt=attempt,
                              session_id=session_id, tag=tag),
            lambda r: (r.name == name and r.input == input_text  # type: ignore[attr-defined]
                       and r.session_id == session_id),  # type: ignore[attr-defined]
            fresh)
        fut = x.open_future("activity", event, output_type)
        x.scheduled_activity(fut, tag)
        return fut

    def _output_type(self, name: str, fn_type: Any, output_type: Any) -> Any:
        if output_type is not None:
            return output_type
        if fn_type is not None:
            return fn_type
        return self._x.activity_output_type(name)

    @overload
    def schedule_activity(self, name_or_fn: AsyncFn[R], input: Any = None, *,
                          output_type: None = None, session_id: str | None = None,
                          tag: str | None = None) -> DurableFuture[R]: ...
    @overload
    def schedule_activity(self, name_or_fn: Callable[..., R], input: Any = None, *,
                          output_type: None = None, session_id: str | None = None,
                          tag: str | None = None) -> DurableFuture[R]: ...
    @overload
    def schedule_activity(self, name_or_fn: NameOrFn, input: Any = None, *,
                          output_type: type[T], session_id: str | None = None,
                          tag: str | None = None) -> DurableFuture[T]: ...
    @overload
    def schedule_activity(self, name_or_fn: NameOrFn, input: Any = None, *,
                          output_type: Any = None, session_id: str | None = None,
                          tag: str | None = None) -> DurableFuture[Any]: ...

    def schedule_activity(self, name_or_fn: NameOrFn, input: Any = None, *,
                          output_type: Any = None, session_id: str | None = None,
                          tag: str | None = None) -> DurableFuture[Any]:
        """Schedule an activity; awaiting the result gives its output (or raises
        :class:`ActivityFailed`). ``session_id`` runs it on the runtime that owns that
        session; ``tag`` only on runtimes whose ``worker_tag_filter`` accepts it."""
        name, fn_type = self._activity_name(name_or_fn)
        check_routing(session_id, tag)
        input_text = codec.encode(input)
        return self._activity(name, input_text, 1, self._output_type(name, fn_type, output_type),
                              session_id=session_id, tag=tag)

    @overload
    def schedule_activity_typed(self, name_or_fn: NameOrFn, input: Any,
                                output_type: type[T]) -> DurableFuture[T]: ...
    @overload
    def schedule_activity_typed(self, name_or_fn: NameOrFn, input: Any = None,
                                output_type: Any = None) -> DurableFuture[Any]: ...

    def schedule_activity_typed(self, name_or_fn: NameOrFn, input: Any = None,
                                output_type: Any = None) -> DurableFuture[Any]:
        return self.schedule_activity(name_or_fn, input, output_type=output_type)

    @overload
    def schedule_activity_with_retry(self, name_or_fn: AsyncFn[R], input: Any,
                                     retry: RetryPolicy, *, output_type: None = None,
                                     session_id: str | None = None, tag: str | None = None
                                     ) -> asyncio.Task[R]: ...
    @overload
    def schedule_activity_with_retry(self, name_or_fn: Callable[..., R], input: Any,
                                     retry: RetryPolicy, *, output_type: None = None,
                                     session_id: str | None = None, tag: str | None = None
                                     ) -> asyncio.Task[R]: ...
    @overload
    def schedule_activity_with_retry(self, name_or_fn: NameOrFn, input: Any,
                                     retry: RetryPolicy, *, output_type: type[T],
                                     session_id: str | None = None, tag: str | None = None
                                     ) -> asyncio.Task[T]: ...
    @overload
    def schedule_activity_with_retry(self, name_or_fn: NameOrFn, input: Any,
                                     retry: RetryPolicy, *, output_type: Any = None,
                                     session_id: str | None = None, tag: str | None = None
                                     ) -> asyncio.Task[Any]: ...

    def schedule_activity_with_retry(self, name_or_fn: NameOrFn, input: Any,
                                     retry: RetryPolicy, *, output_type: Any = None,
                                     session_id: str | None = None, tag: str | None = None
                                     ) -> asyncio.Task[Any]:
        """Schedule an activity with retries; each attempt and each backoff wait is a
        durable event, and every attempt carries the same ``session_id`` and ``tag``.
        Raises :class:`ActivityFailed` with the last error and the attempt count when
        every attempt fails."""
        if not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, not {type(retry).__name__}")
        name, fn_type = self._activity_name(name_or_fn)
        check_routing(session_id, tag)
        input_text = codec.encode(input)
        out = self._output_type(name, fn_type, output_type)
        # The first attempt is recorded now, in call order, like any other schedule call.
        first = self._activity(name, input_text, 1, out, session_id=session_id, tag=tag)
        return self._x.loop.create_task(
            self._retry(name, input_text, retry, out, first, session_id, tag),
            name=f"ctx.schedule_activity_with_retry({name!r})")

    @overload
    def schedule_activity_with_retry_typed(self, name_or_fn: NameOrFn, input: Any,
                                           retry: RetryPolicy, output_type: type[T]
                                           ) -> asyncio.Task[T]: ...
    @overload
    def schedule_activity_with_retry_typed(self, name_or_fn: NameOrFn, input: Any,
                                           retry: RetryPolicy, output_type: Any = None
                                           ) -> asyncio.Task[Any]: ...

    def schedule_activity_with_retry_typed(self, name_or_fn: NameOrFn, input: Any,
                                           retry: RetryPolicy, output_type: Any = None
                                           ) -> asyncio.Task[Any]:
        return self.schedule_activity_with_retry(name_or_fn, input, retry,
                                                 output_type=output_type)

    async def _retry(self, name: str, input_text: str, retry: RetryPolicy, output_type: Any,
                     first: DurableFuture[Any], session_id: str | None = None,
                     tag: str | None = None) -> Any:
        timeout = retry.timeout_seconds
        non_retryable = retry.non_retryable_names
        fut = first
        attempt = 1
        while True:
            try:
                if timeout is None:
                    return await fut
                timer = self.schedule_timer(timeout)
                index, value = await self.select2(fut, timer)
                if index == 0:
                    return value
                error = ActivityFailed(name, "TimeoutError",
                                       f"attempt {attempt} timed out after {timeout:g} s", attempt)
            except ActivityFailed as e:
                error = e
            # The same decision on replay: the activity's own verdict is in history,
            # the policy's list is code.
            stop = not error.retryable or error.error_type in non_retryable
            if attempt >= retry.max_attempts or stop:
                raise ActivityFailed(name, error.error_type, error.message, attempt,
                                     kind=error.kind, retryable=not stop)
            delay = retry.delay_after(attempt)
            if delay > 0:
                await self.schedule_timer(delay)
            attempt += 1
            fut = self._activity(name, input_text, attempt, output_type, first.event,
                                 session_id, tag)

    # ------------------------------------------------------------------ timers, events
    def schedule_timer(self, delay: timedelta | float) -> DurableFuture[None]:
        """A durable timer; awaiting it returns ``None`` once ``delay`` has passed.
        The fire time is fixed when first scheduled."""
        return self._x.timer(to_seconds(delay, "timer delay"))

    @overload
    def schedule_wait(self, event_name: str, *, output_type: type[T]) -> DurableFuture[T]: ...
    @overload
    def schedule_wait(self, event_name: str, *, output_type: Any = None
                      ) -> DurableFuture[Any]: ...

    def schedule_wait(self, event_name: str, *, output_type: Any = None) -> DurableFuture[Any]:
        """Wait for ``Client.raise_event(instance_id, event_name, data)``; gives ``data``."""
        _check_name(event_name, "event name")
        event = self._x.record(EventSubscribed(name=event_name),
                               lambda r: r.name == event_name)  # type: ignore[attr-defined]
        assert isinstance(event, EventSubscribed)
        return self._x.subscribe(event, output_type)

    wait_for_event = schedule_wait

    @overload
    def schedule_wait_typed(self, event_name: str, output_type: type[T]
                            ) -> DurableFuture[T]: ...
    @overload
    def schedule_wait_typed(self, event_name: str, output_type: Any = None
                            ) -> DurableFuture[Any]: ...

    def schedule_wait_typed(self, event_name: str, output_type: Any = None
                            ) -> DurableFuture[Any]:
        return self.schedule_wait(event_name, output_type=output_type)

    wait_for_event_typed = schedule_wait_typed

    # ------------------------------------------------------------------ event queues
    @overload
    def dequeue_event(self, queue: str, *, output_type: type[T]) -> DurableFuture[T]: ...
    @overload
    def dequeue_event(self, queue: str, *, output_type: Any = None) -> DurableFuture[Any]: ...

    def dequeue_event(self, queue: str, *, output_type: Any = None) -> DurableFuture[Any]:
        """The next message of ``queue`` (``Client.enqueue_event``), first in first out.
        A message that arrived before the dequeue is taken at once; a dequeue that is
        cancelled or loses a select takes nothing. Queues are apart from events: a
        queue and an event of the same name never meet."""
        _check_name(queue, "queue name")
        event = self._x.record(QueueSubscribed(name=queue),
                               lambda r: r.name == queue)  # type: ignore[attr-defined]
        assert isinstance(event, QueueSubscribed)
        return self._x.subscribe(event, output_type)

    @overload
    def dequeue_event_typed(self, queue: str, output_type: type[T]) -> DurableFuture[T]: ...
    @overload
    def dequeue_event_typed(self, queue: str, output_type: Any = None
                            ) -> DurableFuture[Any]: ...

    def dequeue_event_typed(self, queue: str, output_type: Any = None) -> DurableFuture[Any]:
        return self.dequeue_event(queue, output_type=output_type)

    # ------------------------------------------------------------------ orchestrations
    def _orch_name(self, name: NameOrFn) -> str:
        if isinstance(name, str):
            return _check_name(name, "orchestration name")
        if callable(name):
            return self._x.function_name(name)
        raise ValueError(
            f"orchestration must be a name or a function, not {type(name).__name__}")

    @overload
    def schedule_sub_orchestration(self, name: AsyncFn[R], input: Any = None, *,
                                   instance_id: str | None = None, version: str | None = None,
                                   output_type: None = None) -> DurableFuture[R]: ...
    @overload
    def schedule_sub_orchestration(self, name: NameOrFn, input: Any = None, *,
                                   instance_id: str | None = None, version: str | None = None,
                                   output_type: type[T]) -> DurableFuture[T]: ...
    @overload
    def schedule_sub_orchestration(self, name: NameOrFn, input: Any = None, *,
                                   instance_id: str | None = None, version: str | None = None,
                                   output_type: Any = None) -> DurableFuture[Any]: ...

    def schedule_sub_orchestration(self, name: NameOrFn, input: Any = None, *,
                                   instance_id: str | None = None, version: str | None = None,
                                   output_type: Any = None) -> DurableFuture[Any]:
        """Start a child orchestration and wait for its output (or
        :class:`SubOrchestrationFailed`). The default child id derives from the parent's."""
        fn_type = None if isinstance(name, str) else codec.output_type_of(name)
        orch = self._orch_name(name)
        if instance_id is not None:
            _check_name(instance_id, "instance id")
        input_text = codec.encode(input)
        # Event ids start again in each execution: past the first, the default id names
        # the execution too, or a continue-as-new loop would reuse its children's ids.
        execution_id = self.execution_id
        next_id = self._x.next_event_id
        at = f"{next_id}" if execution_id <= 1 else f"{execution_id}.{next_id}"
        child_id = instance_id or f"{self.instance_id}::sub::{at}"

        def same(r: HistoryEvent) -> bool:
            assert isinstance(r, SubOrchestrationScheduled)
            return (r.name == orch and r.input == input_text
                    and (instance_id is None or r.instance_id == instance_id))

        def fresh(event: HistoryEvent) -> HistoryEvent:
            trace = self._x.scheduled("sub_orchestration", orch)
            assert isinstance(event, SubOrchestrationScheduled)
            return event if trace is None else dataclasses.replace(event, trace_context=trace)

        event = self._x.record(SubOrchestrationScheduled(
            name=orch, instance_id=child_id, input=input_text, version=version), same, fresh)
        return self._x.open_future("sub_orchestration", event, output_type or fn_type)

    @overload
    def schedule_sub_orchestration_typed(self, name: NameOrFn, input: Any,
                                         output_type: type[T], *,
                                         instance_id: str | None = None,
                                         version: str | None = None) -> DurableFuture[T]: ...
    @overload
    def schedule_sub_orchestration_typed(self, name: NameOrFn, input: Any = None,
                                         output_type: Any = None, *,
                                         instance_id: str | None = None,
                                         version: str | None = None) -> DurableFuture[Any]: ...

    def schedule_sub_orchestration_typed(self, name: NameOrFn, input: Any = None,
                                         output_type: Any = None, *,
                                         instance_id: str | None = None,
                                         version: str | None = None) -> DurableFuture[Any]:
        return self.schedule_sub_orchestration(name, input, instance_id=instance_id,
                                               version=version, output_type=output_type)

    def schedule_sub_orchestration_versioned(self, name: NameOrFn, version: str | None,
                                             input: Any = None, *,
                                             instance_id: str | None = None,
                                             output_type: Any = None) -> DurableFuture[Any]:
        return self.schedule_sub_orchestration(name, input, instance_id=instance_id,
                                               version=version, output_type=output_type)

    def schedule_orchestration(self, name: NameOrFn, instance_id: str, input: Any = None, *,
                               version: str | None = None) -> None:
        """Start a detached orchestration (fire and forget); recorded in history."""
        orch = self._orch_name(name)
        _check_name(instance_id, "instance id")
        input_text = codec.encode(input)
        self._x.record(
            DetachedOrchestrationScheduled(name=orch, instance_id=instance_id, input=input_text,
                                           version=version),
            lambda r: r.name == orch and r.instance_id == instance_id)  # type: ignore[attr-defined]

    def schedule_orchestration_versioned(self, name: NameOrFn, version: str | None,
                                         instance_id: str, input: Any = None) -> None:
        self.schedule_orchestration(name, instance_id, input, version=version)

    def continue_as_new(self, input: Any = None, *, version: str | None = None) -> NoReturn:
        """End this execution and start a fresh one (empty history, next execution id)
        with ``input``; the version is re-resolved to the latest unless given."""
        raise ContinueAsNew(codec.encode(input), version)

    def continue_as_new_versioned(self, version: str, input: Any = None) -> NoReturn:
        self.continue_as_new(input, version=version)

    # ------------------------------------------------------------------ composition
    def select(self, *futures: Awaitable[Any]) -> Dated[tuple[int, Any]]:
        """Wait for the first of ``futures`` to complete *in history*; returns
        ``(index, value)`` and cancels the others (raises the winner's exception)."""
        if len(futures) == 1 and isinstance(futures[0], (list, tuple)):
            futures = tuple(futures[0])
        if not futures:
            raise ValueError("select needs at least one future")
        loop = self._x.loop
        futs = [asyncio.ensure_future(f, loop=loop) for f in futures]
        outer: Dated[tuple[int, Any]] = Dated(loop, loop)

        def won(index: int, fut: asyncio.Future[Any]) -> None:
            if outer.done():
                return
            for j, other in enumerate(futs):
                if j != index:
                    other.remove_done_callback(callbacks[j])
                    if isinstance(other, DurableFuture):
                        other.lost()
                    else:
                        other.cancel()
            if fut.cancelled():
                outer.cancel()
            elif (exc := fut.exception()) is not None:
                outer.set_exception(exc)
            else:
                outer.set_result((index, fut.result()))

        callbacks = [functools.partial(won, i) for i in range(len(futs))]

        def on_outer(o: asyncio.Future[Any]) -> None:
            if o.cancelled():
                for f in futs:
                    f.cancel()

        outer.add_done_callback(on_outer)
        done = [i for i, f in enumerate(futs) if f.done()]
        if done:
            # The one completed first in history wins; futures whose completion history
            # does not date (a plain future) come after, and ties go by argument order.
            def order(i: int) -> tuple[float, int]:
                by = loop.completed_by(futs[i])
                return (math.inf if by is None else by, i)
            first = min(done, key=order)
            won(first, futs[first])
            return outer
        for i, f in enumerate(futs):
            f.add_done_callback(callbacks[i])
        return outer

    def select2(self, a: Awaitable[Any], b: Awaitable[Any]) -> Dated[tuple[int, Any]]:
        return self.select(a, b)

    def join(self, *futures: Any) -> Dated[list[Any]]:
        """Wait for every future; returns their results in argument order, or raises the
        first failure in argument order once all have finished."""
        if len(futures) == 1 and isinstance(futures[0], (list, tuple)):
            futures = tuple(futures[0])
        loop = self._x.loop
        futs = [asyncio.ensure_future(f, loop=loop) for f in futures]
        outer: Dated[list[Any]] = Dated(loop, loop)
        if not futs:
            outer.set_result([])
            return outer
        remaining = [len(futs)]

        def one_done(_f: asyncio.Future[Any]) -> None:
            remaining[0] -= 1
            if remaining[0] or outer.done():
                return
            for f in futs:
                if f.cancelled():
                    outer.cancel()
                    return
                if (exc := f.exception()) is not None:
                    outer.set_exception(exc)
                    return
            outer.set_result([f.result() for f in futs])

        def on_outer(o: asyncio.Future[Any]) -> None:
            if o.cancelled():
                for f in futs:
                    f.cancel()

        outer.add_done_callback(on_outer)
        for f in futs:
            f.add_done_callback(one_done)
        return outer

    # ------------------------------------------------------------------ values
    def _ready(self, call: str, value: T) -> asyncio.Future[T]:
        return Ready(self._x.loop, call, value)

    def utcnow(self) -> asyncio.Future[datetime]:
        """The current time, recorded once in history and replayed after (awaitable).

        It is the orchestration's clock (see ``OrchestrationExecution._stamp``): the
        time of the event the code resumed on, which timers and ``loop.time()`` share."""
        value_us = self._x.current_time_ms * 1000
        event = self._x.record(UtcNowRecorded(value_us=value_us), lambda r: True)
        assert isinstance(event, UtcNowRecorded)
        recorded = event.value_us
        return self._ready("ctx.utcnow()", datetime.fromtimestamp(recorded / 1_000_000, UTC))

    def new_guid(self) -> asyncio.Future[str]:
        """A random UUID string, recorded once in history and replayed after (awaitable)."""
        event = self._x.record(GuidRecorded(value=""), lambda r: True,
                               lambda e: GuidRecorded(value=self._x.new_guid()))
        assert isinstance(event, GuidRecorded)
        return self._ready("ctx.new_guid()", event.value)

    # ------------------------------------------------------------------ custom status
    def set_custom_status(self, value: Any) -> None:
        text = codec.encode(value)
        self._x.record(CustomStatusSet(status=text), lambda r: True)
        self._x.custom_status = text

    def reset_custom_status(self) -> None:
        """Duroxide's name for ``set_custom_status(None)``."""
        self.set_custom_status(None)

    def get_custom_status(self) -> Any:
        text = self._x.custom_status
        return None if text is None else codec.decode(text)

    # ------------------------------------------------------------------ tracing
    def _trace(self, level: int, msg: str) -> None:
        if self._x.is_replaying or self._x.quiet or not logger.isEnabledFor(level):
            return
        logger.log(level, msg, extra={
            "instance_id": self.instance_id,
            "execution_id": self.execution_id,
            "orchestration_name": self.orchestration_name,
            "orchestration_version": self.orchestration_version,
        })

    def __repr__(self) -> str:
        return (f"OrchestrationContext(instance_id={self.instance_id!r}, "
                f"name={self.orchestration_name!r}, execution_id={self.execution_id})")


"""``Client``: start, signal, cancel, watch and manage instances in a store."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from . import _hooks, codec
from ._admin import decode_page_token, encode_page_token, filters_digest
from ._client_admin import AdminCalls
from ._client_kv import KeyValueCalls
from ._client_types import (
    InstanceInfo,
    InstancePage,
    OrchestrationState,
    OrchestrationStatus,
    WorkerInfo,
    decode_plain,
    instance_info,
    worker_info,
)
from ._names import name_problem
from ._semver import parse_semver
from ._waiting import wait_for_news
from .errors import DuroxyError, InstanceNotFound, PayloadError
from .history import (
    CancellationRequested,
    EventRaised,
    HistoryEvent,
    OrchestrationStarted,
    OrchestratorMessage,
    QueueEventDelivered,
    SubOrchestrationFailedEvent,
    SubOrchestrationScheduled,
)
from .options import check_count, to_seconds
from .providers.base import TERMINAL_STATES, Channel, Provider

__all__ = ["Client", "InstanceInfo", "InstancePage", "OrchestrationState",
           "OrchestrationStatus", "WorkerInfo"]


def check_id(value: object, what: str) -> str:
    problem = name_problem(value)
    if problem is not None:
        raise ValueError(f"{what} {problem}")
    assert isinstance(value, str)
    return value


def _epoch(value: datetime | float | None, what: str) -> float | None:
    """A creation-time bound as epoch seconds: a ``datetime`` (a naive one is local
    time, as ``datetime.timestamp`` takes it) or a number."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"{what} must be a datetime or epoch seconds, not {type(value).__name__}")


class Client(KeyValueCalls, AdminCalls):
    """Talks to a store on behalf of an application: starts instances, raises and
    enqueues events, cancels, waits for and reads their status, history and key-value
    state, lists instances and workers, prunes, deletes and purges. It needs no running
    runtime. Every method is a coroutine; a client holds no connection of its own beyond
    the provider's."""

    def __init__(self, provider: Provider) -> None:
        if not isinstance(provider, Provider):
            raise TypeError(f"Client needs a duroxy provider, not {type(provider).__name__}")
        self.provider = provider

    # ------------------------------------------------------------------ starting
    async def start_orchestration(self, instance_id: str, name: str, input: Any = None) -> None:
        """Create the instance (PENDING) and queue its start; raises
        :class:`InstanceAlreadyExists` if the id is taken."""
        await self._start(instance_id, name, None, input)

    async def start_orchestration_versioned(self, instance_id: str, name: str, version: str,
                                            input: Any = None) -> None:
        parse_semver(version)
        await self._start(instance_id, name, version, input)

    start_orchestration_typed = start_orchestration

    async def _start(self, instance_id: str, name: str, version: str | None, input: Any) -> None:
        check_id(instance_id, "instance id")
        check_id(name, "orchestration name")
        # Stamped with the time of the request: the orchestration's clock starts here.
        event = OrchestrationStarted(name=name, version=version, input=codec.encode(input),
                                     ts=self.provider.clock.time_us() // 1000)
        if not _hooks.client_hooks():  # (no integration installed: no hook code runs)
            await self.provider.create_instance(OrchestratorMessage(instance_id, event, 1))
            return
        with _hooks.client_call("start", name, instance_id) as trace:
            if trace is not None:  # the instance continues the caller's trace
                event = dataclasses.replace(event, trace_context=trace)
            await self.provider.create_instance(OrchestratorMessage(instance_id, event, 1))

    # ------------------------------------------------------------------ signals
    async def raise_event(self, instance_id: str, event_name: str, data: Any = None) -> None:
        """Deliver an external event; raises :class:`InstanceNotFound` for an unknown id."""
        check_id(instance_id, "instance id")
        check_id(event_name, "event name")
        message = OrchestratorMessage(instance_id,
                                      EventRaised(name=event_name, data=codec.encode(data)))
        if not _hooks.client_hooks():
            await self.provider.enqueue_orchestrator_message(message)
            return
        with _hooks.client_call("raise_event", event_name, instance_id):
            await self.provider.enqueue_orchestrator_message(message)

    send_signal = raise_event
    raise_event_typed = raise_event

    async def enqueue_event(self, instance_id: str, queue: str, data: Any = None) -> None:
        """Send a message to the instance's queue ``queue`` (``ctx.dequeue_event``);
        raises :class:`InstanceNotFound` for an unknown id. Not idempotent: a retried
        call sends a second message. A message for a finished instance is accepted and
        discarded."""
        check_id(instance_id, "instance id")
        check_id(queue, "queue name")
        message = OrchestratorMessage(
            instance_id, QueueEventDelivered(name=queue, data=codec.encode(data)))
        if not _hooks.client_hooks():
            await self.provider.enqueue_orchestrator_message(message)
            return
        with _hooks.client_call("enqueue_event", queue, instance_id):
            await self.provider.enqueue_orchestrator_message(message)

    enqueue_event_typed = enqueue_event

    async def cancel_instance(self, instance_id: str, reason: str = "") -> None:
        """Ask the instance to stop: ``asyncio.CancelledError`` arrives at its current
        await; it ends CANCELLED. Cancelling a finished instance changes nothing."""
        check_id(instance_id, "instance id")
        rec = await self.provider.get_instance(instance_id)
        if rec is None:
            raise InstanceNotFound(instance_id)
        if rec.state in TERMINAL_STATES:
            return
        await self.provider.enqueue_orchestrator_message(OrchestratorMessage(
            instance_id, CancellationRequested(reason=str(reason))))

    # ------------------------------------------------------------------ reading
    async def get_orchestration_status(self, instance_id: str) -> OrchestrationStatus:
        check_id(instance_id, "instance id")
        rec = await self.provider.get_instance(instance_id)
        if rec is None:
            return OrchestrationStatus(instance_id, OrchestrationState.NOT_FOUND)
        return OrchestrationStatus(
            instance_id=instance_id, state=OrchestrationState(rec.state),
            output=decode_plain(rec.output), error=rec.error,
            custom_status=decode_plain(rec.custom_status), name=rec.name,
            version=rec.version, execution_id=rec.execution_id,
            custom_status_version=rec.custom_status_version)

    async def wait_for_orchestration(self, instance_id: str, timeout: float | timedelta
                                     ) -> OrchestrationStatus:
        """The status once the instance is COMPLETED, FAILED or CANCELLED. Raises
        ``TimeoutError`` when ``timeout`` passes first, ``InstanceNotFound`` for an
        unknown id."""
        check_id(instance_id, "instance id")
        seconds = to_seconds(timeout, "timeout")
        return await self._wait_for_status(
            instance_id, seconds, ("terminal",), lambda status: status.is_terminal,
            lambda last: f"instance {instance_id!r} is still {last.state.value} after "
                         f"{seconds:g} s")

    async def wait_for_status_change(self, instance_id: str, last_version: int,
                                     timeout: float | timedelta) -> OrchestrationStatus:
        """The status once ``custom_status_version`` exceeds ``last_version``, or the
        instance is COMPLETED, FAILED or CANCELLED (a finished instance returns at
        once). Woken by the commits that change it. ``TimeoutError`` when ``timeout``
        passes first, ``InstanceNotFound`` for an unknown id."""
        check_id(instance_id, "instance id")
        if isinstance(last_version, bool) or not isinstance(last_version, int):
            raise TypeError(f"last_version must be an int, not {type(last_version).__name__}")
        seconds = to_seconds(timeout, "timeout")
        return await self._wait_for_status(
            instance_id, seconds, ("updated", "terminal"),
            lambda status: status.custom_status_version > last_version or status.is_terminal,
            lambda last: f"instance {instance_id!r} custom status still at version "
                         f"{last.custom_status_version} (not past {last_version}) after "
                         f"{seconds:g} s")

    async def _wait_for_status(self, instance_id: str, seconds: float,
                               channels: Sequence[Channel],
                               done: Callable[[OrchestrationStatus], bool],
                               describe: Callable[[OrchestrationStatus], str]
                               ) -> OrchestrationStatus:
        """The instance's status once ``done`` says so, read again after each commit
        announced for it on ``channels`` (see ``wait_for_news``). ``InstanceNotFound``
        for an unknown id; ``TimeoutError`` with ``describe`` of the last status read."""
        seen: list[OrchestrationStatus] = []

        async def check() -> tuple[bool, OrchestrationStatus]:
            status = await self.get_orchestration_status(instance_id)
            if status.state is OrchestrationState.NOT_FOUND:
                raise InstanceNotFound(instance_id)
            seen[:] = [status]
            return done(status), status

        return await wait_for_news(self.provider, instance_id, channels, check, seconds,
                                   lambda: describe(seen[0]))

    async def get_instance_info(self, instance_id: str) -> InstanceInfo:
        check_id(instance_id, "instance id")
        rec = await self.provider.get_instance(instance_id)
        if rec is None:
            raise InstanceNotFound(instance_id)
        return instance_info(rec)

    @staticmethod
    def _states(state: str | Sequence[str] | None) -> list[str] | None:
        """A state filter as stored state names (``ValueError`` for an unknown one)."""
        if state is None:
            return None
        names = [state] if isinstance(state, str) else list(state)
        return [OrchestrationState(str(s).upper()).value for s in names]

    def _filters(self, state: str | Sequence[str] | None, name: str | None,
                 parent_instance_id: str | None, created_after: datetime | float | None,
                 created_before: datetime | float | None) -> dict[str, Any]:
        if name is not None:
            check_id(name, "orchestration name")
        if parent_instance_id is not None:
            check_id(parent_instance_id, "parent_instance_id")
        return {"state": self._states(state), "name": name,
                "parent_instance_id": parent_instance_id,
                "created_after": _epoch(created_after, "created_after"),
                "created_before": _epoch(created_before, "created_before")}

    async def list_instances(self, *, state: str | Sequence[str] | None = None,
                             name: str | None = None, parent_instance_id: str | None = None,
                             created_after: datetime | float | None = None,
                             created_before: datetime | float | None = None,
                             limit: int | None = None, offset: int = 0) -> list[InstanceInfo]:
        """Every instance matching the filters (``created_after``/``created_before``:
        exclusive bounds of the creation time, ``datetime`` s or epoch seconds),
        oldest created first, ties by id; only the first ``limit`` when given (a store
        too large for one list: ``iter_instances``). ``offset`` skips that many."""
        if limit is not None:
            check_count(limit, "limit", 0)
        check_count(offset, "offset", 0)
        records = await self.provider.list_instances(
            **self._filters(state, name, parent_instance_id, created_after, created_before),
            limit=limit, offset=offset)
        return [instance_info(r) for r in records]

    async def list_instances_page(self, *, state: str | Sequence[str] | None = None,
                                  name: str | None = None,
                                  parent_instance_id: str | None = None,
                                  created_after: datetime | float | None = None,
                                  created_before: datetime | float | None = None,
                                  limit: int = 100, page_token: str | None = None
                                  ) -> InstancePage:
        """One page of ``list_instances`` (``limit`` 1 to 1,000). Its
        ``next_page_token`` is set whenever more instances match; tokens name a position
        (not an offset), so an instance that exists throughout the paging is returned
        exactly once, and a token reused with other filters raises ``ValueError``."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise ValueError(f"limit must be an int from 1 to 1,000, got {limit!r:.40}")
        filters = self._filters(state, name, parent_instance_id, created_after,
                                created_before)
        digest = filters_digest([filters[k] for k in sorted(filters)])
        after = None if page_token is None else decode_page_token(page_token, digest)
        records = await self.provider.list_instances(**filters, limit=limit + 1, after=after)
        more = len(records) > limit
        records = records[:limit]
        token = encode_page_token(digest, records[-1].created_at, records[-1].instance_id) \
            if more else None
        return InstancePage(tuple(instance_info(r) for r in records), token)

    async def iter_instances(self, *, state: str | Sequence[str] | None = None,
                             name: str | None = None, parent_instance_id: str | None = None,
                             created_after: datetime | float | None = None,
                             created_before: datetime | float | None = None,
                             page_size: int = 500) -> AsyncIterator[InstanceInfo]:
        """Every instance matching the filters, as ``list_instances`` orders them, read
        page by page (``page_size`` at a time) for stores too large for one list."""
        token: str | None = None
        while True:
            page = await self.list_instances_page(
                state=state, name=name, parent_instance_id=parent_instance_id,
                created_after=created_after, created_before=created_before,
                limit=page_size, page_token=token)
            for info in page.items:
                yield info
            token = page.next_page_token
            if token is None:
                return

    async def read_history(self, instance_id: str, execution_id: int | None = None
                           ) -> list[HistoryEvent]:
        """History events of the latest (or given) execution, in order. Raises
        ``PayloadError`` naming the instance when a stored event does not decode."""
        check_id(instance_id, "instance id")
        if execution_id is not None:
            check_count(execution_id, "execution_id", 1)
        if await self.provider.get_instance(instance_id) is None:
            raise InstanceNotFound(instance_id)
        try:
            return await self.provider.read_history(instance_id, execution_id)
        except PayloadError as e:
            which = "" if execution_id is None else f" (execution {execution_id})"
            raise PayloadError(f"stored history of instance {instance_id!r}{which} does not "
                               f"decode: {e}") from e

    async def list_executions(self, instance_id: str) -> list[int]:
        """The instance's execution ids, oldest first; ``InstanceNotFound`` for an
        unknown id."""
        check_id(instance_id, "instance id")
        executions = await self.provider.list_executions(instance_id)
        if not executions and await self.provider.get_instance(instance_id) is None:
            raise InstanceNotFound(instance_id)
        return executions

    async def list_workers(self, *, include_stopped: bool = False) -> list[WorkerInfo]:
        """The runtimes whose heartbeat rows the store holds, oldest started first:
        those running or silent (``alive`` tells them apart), and with
        ``include_stopped`` those that shut down too. Rows of workers not seen for a
        day are removed by the runtimes' heartbeats."""
        records = await self.provider.list_workers(include_stopped=bool(include_stopped))
        now = time.time()  # (heartbeats are stamped with the real time, whatever the clock)
        return [worker_info(r, now) for r in records]

    # ------------------------------------------------------------------ management
    async def delete_instance(self, instance_id: str, force: bool = False) -> int:
        """Delete an instance with its history, queued work and children. A running
        instance is only deleted with ``force=True``. Returns how many were deleted."""
        check_id(instance_id, "instance id")
        rec = await self.provider.get_instance(instance_id)
        if rec is None:
            raise InstanceNotFound(instance_id)
        if rec.state not in TERMINAL_STATES and not force:
            raise DuroxyError(f"instance {instance_id!r} is {rec.state}; cancel it first or "
                              "pass force=True to delete it while it runs")
        deleted = await self.provider.delete_instance(instance_id, cascade=True)
        if rec.state not in TERMINAL_STATES and rec.parent_instance_id is not None:
            await self._tell_parent_child_deleted(rec.parent_instance_id, instance_id)
        return deleted

    async def _tell_parent_child_deleted(self, parent_id: str, child_id: str) -> None:
        """A child deleted while it ran never replies: its parent, if it still waits for
        it, is told the child failed (else it would wait forever)."""
        parent = await self.provider.get_instance(parent_id)
        if parent is None or parent.state in TERMINAL_STATES:
            return
        history = await self.provider.read_history(parent_id, parent.execution_id)
        replied = {getattr(e, "source_event_id", None) for e in history}
        waiting = [e.event_id for e in history if isinstance(e, SubOrchestrationScheduled)
                   and e.instance_id == child_id and e.event_id not in replied]
        for event_id in waiting:
            with contextlib.suppress(InstanceNotFound):  # the parent went meanwhile
                await self.provider.enqueue_orchestrator_message(OrchestratorMessage(
                    parent_id, SubOrchestrationFailedEvent(
                        source_event_id=event_id, error_type="Deleted",
                        message=f"child instance {child_id!r} was deleted while it ran"),
                    parent.execution_id))

    async def purge_instances(self, *, state: str | Sequence[str] | None = None,
                              older_than: float | timedelta | None = None,
                              name: str | None = None, limit: int | None = None) -> int:
        """Delete finished instances (all terminal states unless ``state`` narrows it)
        not updated for ``older_than``; returns how many were deleted."""
        if state is None:
            states = sorted(TERMINAL_STATES)
        else:
            states = [state] if isinstance(state, str) else list(state)
            states = [OrchestrationState(s.upper()).value for s in states]
            if not set(states) <= TERMINAL_STATES:
                raise ValueError("only finished instances can be purged "
                                 f"({', '.join(sorted(TERMINAL_STATES))})")
        if limit is not None:
            check_count(limit, "limit", 0)
        before = None if older_than is None else \
            self.provider.clock.time() - to_seconds(older_than)
        return await self.provider.purge_instances(states=states, updated_before=before,
                                                   name=name, limit=limit)

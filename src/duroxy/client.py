"""``Client``: start, signal, cancel, watch and manage instances in a store."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from . import _hooks, codec
from ._names import name_problem
from ._semver import parse_semver
from .errors import DuroxyError, ErrorDetails, InstanceNotFound, PayloadError
from .history import (
    CancellationRequested,
    EventRaised,
    HistoryEvent,
    OrchestrationStarted,
    OrchestratorMessage,
    SubOrchestrationFailedEvent,
    SubOrchestrationScheduled,
)
from .options import check_count, to_seconds
from .providers.base import TERMINAL_STATES, InstanceRecord, Provider, WorkerRecord

__all__ = ["Client", "InstanceInfo", "OrchestrationState", "OrchestrationStatus", "WorkerInfo"]

# Safety-net poll while waiting for an instance finished by another process.
_WAIT_POLL_S = 0.25


class OrchestrationState(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    NOT_FOUND = "NOT_FOUND"

    @property
    def is_terminal(self) -> bool:
        return self.value in TERMINAL_STATES


@dataclass(frozen=True, slots=True)
class OrchestrationStatus:
    """An instance's state as a client sees it. ``output`` and ``custom_status`` are
    decoded JSON values; ``error`` is set for FAILED and CANCELLED instances."""

    instance_id: str
    state: OrchestrationState
    output: Any = None
    error: ErrorDetails | None = None
    custom_status: Any = None
    name: str | None = None
    version: str | None = None
    execution_id: int | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state.is_terminal


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    instance_id: str
    name: str
    version: str | None
    state: OrchestrationState
    execution_id: int
    created_at: datetime
    updated_at: datetime
    parent_instance_id: str | None
    output: Any = None
    error: ErrorDetails | None = None
    custom_status: Any = None


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A runtime as its heartbeat row shows it (``Client.list_workers``). Times are
    timezone-aware (UTC); ``stopped_at`` is set once it shut down. ``orchestrations``
    lists ``"name@version"`` for every version it has registered, ``activities`` the
    activity names: during a rolling deploy they show which worker runs what. ``alive``:
    not stopped, and seen within three of its own heartbeat intervals (a worker that
    died just stops being seen). ``worker_node_id``, ``tag_filter`` and
    ``sessions_owned`` describe activity routing."""

    worker_id: str
    worker_node_id: str | None
    host: str
    pid: int
    duroxy_version: str
    started_at: datetime
    last_seen_at: datetime
    stopped_at: datetime | None
    orchestration_concurrency: int
    activity_concurrency: int
    tag_filter: str
    sessions_owned: int
    active_activities: int
    orchestrations: tuple[str, ...]
    activities: tuple[str, ...]
    alive: bool


def _worker_info(rec: WorkerRecord, now: float) -> WorkerInfo:
    return WorkerInfo(
        worker_id=rec.worker_id, worker_node_id=rec.worker_node_id, host=rec.host,
        pid=rec.pid, duroxy_version=rec.duroxy_version, started_at=_to_dt(rec.started_at),
        last_seen_at=_to_dt(rec.last_seen_at),
        stopped_at=None if rec.stopped_at is None else _to_dt(rec.stopped_at),
        orchestration_concurrency=rec.orchestration_concurrency,
        activity_concurrency=rec.activity_concurrency, tag_filter=rec.tag_filter,
        sessions_owned=rec.sessions_owned, active_activities=rec.active_activities,
        orchestrations=tuple(rec.orchestrations), activities=tuple(rec.activities),
        alive=rec.alive_at(now))


def check_id(value: object, what: str) -> str:
    problem = name_problem(value)
    if problem is not None:
        raise ValueError(f"{what} {problem}")
    assert isinstance(value, str)
    return value


def _decode_plain(text: str | None) -> Any:
    return None if text is None else codec.decode(text)


def _to_dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _info(rec: InstanceRecord) -> InstanceInfo:
    return InstanceInfo(
        instance_id=rec.instance_id, name=rec.name, version=rec.version,
        state=OrchestrationState(rec.state), execution_id=rec.execution_id,
        created_at=_to_dt(rec.created_at), updated_at=_to_dt(rec.updated_at),
        parent_instance_id=rec.parent_instance_id, output=_decode_plain(rec.output),
        error=rec.error, custom_status=_decode_plain(rec.custom_status))


class Client:
    """Talks to a store on behalf of an application: starts instances, raises events,
    cancels, waits for and reads their status and history, lists instances and
    workers, deletes and purges. It needs no running runtime. Every method is
    a coroutine; a client holds no connection of its own beyond the provider's."""

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
                                     ts=time.time_ns() // 1_000_000)
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
            output=_decode_plain(rec.output), error=rec.error,
            custom_status=_decode_plain(rec.custom_status), name=rec.name,
            version=rec.version, execution_id=rec.execution_id)

    async def wait_for_orchestration(self, instance_id: str, timeout: float | timedelta
                                     ) -> OrchestrationStatus:
        """The status once the instance is COMPLETED, FAILED or CANCELLED. Raises
        ``TimeoutError`` when ``timeout`` passes first, ``InstanceNotFound`` for an
        unknown id."""
        check_id(instance_id, "instance id")
        deadline = time.monotonic() + to_seconds(timeout, "timeout")
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def on_terminal(iid: str | None) -> None:
            if iid is None or iid == instance_id:
                try:
                    loop.call_soon_threadsafe(wake.set)
                except RuntimeError:
                    pass  # the waiting loop is gone

        unlisten = self.provider.listen("terminal", on_terminal)
        try:
            while True:
                wake.clear()
                status = await self.get_orchestration_status(instance_id)
                if status.state is OrchestrationState.NOT_FOUND:
                    raise InstanceNotFound(instance_id)
                if status.is_terminal:
                    return status
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"instance {instance_id!r} is still {status.state.value} after "
                        f"{to_seconds(timeout):g} s")
                # Awaited in this task (wait_for would run it in a task of its own): the
                # end's news resumes the caller in one turn of the loop, not three.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, _WAIT_POLL_S)):
                        await wake.wait()
        finally:
            unlisten()

    async def get_instance_info(self, instance_id: str) -> InstanceInfo:
        check_id(instance_id, "instance id")
        rec = await self.provider.get_instance(instance_id)
        if rec is None:
            raise InstanceNotFound(instance_id)
        return _info(rec)

    async def list_instances(self, *, state: str | Sequence[str] | None = None,
                             name: str | None = None, parent_instance_id: str | None = None,
                             limit: int = 100, offset: int = 0) -> list[InstanceInfo]:
        """Instances matching every filter, oldest first; page with ``limit``/``offset``."""
        if isinstance(state, str):
            state = OrchestrationState(state.upper()).value
        elif state is not None:
            state = [OrchestrationState(str(s).upper()).value for s in state]
        check_count(limit, "limit", 0)
        check_count(offset, "offset", 0)
        records = await self.provider.list_instances(
            state=state, name=name, parent_instance_id=parent_instance_id, limit=limit,
            offset=offset)
        return [_info(r) for r in records]

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
        now = time.time()
        return [_worker_info(r, now) for r in records]

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
        before = None if older_than is None else time.time() - to_seconds(older_than)
        return await self.provider.purge_instances(states=states, updated_before=before,
                                                   name=name, limit=limit)

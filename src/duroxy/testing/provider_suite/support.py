"""Building blocks of the provider conformance suite: message, commit and work builders,
a listener recorder, and the base class carrying the hooks a provider's test class may
override.

Everything here uses the provider contract only (:mod:`duroxy.providers.base`), so the
suite runs unchanged against every store.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from ...errors import ErrorDetails
from ...history import (
    ActivityCompleted,
    ActivityScheduled,
    ActivityWork,
    EventRaised,
    HistoryEvent,
    OrchestrationStarted,
    OrchestratorMessage,
)
from ...providers.base import Channel, OrchestrationCommit, OrchestrationItem, Provider

__all__ = [
    "HOLD",
    "LOCK",
    "NAME",
    "TS",
    "VERSION",
    "ConformanceBase",
    "Recorder",
    "activity_completion",
    "commit",
    "create",
    "events_of",
    "fetch_first",
    "fetch_one",
    "first_turn",
    "raised",
    "scheduled",
    "start_message",
    "started",
    "uid",
    "work",
]

#: Short lock timeout for the tests that wait for a lock to expire (seconds).
LOCK = 0.2
#: A lock timeout no test outlives.
HOLD = 60.0
NAME = "conformance::orchestration::subject"
VERSION = "1.0.0"
#: A fixed event timestamp (epoch milliseconds); payload times come from the runtime.
TS = 1_700_000_000_000


def uid(tag: str = "inst") -> str:
    """A fresh instance id: every test builds its own, so tests never share state."""
    return f"{tag}-{uuid.uuid4().hex}"


# ------------------------------------------------------------------ builders
def started(
    name: str = NAME,
    *,
    version: str | None = VERSION,
    input: str | None = '{"n":1}',
    execution_id: int = 1,
    parent_instance_id: str | None = None,
    event_id: int = 1,
    custom_status: str | None = None,
) -> OrchestrationStarted:
    return OrchestrationStarted(
        event_id=event_id, ts=TS, name=name, version=version, input=input,
        execution_id=execution_id, parent_instance_id=parent_instance_id,
        parent_execution_id=1 if parent_instance_id is not None else None,
        parent_event_id=3 if parent_instance_id is not None else None,
        custom_status=custom_status)


def start_message(instance_id: str, name: str = NAME, **kw: Any) -> OrchestratorMessage:
    """The start message of a new instance (what ``Client.start_orchestration`` sends)."""
    ev = started(name, **kw)
    return OrchestratorMessage(instance_id, ev, ev.execution_id)


def raised(
    instance_id: str,
    event_name: str = "go",
    data: str | None = "1",
    *,
    visible_at: float | None = None,
    execution_id: int | None = None,
) -> OrchestratorMessage:
    """An external event for ``instance_id``."""
    return OrchestratorMessage(
        instance_id, EventRaised(ts=TS, name=event_name, data=data), execution_id, visible_at)


def scheduled(event_id: int, name: str = "act", input: str | None = '"in"') -> ActivityScheduled:
    return ActivityScheduled(event_id=event_id, ts=TS, name=name, input=input)


def work(
    instance_id: str,
    event_id: int = 2,
    *,
    name: str = "act",
    input: str | None = '"in"',
    execution_id: int = 1,
    attempt: int = 1,
    tag: str | None = None,
    session_id: str | None = None,
) -> ActivityWork:
    return ActivityWork(instance_id=instance_id, execution_id=execution_id, event_id=event_id,
                        name=name, input=input, orchestration_name=NAME,
                        orchestration_version=VERSION, attempt=attempt, tag=tag,
                        session_id=session_id)


def activity_completion(w: ActivityWork, result: str | None = '"done"') -> OrchestratorMessage:
    """The completion message an activity worker acks with."""
    return OrchestratorMessage(
        w.instance_id, ActivityCompleted(ts=TS, source_event_id=w.event_id, result=result),
        w.execution_id)


def commit(
    *history: HistoryEvent,
    state: str = "RUNNING",
    execution_id: int = 1,
    name: str = NAME,
    version: str | None = VERSION,
    output: str | None = None,
    error: ErrorDetails | None = None,
    custom_status: str | None = None,
    activities: list[ActivityWork] | None = None,
    messages: list[OrchestratorMessage] | None = None,
    cancel_activities: list[tuple[str, int, int]] | None = None,
) -> OrchestrationCommit:
    return OrchestrationCommit(
        execution_id=execution_id, state=state, name=name, version=version,
        history=list(history), output=output, error=error, custom_status=custom_status,
        activities=list(activities or []), messages=list(messages or []),
        cancel_activities=list(cancel_activities or []))


# ------------------------------------------------------------------ short-hands
async def create(provider: Provider, instance_id: str, name: str = NAME,
                 **kw: Any) -> OrchestratorMessage:
    msg = start_message(instance_id, name, **kw)
    await provider.create_instance(msg)
    return msg


async def fetch_one(provider: Provider, lock_timeout: float = HOLD) -> OrchestrationItem:
    """Fetch and require exactly one orchestration item."""
    items = await provider.fetch_orchestration_items(lock_timeout, limit=10)
    assert len(items) == 1, f"expected one item, got {[i.instance_id for i in items]}"
    return items[0]


async def fetch_first(provider: Provider) -> OrchestrationItem:
    """Fetch with ``limit=1`` and require an item (for tests about fetch order)."""
    items = await provider.fetch_orchestration_items(HOLD, limit=1)
    assert len(items) == 1, f"expected one item, got {len(items)}"
    return items[0]


def events_of(item: OrchestrationItem) -> list[HistoryEvent]:
    """The events of an item's messages, which must all have decoded."""
    out: list[HistoryEvent] = []
    for qm in item.messages:
        assert qm.message is not None, f"message {qm.id} did not decode: {qm.decode_error}"
        assert qm.message.instance_id == item.instance_id
        out.append(qm.message.event)
    return out


async def first_turn(
    provider: Provider,
    instance_id: str,
    *more: HistoryEvent,
    state: str = "RUNNING",
    **kw: Any,
) -> OrchestrationItem:
    """Create the instance, fetch its start message and ack a turn recording the start
    (event 1) and ``more``. Returns the acknowledged item."""
    await create(provider, instance_id)
    item = await fetch_one(provider)
    assert item.instance_id == instance_id
    await provider.ack_orchestration_item(
        item.lock_token, commit(started(), *more, state=state, **kw))
    return item


class Recorder:
    """Records listener calls (from any thread) and lets a test wait for one."""

    def __init__(self) -> None:
        self.calls: list[str | None] = []
        self._mutex = threading.Lock()
        self._unsubscribe: Callable[[], None] | None = None

    def bind(self, unsubscribe: Callable[[], None]) -> None:
        """Remember the function ``Provider.listen`` returned for this recorder."""
        self._unsubscribe = unsubscribe

    def unsubscribe(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    def __call__(self, instance_id: str | None) -> None:
        with self._mutex:
            self.calls.append(instance_id)

    def seen(self) -> list[str | None]:
        with self._mutex:
            return list(self.calls)

    async def wait_for(self, instance_id: str, timeout: float = 5.0) -> None:
        """Wait until a call concerned ``instance_id`` (or was a general ``None`` wake-up).
        Providers may deliver notifications asynchronously, hence the polling."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.seen()
            if instance_id in seen or None in seen:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"listener not called for {instance_id!r}; calls: {seen}")
            await asyncio.sleep(0.005)

    async def wait_exact(self, instance_id: str, timeout: float = 5.0) -> None:
        """Wait until a call named ``instance_id`` itself."""
        deadline = time.monotonic() + timeout
        while instance_id not in self.seen():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"listener not called with {instance_id!r}; calls: {self.seen()}")
            await asyncio.sleep(0.005)


class ConformanceBase:
    """Hooks shared by every part of the suite. A provider's test class supplies an async
    pytest fixture named ``provider`` yielding a fresh, empty provider, and overrides the
    corruption hooks when its store can be made to hold undecodable data."""

    #: Extra seconds to wait past a lock expiry or visibility time (a database clock may
    #: differ slightly from this process's clock).
    lock_slack: float = 0.05

    async def corrupt_history(self, provider: Provider, instance_id: str) -> None:
        """Make the stored history of ``instance_id`` undecodable."""
        pytest.skip("this provider offers no way to corrupt stored history")

    async def corrupt_messages(self, provider: Provider, instance_id: str) -> None:
        """Make the queued messages of ``instance_id`` undecodable."""
        pytest.skip("this provider offers no way to corrupt queued messages")

    async def expire(self, lock_timeout: float = LOCK) -> None:
        """Sleep until a lock taken (or a visibility time set) just before the call,
        ``lock_timeout`` seconds ahead, has certainly passed on the provider's clock."""
        await asyncio.sleep(lock_timeout + self.lock_slack)

    def subscribe(self, provider: Provider, channel: Channel) -> Recorder:
        rec = Recorder()
        rec.bind(provider.listen(channel, rec))
        return rec

"""The rows of the in-memory reference provider, and what its parts share
(:class:`Host`: the tables and helpers of :class:`~.provider.InMemoryProvider` that
the mixins beside it use, always under its one lock)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from ...errors import ErrorDetails
from ...history import OrchestratorMessage
from ..base import Channel, DeleteCounts, InstanceRecord, KvEntry, WorkerRecord

__all__ = ["Host", "Message", "OrchLock", "Record", "SessionLease", "Work", "visible"]


@dataclass(slots=True)
class Record:
    instance_id: str
    name: str
    version: str | None
    state: str
    execution_id: int
    output: str | None
    error: ErrorDetails | None
    custom_status: str | None
    created_at: float
    updated_at: float
    parent_instance_id: str | None
    custom_status_version: int = 0
    unread: int = 0
    #: the KV the current execution started with (None: none)
    kv_base: dict[str, KvEntry] | None = None


@dataclass(slots=True)
class Message:
    id: int
    instance_id: str
    text: str  # encode_message form
    visible_at: float | None
    #: how often this message was delivered without being consumed
    fetch_count: int = 0


@dataclass(slots=True)
class OrchLock:
    #: ``None`` while the instance cools down after an abandon with delay: nobody holds
    #: it, but it is not fetchable before ``expires_at``.
    token: str | None
    expires_at: float
    #: the messages this lock delivered; only these are consumed by its ack
    message_ids: tuple[int, ...]
    #: whether the instance had a record at fetch time; an ack only updates records
    #: and history for items that did
    had_record: bool


@dataclass(slots=True)
class Work:
    id: int
    key: tuple[str, int, int]  # (instance_id, execution_id, event_id)
    name: str  # the activity's name, for fetches that exclude some
    text: str  # ActivityWork.to_json form
    visible_at: float | None
    fetch_count: int = 0
    token: str | None = None
    expires_at: float = 0.0
    #: what routes the row (``ActivityWork.tag`` and ``session_id``)
    tag: str | None = None
    session_id: str | None = None


@dataclass(slots=True)
class SessionLease:
    """Who holds an activity session, until when (provider clock)."""

    owner: str
    locked_until: float


def visible(visible_at: float | None, now: float) -> bool:
    return visible_at is None or visible_at <= now




class Host(Protocol):
    """What the mixins use of the provider (see ``InMemoryProvider``)."""

    _lock: threading.Lock
    _clock: Callable[[], float]
    _records: dict[str, Record]
    _history: dict[str, dict[int, list[tuple[int, str]]]]
    _messages: dict[int, Message]
    _orch_locks: dict[str, OrchLock]
    _work: dict[int, Work]
    _work_tokens: dict[str, int]
    _workers: dict[str, WorkerRecord]
    _kv: dict[str, dict[str, KvEntry]]
    _sessions: dict[str, SessionLease]

    def _check_open(self) -> None: ...

    def _writable(self, operation: str) -> None: ...

    def _notify(self, calls: Iterable[tuple[Channel, str | None]]) -> None: ...

    def _snapshot(self, rec: Record) -> InstanceRecord: ...

    def _enqueue(self, message: OrchestratorMessage, text: str) -> None: ...

    def _held_work(self, token: str, now: float) -> Work: ...

    def _drop_work(self, wid: int) -> None: ...

    def _drop_instance_data(self, instance_id: str) -> None: ...

    def _drop_instance_counted(self, instance_id: str) -> DeleteCounts: ...

    def _tree(self, instance_id: str) -> list[str]: ...

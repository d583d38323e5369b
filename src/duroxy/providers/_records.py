"""The values the provider contract passes: instance and worker records, a turn's
commit, fetched items, activity routes. Their meaning is the contract's, drawn in
:mod:`.base`; here they are plain frozen (or, for a commit, built-up) dataclasses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from ..errors import ErrorDetails, StoreReadOnly
from ..history import ActivityWork, HistoryEvent, OrchestratorMessage
from ..options import TagFilter

__all__ = ["PLAIN_ROUTE", "TERMINAL_STATES", "ActivityItem", "ActivityRoute", "Channel",
           "DeleteCounts", "ExcludedWork", "ExecutionRecord", "InstanceRecord",
           "InstanceStats", "KvEntry", "Listener", "OrchestrationCommit", "OrchestrationItem",
           "QueuedMessage", "WorkerRecord", "read_only_refusal"]


#: States stored in instance records (the values of ``OrchestrationState``).
TERMINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED"})

#: ``updated``: an instance's custom status or KV changed (see the module docstring).
Channel = Literal["orchestrator", "activity", "terminal", "updated"]
#: Called with the instance id concerned (``None`` when not about one instance).
Listener = Callable[[str | None], None]


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """What a store knows of an instance. Times are epoch seconds (provider clock)."""

    instance_id: str
    name: str
    version: str | None
    state: str  # PENDING | RUNNING | COMPLETED | FAILED | CANCELLED
    execution_id: int
    output: str | None = None  # JSON text
    error: ErrorDetails | None = None
    custom_status: str | None = None  # JSON text
    created_at: float = 0.0
    updated_at: float = 0.0
    parent_instance_id: str | None = None
    #: number of history events stored for ``execution_id``
    history_len: int = 0
    #: committed turns that set the custom status (0: never set)
    custom_status_version: int = 0
    #: whether the current execution started with key-value state (``read_kv_base``)
    kv_base: bool = False


class KvEntry(NamedTuple):
    """One key's value: its JSON text and the orchestration time of its last set (epoch
    milliseconds, from the ``KeyValueSet`` event)."""

    value: str
    updated_at: int


@dataclass(frozen=True, slots=True)
class ExecutionRecord:
    """What a store knows of one stored execution: how many events it holds, and its
    first and last events (``None`` when it holds none)."""

    execution_id: int
    event_count: int
    first: HistoryEvent | None
    last: HistoryEvent | None


@dataclass(frozen=True, slots=True)
class InstanceStats:
    """Sizes of one instance. ``history_*`` cover its current execution, sizes in UTF-8
    bytes of the stored events; ``queued_mail``: events and queue messages queued for its
    next turn; ``unread``: those its last turn received and its code has not taken yet;
    ``kv_*``: its key-value state (values as encoded JSON); ``execution_count``: the
    executions still stored."""

    history_event_count: int
    history_size_bytes: int
    queued_mail: int
    unread: int
    kv_key_count: int
    kv_value_bytes: int
    execution_count: int


@dataclass(frozen=True, slots=True)
class DeleteCounts:
    """What a delete removed: instance records, executions (with history), history
    events, and queued work (orchestration messages and activity rows)."""

    instances: int = 0
    executions: int = 0
    events: int = 0
    queue_messages: int = 0


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """A delivered message. ``message`` is ``None`` when its stored form did not decode;
    ``decode_error`` then says why (the runtime fails that instance only)."""

    id: int
    message: OrchestratorMessage | None
    decode_error: str | None = None


@dataclass(frozen=True, slots=True)
class OrchestrationItem:
    instance_id: str
    lock_token: str
    messages: list[QueuedMessage]
    instance: InstanceRecord | None
    #: highest fetch count among the delivered messages (poison detection)
    attempt: int


@dataclass(slots=True)
class OrchestrationCommit:
    """Everything one turn changes, committed atomically by ``ack_orchestration_item``.

    ``history`` is appended to execution ``execution_id`` (a new execution starts when
    its first events are appended). The instance record takes ``state``, ``name``,
    ``version``, ``execution_id``, ``output``, ``error`` and ``custom_status`` as given.
    ``messages`` for an id with no record and holding an ``OrchestrationStarted`` event
    create that record (state PENDING, ``parent_instance_id`` from the event).
    ``cancel_activities`` are ``(instance_id, execution_id, event_id)`` of work rows to
    delete. ``acked_activities`` (a :class:`FastPath` store's) are lock tokens of
    activity work rows whose completions
    this turn consumed directly (its ``history`` records them): their rows are deleted
    in the same transaction, no completion message is enqueued, and if any of those
    locks is no longer held the whole ack raises ``LockLost`` and changes nothing.
    ``claim_activities`` (honoured by a :class:`FastPath` store) lets the worker that
    scheduled activities run them without a fetch: the ack enqueues that many of them
    locked (as a fetch would, attempt 1) and returns them as :class:`ActivityItem` s. A
    provider may claim fewer, or none.
    """

    execution_id: int
    state: str
    name: str
    version: str | None
    history: list[HistoryEvent] = field(default_factory=list)
    output: str | None = None
    error: ErrorDetails | None = None
    custom_status: str | None = None
    activities: list[ActivityWork] = field(default_factory=list)
    messages: list[OrchestratorMessage] = field(default_factory=list)
    cancel_activities: list[tuple[str, int, int]] = field(default_factory=list)
    acked_activities: list[str] = field(default_factory=list)
    #: how many of ``activities`` (the first ones) to enqueue already locked for the
    #: committing worker, for ``claim_lock_timeout`` seconds; the ack returns them
    claim_activities: int = 0
    claim_lock_timeout: float = 0.0
    #: the turn set the custom status: ``custom_status_version`` grows by one
    custom_status_changed: bool = False
    #: key-value changes, applied in this order: every key removed (``kv_clear``), the
    #: keys of ``kv_delete`` removed, then ``kv_set`` written as ``(key, value JSON text,
    #: updated_at epoch ms)``. No key is in both lists.
    kv_clear: bool = False
    kv_delete: list[str] = field(default_factory=list)
    kv_set: list[tuple[str, str, int]] = field(default_factory=list)
    #: with ``replace_kv_base`` (a turn that continues as new), the state the next
    #: execution starts with becomes the record's ``kv_base`` (``None`` or empty: none)
    replace_kv_base: bool = False
    kv_base: dict[str, KvEntry] | None = None
    #: events and queue messages received and not yet taken (``None``: unchanged)
    unread: int | None = None
    #: the committing worker fires this turn's timers for its own instance itself, at
    #: their due time (see ``FastPath.worker_fires_timers``); a store may skip waking its
    #: own fetches for them
    worker_fires_timers: bool = False

    @property
    def kv_changed(self) -> bool:
        return self.kv_clear or bool(self.kv_delete) or bool(self.kv_set)


@dataclass(frozen=True, slots=True)
class ActivityItem:
    id: int
    lock_token: str
    work: ActivityWork
    attempt: int


def read_only_refusal(store: str, operation: str) -> StoreReadOnly:
    """The error a read-only provider raises for the write ``operation``."""
    return StoreReadOnly(f"{operation} refused: {store} was opened read-only (open it "
                         "without read_only to write)")
@dataclass(frozen=True, slots=True)
class ExcludedWork:
    """Work a fetch leaves alone because another live worker runs it and the fetching
    one cannot (a rolling deploy): instances whose record names an orchestration in
    ``orchestrations`` (any version) or a ``(name, version)`` in
    ``orchestration_versions``, and activity rows named in ``activities``. An instance
    without a record is never excluded: its messages only need to be consumed."""

    orchestrations: frozenset[str] = frozenset()
    orchestration_versions: frozenset[tuple[str, str]] = frozenset()
    activities: frozenset[str] = frozenset()

    def excludes_instance(self, name: str, version: str | None) -> bool:
        """Whether an instance whose record says ``name`` and ``version`` is left alone."""
        return name in self.orchestrations or (
            version is not None and (name, version) in self.orchestration_versions)

    @property
    def any_orchestration(self) -> bool:
        return bool(self.orchestrations or self.orchestration_versions)


@dataclass(frozen=True, slots=True)
class ActivityRoute:
    """Which activity rows a fetch may take (see the module docstring): those whose tag
    ``filter`` accepts, and rows with a session only for ``session_owner``: rows of the
    sessions it holds, and of at most ``new_sessions`` free sessions, which the fetch
    claims for it, leased for ``session_lock_timeout`` seconds. Without an owner, rows
    with a session are left alone."""

    filter: TagFilter = TagFilter.DEFAULT_ONLY
    session_owner: str | None = None
    new_sessions: int = 0
    session_lock_timeout: float = 30.0

    @property
    def sessions(self) -> bool:
        """Whether the fetch may take rows with a session."""
        return self.session_owner is not None


#: A fetch without a route: untagged work without a session.
PLAIN_ROUTE = ActivityRoute()


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """One runtime's heartbeat row. Times are epoch seconds on the runtime's clock.
    ``orchestrations`` holds ``"name@version"`` for every registered version,
    ``activities`` the registered activity names. A runtime that stopped has
    ``stopped_at``; one that died just stops being seen."""

    worker_id: str
    host: str
    pid: int
    duroxy_version: str
    started_at: float
    last_seen_at: float
    heartbeat_interval: float
    orchestration_concurrency: int
    activity_concurrency: int
    tag_filter: str
    orchestrations: tuple[str, ...] = ()
    activities: tuple[str, ...] = ()
    active_activities: int = 0
    sessions_owned: int = 0
    worker_node_id: str | None = None
    stopped_at: float | None = None

    def alive_at(self, now: float) -> bool:
        """Not stopped, and seen within three of its own heartbeat intervals."""
        return self.stopped_at is None and now - self.last_seen_at <= 3 * self.heartbeat_interval

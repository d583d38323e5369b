"""The provider contract: durable semantics every store implements.

A provider is two peek-lock queues and the instance records around them:

* The **orchestration queue** holds :class:`~duroxy.history.OrchestratorMessage` s,
  locked *per instance*: :meth:`Provider.fetch_orchestration_items` takes every
  visible message of an unlocked instance under one lock token. Messages that
  arrive while the lock is held stay for the next fetch. :meth:`Provider.ack_orchestration_item`
  commits a whole turn in **one transaction**: append history, enqueue activity work
  and orchestration messages (timers with delayed visibility, child starts, replies
  to the parent), delete the activity rows the turn cancelled, delete exactly the
  messages this lock delivered, update the instance record, release the lock.
  An ack whose lock expired or was taken over raises :class:`~duroxy.errors.LockLost`
  and changes nothing.
* The **activity queue** holds :class:`~duroxy.history.ActivityWork`.
  :meth:`Provider.ack_activity` deletes the work row and enqueues the completion for
  the instance atomically. A cancelled activity's row is deleted by the instance's
  ack, so the running worker's renew or ack raises ``LockLost``: that is how it
  learns its result is no longer wanted.

Invariants every provider keeps (the conformance suite in
:mod:`duroxy.testing.provider_suite` checks them):

* ``attempt`` of a fetched item counts how often it has been fetched without being
  acknowledged (1 on the first fetch); abandon keeps the count.
* An instance record exists from the moment its start message is enqueued
  (:meth:`Provider.create_instance`, or an ``OrchestrationStarted`` message enqueued by
  an ack for an id not yet known: a child or detached start).
* An expired lock is lost even if nobody took the work over; ``abandon_*``, ``renew_*``
  and acks then raise ``LockLost``. An abandon with a delay keeps the whole instance
  out of fetches until the delay ends, messages arriving meanwhile included.
* An ack that repeats an event id of its execution raises ``ProviderError`` and changes
  nothing (the lock stays held). ``delete_instance`` releases the instance's lock, so a
  turn in progress fails its ack with ``LockLost``. An ack for an item fetched without
  a record consumes its messages and sends what the commit sends, creating no record.
* Listeners receive the instance id concerned (``None`` is allowed on the orchestrator
  and activity channels); the terminal channel always names the instance.
* Messages for an instance without a record are delivered with ``instance=None`` so
  the runtime can discard them; they never block other instances.
* Ids, event ids and payload times come from the runtime; lock expiry and queue
  visibility use the provider's own clock (:attr:`Provider.clock`, the real time by
  default, or the database's).
* After a commit that enqueues work, the provider calls the listeners registered
  with :meth:`Provider.listen` for that channel, from whatever thread committed;
  listeners must be thread-safe and quick.
* A provider opened read-only (:attr:`Provider.read_only`) never creates, migrates or
  changes its store. Its reads see what writers commit; every write operation raises
  :class:`~duroxy.errors.StoreReadOnly` and changes nothing. Its first use raises
  :class:`~duroxy.errors.StoreNotFound` when there is no duroxy store to read, and
  :class:`~duroxy.errors.SchemaVersionError` when the store's schema is of another
  version (a provider opened for writing raises the latter for a newer schema only).
* A fetch given an :class:`ExcludedWork` locks nothing it names: no instance whose
  record names an excluded orchestration (or version), no activity row of an excluded
  name. Messages for an instance without a record are never excluded. An abandon with
  ``ignore_attempt`` gives the work back as if that fetch had not happened: its attempt
  count is what it was before.
* Worker heartbeats (:class:`WorkerRecord`) are rows keyed by ``worker_id``, written and
  read as given (their times come from the runtime's clock). They are background
  writes: a store may commit them without forcing them to disk.
* Key-value state is a per-instance table written by the turn's own commit
  (``OrchestrationCommit.kv_*``): readers see the state as of the last committed turn,
  never a part of one. It goes with the instance (delete, purge). An instance record
  also keeps ``kv_base``, the state its current execution started with (written by the
  commit that continues as new), which a replay of that execution starts from.
* Activity routing: a work row carries the tag and the session of its
  :class:`~duroxy.history.ActivityWork`. A fetch takes only the rows its
  :class:`ActivityRoute` accepts: by tag (``route.filter``; an untagged row only with
  ``include_default``), and a row with a session only when the route names a
  ``session_owner`` and that owner holds the session, or the session is free (nobody
  holds it, or its holder's lease ended) and the fetch may still claim one (at most
  ``route.new_sessions`` sessions, the first in fetch order). Taking a row of a free
  session claims it for the owner, leased for ``route.session_lock_timeout``; a fetch
  without a route takes untagged rows without a session only. A session's lease is not
  an activity's lock: an activity whose session moves keeps its lock, and its ack is
  accepted. ``renew_sessions`` extends the leases its owner still holds and
  ``release_sessions`` frees them; a session is no instance's, and no delete touches it.
  Claims (``OrchestrationCommit.claim_activities``) cover only work the committing
  worker may run: never work with a session.
* ``custom_status_version`` grows by one with each commit that says
  ``custom_status_changed``; nothing else changes it.
* A commit that changed the custom status or the KV announces the instance on the
  ``updated`` channel (a terminal one on ``terminal`` as ever).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

from .._alarms import DUE_RETRY_PAUSE_S, DUE_RETRY_S, DUE_SLACK_S
from .._clock import SYSTEM_CLOCK, Clock
from ..history import HistoryEvent, OrchestratorMessage
from ._records import (
    PLAIN_ROUTE,
    TERMINAL_STATES,
    ActivityItem,
    ActivityRoute,
    Channel,
    DeleteCounts,
    ExcludedWork,
    ExecutionRecord,
    InstanceRecord,
    InstanceStats,
    KvEntry,
    Listener,
    OrchestrationCommit,
    OrchestrationItem,
    QueuedMessage,
    WorkerRecord,
    read_only_refusal,
)

__all__ = [
    "DUE_RETRY_PAUSE_S",
    "DUE_RETRY_S",
    "DUE_SLACK_S",
    "PLAIN_ROUTE",
    "TERMINAL_STATES",
    "ActivityItem",
    "ActivityRoute",
    "Channel",
    "DeleteCounts",
    "ExcludedWork",
    "ExecutionRecord",
    "FastPath",
    "InstanceRecord",
    "InstanceStats",
    "KvEntry",
    "Listener",
    "OrchestrationCommit",
    "OrchestrationItem",
    "Provider",
    "QueuedMessage",
    "WorkerRecord",
    "read_only_refusal",
]

class Provider(abc.ABC):
    """Base class of every store. All methods are coroutines unless noted; constructors
    are synchronous and open nothing that would keep the process alive.

    ``clock`` is the wall clock the store reads (lock expiry, visibility, record times),
    and runtimes and clients on the store read it too (see :mod:`duroxy._clock`): the
    real time unless the store was given another."""

    clock: Clock = SYSTEM_CLOCK

    @property
    def read_only(self) -> bool:
        """Whether this provider was opened read-only: it then reads, and refuses every
        write with :class:`~duroxy.errors.StoreReadOnly` (see the module docstring)."""
        return False

    # ------------------------------------------------------------ lifecycle
    async def close(self) -> None:  # noqa: B027 - optional override
        """Release connections and threads. Idempotent."""

    async def __aenter__(self) -> Provider:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ wake-ups
    @abc.abstractmethod
    def listen(self, channel: Channel, callback: Listener) -> Callable[[], None]:
        """Register ``callback`` for work on ``channel``; returns a function that
        unregisters it. Synchronous."""

    # ------------------------------------------------------------ instances
    @abc.abstractmethod
    async def create_instance(self, message: OrchestratorMessage) -> None:
        """Create the record of a new instance (PENDING) and enqueue its start message
        (``message.event`` is an ``OrchestrationStarted``), atomically.
        Raises ``InstanceAlreadyExists`` when the id is taken."""

    @abc.abstractmethod
    async def enqueue_orchestrator_message(self, message: OrchestratorMessage) -> None:
        """Enqueue a message (external event, cancellation) for an existing instance.
        Raises ``InstanceNotFound`` when the instance has no record."""

    # ------------------------------------------------------------ orchestration queue
    @abc.abstractmethod
    async def fetch_orchestration_items(
        self, lock_timeout: float, limit: int = 1, exclude: ExcludedWork | None = None
    ) -> list[OrchestrationItem]:
        """Lock up to ``limit`` instances with visible messages, oldest message first;
        each item holds all that instance's visible messages in enqueue order. Instances
        that ``exclude`` names are left alone (see :class:`ExcludedWork`)."""

    #: True when the store wakes the listeners of every process sharing it for work
    #: enqueued by any of them (PostgreSQL's LISTEN/NOTIFY): a worker's poll is then
    #: only a safety net for what no commit announces (expired locks, another
    #: process's timers) and may run less often.
    announces_work: bool = False

    @abc.abstractmethod
    async def ack_orchestration_item(self, lock_token: str, commit: OrchestrationCommit
                                     ) -> list[ActivityItem] | None:
        """Commit a turn atomically and release the lock. Raises ``LockLost`` (and
        changes nothing) when the lock is no longer held. Returns the activity items
        claimed for the caller (``commit.claim_activities``), or ``None``/``[]``."""

    @abc.abstractmethod
    async def abandon_orchestration_item(self, lock_token: str, delay: float = 0.0, *,
                                         ignore_attempt: bool = False) -> None:
        """Release the lock without consuming; messages are visible again after
        ``delay`` seconds. Raises ``LockLost`` if the lock is no longer held. With
        ``ignore_attempt`` the fetch that delivered them does not count as an attempt
        (the worker could not run them, and another can)."""

    @abc.abstractmethod
    async def renew_orchestration_lock(self, lock_token: str, lock_timeout: float) -> None:
        """Extend the lock to ``lock_timeout`` seconds from now; ``LockLost`` if gone."""

    # ------------------------------------------------------------ activity queue
    @abc.abstractmethod
    async def fetch_activity_items(self, lock_timeout: float, limit: int = 1,
                                   exclude: ExcludedWork | None = None,
                                   route: ActivityRoute | None = None) -> list[ActivityItem]:
        """Lock up to ``limit`` visible activity work rows that ``route`` accepts (by
        default: untagged, without a session), oldest first, except rows of the activity
        names ``exclude`` lists; claim the free sessions of the rows taken for the
        route's owner (see :class:`ActivityRoute`). A row whose stored form does not
        decode is logged and set aside, never delivered, so it cannot block the rest of
        the queue."""

    @abc.abstractmethod
    async def ack_activity(self, lock_token: str, completion: OrchestratorMessage) -> None:
        """Delete the work row and enqueue ``completion`` atomically. ``LockLost`` (and
        nothing enqueued) when the lock expired or the row was deleted (cancelled)."""

    @abc.abstractmethod
    async def abandon_activity(self, lock_token: str, delay: float = 0.0, *,
                               ignore_attempt: bool = False) -> None:
        """Unlock the row; it is visible again after ``delay`` seconds. With
        ``ignore_attempt`` the fetch that delivered it does not count as an attempt."""

    @abc.abstractmethod
    async def renew_activity_lock(self, lock_token: str, lock_timeout: float) -> None:
        """Extend the lock; ``LockLost`` when it expired or the row was deleted."""

    # ------------------------------------------------------------ activity sessions
    @abc.abstractmethod
    async def renew_sessions(self, owner: str, session_ids: Sequence[str],
                             lock_timeout: float) -> list[str]:
        """Extend to ``lock_timeout`` seconds from now the lease of each of
        ``session_ids`` that ``owner`` still holds (its lease may have ended, as long as
        nobody claimed the session since), and return those, sorted. Also forgets the
        sessions whose lease ended (of any owner): a forgotten session is free, as one
        whose lease ended is."""

    @abc.abstractmethod
    async def release_sessions(self, owner: str, session_ids: Sequence[str] | None = None
                               ) -> int:
        """Free the sessions of ``session_ids`` (all, when ``None``) that ``owner`` holds,
        so that the next fetch of any worker may claim them; returns how many it freed.
        Activities of those sessions already running keep their locks."""

    # ------------------------------------------------------------ reads and management
    @abc.abstractmethod
    async def get_instance(self, instance_id: str) -> InstanceRecord | None: ...

    @abc.abstractmethod
    async def read_history(
        self, instance_id: str, execution_id: int | None = None
    ) -> list[HistoryEvent]:
        """Events of the given (default: latest) execution in event order; ``[]`` for an
        unknown instance or execution. Raises ``PayloadError`` if a stored event does not
        decode."""

    @abc.abstractmethod
    async def list_executions(self, instance_id: str) -> list[int]:
        """Execution ids that have history, ascending."""

    @abc.abstractmethod
    async def list_instances(
        self,
        *,
        state: str | Sequence[str] | None = None,
        name: str | None = None,
        parent_instance_id: str | None = None,
        limit: int | None = 100,
        offset: int = 0,
        created_after: float | None = None,
        created_before: float | None = None,
        after: tuple[float, str] | None = None,
    ) -> list[InstanceRecord]:
        """Instances matching every given filter, oldest created first (ties by id):
        ``created_after``/``created_before`` (epoch seconds, exclusive) bound
        ``created_at``; ``after`` (a record's ``(created_at, instance_id)``, exactly as
        read) starts the list past that record (keyset paging). ``limit`` ``None``: all."""

    @abc.abstractmethod
    async def get_execution(self, instance_id: str, execution_id: int
                            ) -> ExecutionRecord | None:
        """The stored execution's event count and first and last events; ``None`` when
        the instance has no history for it. ``PayloadError`` if one does not decode."""

    @abc.abstractmethod
    async def prune_executions(self, instance_id: str, keep_last: int,
                               ended_before_ms: int | None = None) -> tuple[int, int] | None:
        """Delete past executions of the instance and their history, atomically:
        every execution before its current one (the record's ``execution_id``, never
        pruned) except the ``keep_last - 1`` newest of them, and with
        ``ended_before_ms`` only those whose last event's ``ts`` is earlier. Returns
        ``(executions deleted, events deleted)``, ``None`` for an unknown instance."""

    @abc.abstractmethod
    async def get_instance_stats(self, instance_id: str) -> InstanceStats | None:
        """The instance's sizes (see :class:`InstanceStats`); ``None`` when unknown."""

    # ------------------------------------------------------------ key-value state
    @abc.abstractmethod
    async def read_kv(self, instance_id: str, key: str | None = None
                      ) -> dict[str, KvEntry] | None:
        """The instance's committed KV (only ``key``, when given: ``{}`` if absent), in
        sorted key order; ``None`` when the instance has no record."""

    @abc.abstractmethod
    async def read_kv_base(self, instance_id: str) -> dict[str, KvEntry]:
        """The KV the instance's current execution started with (``{}``: none)."""

    @abc.abstractmethod
    async def delete_instance_tree(self, instance_id: str) -> DeleteCounts:
        """``delete_instance(instance_id, cascade=True)``, counting what went."""

    @abc.abstractmethod
    async def delete_instance(self, instance_id: str, *, cascade: bool = True) -> int:
        """Delete the instance (its record, history, queued messages and activity work)
        and, with ``cascade``, its descendants. Returns how many instances were deleted
        (0 when unknown). Callers check state first; the provider does not."""

    @abc.abstractmethod
    async def purge_instances(
        self,
        *,
        states: Sequence[str] = tuple(sorted(TERMINAL_STATES)),
        updated_before: float | None = None,
        name: str | None = None,
        limit: int | None = None,
    ) -> int:
        """Delete instances in ``states`` last updated before ``updated_before`` (epoch
        seconds, provider clock); returns how many were deleted."""

    # ------------------------------------------------------------ workers
    @abc.abstractmethod
    async def record_heartbeat(self, worker: WorkerRecord, *,
                               forget_before: float | None = None) -> None:
        """Write ``worker``'s row as given (insert or replace), except that a row marked
        stopped is never revived by a heartbeat of the same runtime (same ``worker_id``
        and ``started_at``). With ``forget_before``, first delete the rows of other
        workers last seen before then (epoch seconds). A background write: it need not
        be forced to disk."""

    @abc.abstractmethod
    async def list_workers(self, *, include_stopped: bool = False) -> list[WorkerRecord]:
        """Heartbeat rows, oldest started first (ties by ``worker_id``); without
        ``include_stopped``, only those not marked stopped."""


class FastPath(abc.ABC):
    """A capability a store may offer beside the :class:`Provider` contract: shortcuts
    a worker takes with work it already holds. The runtime discovers it with
    ``isinstance(store, FastPath)``; a store without it runs everything through the
    peek-lock contract alone, correctly and with more round trips.

    * **Claims.** An ack (or :meth:`commit_turn`) honours
      ``OrchestrationCommit.claim_activities``: it enqueues that many of the turn's
      activities already locked for the committing worker and returns them, so the
      worker runs them without a fetch. (A store without the capability ignores claims.)
    * **Completion fed into the next turn.** :meth:`lock_instance` locks an instance
      without a message, and ``OrchestrationCommit.acked_activities`` deletes the work
      rows whose completions the turn consumed directly: one commit instead of an
      activity ack, a fetch and a turn ack.
    * **Lock-free commit.** :meth:`commit_turn` commits a turn on an instance held live
      in memory when nothing happened to it meanwhile.
    * **Timers fired in place.** A worker holding an instance live may fire that
      instance's own timer at its due time through :meth:`commit_turn` with
      ``consume``: the timer's queued message is deleted by the turn that records it,
      with no fetch before. A store whose fetches wait for due timers themselves
      (``long_poll``) and that sets :attr:`worker_fires_timers` leaves the timers of a
      commit marked ``OrchestrationCommit.worker_fires_timers`` to that worker: it wakes
      no fetch for them, so that the two do not race for the instance.
    * **Long polling.** :meth:`poll_orchestration_items` may wait in the store for work.

    Every shortcut keeps the contract's rule: nothing a commit produced (a claim, a
    lock, a wake-up) reaches the worker before that commit has returned.
    """

    #: True when :meth:`poll_orchestration_items` waits for work itself (work enqueued
    #: through this provider object, timers falling due, and at the latest its ``wait``),
    #: so the worker needs no wake-ups or timer alarms of its own.
    long_poll: bool = False

    #: True when the store honours ``OrchestrationCommit.worker_fires_timers``: it
    #: wakes none of its own fetches when such a commit's timers for its own instance
    #: fall due (a store that does not long-poll wakes none anyway).
    worker_fires_timers: bool = False

    @abc.abstractmethod
    async def poll_orchestration_items(self, lock_timeout: float, limit: int = 1,
                                       wait: float = 0.0, exclude: ExcludedWork | None = None
                                       ) -> list[OrchestrationItem]:
        """A fetch that, finding nothing, may wait up to ``wait`` seconds for work and
        returns as soon as some is there (long polling). Cancelling the call gives back
        whatever it had locked meanwhile. A store that does not wait (``long_poll``
        false) fetches once and returns at once."""

    @abc.abstractmethod
    async def lock_instance(self, instance_id: str, lock_timeout: float
                            ) -> OrchestrationItem | None:
        """Lock one instance for a turn, as a fetch would, even if it has no visible
        message (the item then holds none). ``None`` when the instance has no record or
        is locked (or cooling down after a delayed abandon). Lock-only: a store may skip
        forcing it to disk, since a lost lock only means the work is fetched again."""

    @abc.abstractmethod
    async def commit_turn(self, instance_id: str, expected_history_len: int,
                          commit: OrchestrationCommit,
                          consume: Sequence[OrchestratorMessage] = ()
                          ) -> list[ActivityItem] | None:
        """Commit a turn without having locked the instance, when nothing happened to it
        meanwhile: atomically, if the instance has a record whose execution is
        ``commit.execution_id`` with exactly ``expected_history_len`` events, no live lock
        and no visible message, apply ``commit`` as ``ack_orchestration_item`` would;
        otherwise raise ``LockLost`` and change nothing.

        ``consume``: messages queued for this instance that the turn consumed (its
        history records them; a timer fired in place), each as it was enqueued (matched by
        its encoded form). Each must be queued and delivered to no fetch, whether or not
        the store's clock shows it visible yet (the worker's clock decided it is due);
        they are deleted with the turn, and the instance may have no other visible
        message."""

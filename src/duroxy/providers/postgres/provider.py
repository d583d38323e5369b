"""PostgreSQL store: the provider contract on psycopg 3 (async) and psycopg_pool.

Layout: one schema per tenant (``schema`` parameter) holding the instance records, the
history, the two queues and the per-instance orchestration locks; see
``sql/0001_initial.sql``. Migrations run on first use, on a connection of their own
before the pool opens, serialized across nodes by a transaction-level advisory lock
keyed by the schema name (see ``_migrate.py``). The pool's first connections prepare
the hot statements before they serve (see ``_warm.py``).

Clock: every lease and every visibility decision uses the database server's clock
(``clock_timestamp()`` / ``statement_timestamp()``), never this host's, so clock skew
between worker hosts cannot hand out a live lease or keep an expired one. The only
host-clock values are the ``visible_at`` times the runtime computes for timers, which
are compared with the database clock as given.

Connections, the pool and event loops: see ``_connections.py``.

Every hot call is one statement in its own implicit transaction: one round trip (see
``sql/queue_orchestrations.sql``). Claims use ``FOR UPDATE SKIP LOCKED``; each ack
row-locks its lease and checks the token and expiry in the statement that commits the
whole turn, whose writes all depend on that check, and raises ``LockLost`` when the
statement reports that it changed nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from ...errors import (
    InstanceAlreadyExists,
    InstanceNotFound,
    LockLost,
)
from ...history import (
    OrchestrationStarted,
    OrchestratorMessage,
    encode_message,
)
from .._finals import FinalRecords
from ..base import (
    DUE_RETRY_PAUSE_S,
    TERMINAL_STATES,
    ActivityItem,
    Channel,
    ExcludedWork,
    FastPath,
    InstanceRecord,
    Listener,
    OrchestrationCommit,
    OrchestrationItem,
    Provider,
)
from ..pending import PendingWork
from ._activities import ActivityQueue
from ._connections import Connections, Row
from ._leases import LeaseWork
from ._manage import Management
from ._marshal import (
    consumed,
    due_or_noted,
    orchestration_items,
    turn,
)
from ._marshal import key as _key
from ._notify import note
from ._parking import Parking, in_background
from ._readonly import ReadOnlyGuard
from ._starts import FusedStarts, PendingStart
from ._waking import Waker
from ._workers import Heartbeats

__all__ = ["PostgresProvider"]

_log = logging.getLogger("duroxy.providers.postgres")

_PLAIN: frozenset[str] = frozenset()  # a statement's variant without its optional parts
_SKIP = frozenset({"skip"})

_STATES = frozenset({"PENDING", "RUNNING"}) | TERMINAL_STATES

#: How many instance ids a provider remembers as existing (see create_instance).
_KNOWN_IDS = 4096
#: The longest a poll parks without fetching first (see poll_orchestration_items).
_QUIET_PARK_S = 0.05


def _scan(limit: int) -> int:
    """How many visible messages a fetch of ``limit`` instances looks at. An instance
    appears once per visible message; a few rows per wanted instance keep batches full
    unless one instance has a long backlog."""
    return limit * 4 + 16


class PostgresProvider(Connections, ReadOnlyGuard, ActivityQueue, FusedStarts, LeaseWork,
                       Management, Heartbeats, Provider, FastPath, PendingWork):
    """A provider on PostgreSQL (``postgresql://`` DSN or libpq key/value string).

    ``schema`` (default ``duroxy``) holds every table; several schemas are independent
    stores side by side in one database. ``min_size``/``max_size`` size the connection
    pool of this provider (default 1 and 10); one more connection listens for
    notifications once a listener is registered. The constructor opens nothing: the
    pool opens, and the schema is migrated, on first use.

    ``read_only=True`` never creates the schema nor migrates it: first use checks that
    the schema holds a duroxy store of this version (else
    :class:`~duroxy.errors.StoreNotFound` or :class:`~duroxy.errors.SchemaVersionError`),
    every pooled session is ``default_transaction_read_only``, and every write raises
    :class:`~duroxy.errors.StoreReadOnly`. Reads see what writers on other nodes commit.

    ``warm_connections`` (a latency switch, on by default; its gain is on the performance
    page): the pool's first connections run the hot statements once, with arguments that
    match no row, before they serve, so that the first turns after a start do not pay
    for planning them.

    ``wake_before_due`` (a latency switch, on by default; its gain is on the performance
    page): a few milliseconds before a timer (or any message) committed here falls due,
    a store idle meanwhile runs ``SELECT 1``, so that the host and the server are awake
    when the timer's turn commits.
    """

    announces_work = True
    long_poll = True
    worker_fires_timers = True

    def __init__(
        self,
        dsn: str,
        schema: str = "duroxy",
        *,
        min_size: int = 1,
        max_size: int = 10,
        pool_timeout: float = 30.0,
        read_only: bool = False,
        warm_connections: bool = True,
        wake_before_due: bool = True,
    ) -> None:
        super().__init__(dsn, schema, min_size=min_size, max_size=max_size,
                         pool_timeout=pool_timeout, read_only=read_only,
                         warm_connections=warm_connections)
        self._finals = FinalRecords()
        self._parking = Parking()
        self._parking_unlisten: Callable[[], None] | None = None
        # What was news (notes seen, alarms fired) when the poll that got the last start
        # handed over had parked, or when the last fetch that found less than it could
        # take began: with nothing new since, the next poll parks at once.
        self._quiet: tuple[int, int] | None = None
        # Statements whose leases may still have to be handed over or given back, and
        # the give-backs: close() waits for them.
        self._lease_work: set[asyncio.Future[Any]] = set()
        # Starts handed to a parked fetch and not yet committed, by lease token.
        self._pending_starts: dict[str, PendingStart] = {}
        # The instances fetched or committed here lately, latest last.
        self._known: OrderedDict[str, None] = OrderedDict()
        self._closing: asyncio.Future[None] | None = None
        self._waker = Waker(lambda: self._rows("wake", {}),
                            lambda: self._last_statement) if wake_before_due else None

    @property
    def schema(self) -> str:
        return self._schema

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel of this provider's schema."""
        return self._channel

    def __repr__(self) -> str:
        ro = ", read_only=True" if self._read_only else ""
        return f"PostgresProvider(schema={self._schema!r}{ro})"

    # ------------------------------------------------------------ lifecycle
    async def close(self) -> None:
        if self._closed:
            return
        if self._closing is not None:  # another close() is settling the leases
            await asyncio.shield(self._closing)
            return
        self._closing = asyncio.get_running_loop().create_future()
        try:
            self._settle_starts()
            await self._settle_leases()
        finally:
            try:
                await self._close_now()
            finally:
                self._closing.set_result(None)

    async def _close_now(self) -> None:
        self._closed = True
        self._parking.close()
        if self._waker is not None:
            self._waker.close()
        self._notifier.clear()
        binding, self._binding = self._binding, None
        if binding is None:
            await self._notifier.aclose()
        elif binding.loop is asyncio.get_running_loop():
            await self._release(binding)
        else:
            self._abandon(binding)

    # ------------------------------------------------------------ wake-ups
    def listen(self, channel: Channel, callback: Listener) -> Callable[[], None]:
        unsubscribe = self._notifier.add(channel, callback)
        with contextlib.suppress(RuntimeError):
            # Start listening now when called on the loop in use; otherwise the next
            # call on the provider starts it.
            b = self._binding
            if b is not None and b.loop is asyncio.get_running_loop() and not self._closed:
                self._notifier.ensure_running()
        return unsubscribe

    def _note(self, channel: Channel, instance_id: str) -> str:
        return note(channel, self._node_id, instance_id)

    # ------------------------------------------------------------ instances
    async def create_instance(self, message: OrchestratorMessage) -> None:
        self._writable("create_instance")
        event = message.event
        if not isinstance(event, OrchestrationStarted):
            raise ValueError(
                f"create_instance needs an OrchestrationStarted message, got {event.kind}")
        params = {
            "key": _key(message.instance_id), "instance_id": message.instance_id,
            "name": event.name, "version": event.version,
            "execution_id": event.execution_id, "custom_status": event.custom_status,
            "parent_instance_id": event.parent_instance_id,
            "payload": encode_message(message), "due_at": message.visible_at,
            "channel": self._channel,
            "note": self._note("orchestrator", message.instance_id),
        }
        # Not handed over: a start due later; during close(); a start of an instance
        # known to exist, whose first turn would be run only to be refused.
        parked = (self._parking.take(event.name, event.version)
                  if message.visible_at is None and self._closing is None
                  and message.instance_id not in self._known else None)
        if parked is not None:
            await self._start_fused(message, event, params, parked)
            return
        [(created,)] = await self._rows("create_instance", params)
        self._know(message.instance_id)
        if created != 1:
            raise InstanceAlreadyExists(message.instance_id)
        self._announce_here(message)

    def _know(self, instance_id: str) -> None:
        """``instance_id`` exists (it was fetched, committed or found taken here)."""
        known = self._known
        known[instance_id] = None
        known.move_to_end(instance_id)
        if len(known) > _KNOWN_IDS:
            known.popitem(last=False)

    async def enqueue_orchestrator_message(self, message: OrchestratorMessage) -> None:
        self._writable("enqueue_orchestrator_message")
        [(enqueued,)] = await self._rows("enqueue_existing", {
            "key": _key(message.instance_id), "payload": encode_message(message),
            "due_at": message.visible_at, "channel": self._channel,
            "note": self._note("orchestrator", message.instance_id),
        })
        if enqueued != 1:
            raise InstanceNotFound(message.instance_id)
        self._announce_here(message)

    def _announce_here(self, message: OrchestratorMessage) -> None:
        """News of a message this node committed, for this node (see due_or_noted)."""
        due, noted = due_or_noted([message])
        for visible_at in due:
            self._parking.due_at(visible_at)
            if self._waker is not None:
                self._waker.due(visible_at)
        self._notifier.call([("orchestrator", i) for i in noted])

    # ------------------------------------------------------------ orchestration queue
    async def fetch_orchestration_items(
        self, lock_timeout: float, limit: int = 1, exclude: ExcludedWork | None = None
    ) -> list[OrchestrationItem]:
        self._writable("fetch_orchestration_items")
        if limit <= 0:
            return []
        params: dict[str, Any] = {
            "scan": _scan(limit), "limit": limit, "lock_timeout": float(lock_timeout)}
        if exclude is None or not exclude.any_orchestration:
            statement = self._q.variant("fetch_orchestrations", _PLAIN)
        else:
            statement = self._q.variant("fetch_orchestrations", _SKIP)
            pairs = sorted(exclude.orchestration_versions)
            params.update(skip_names=sorted(exclude.orchestrations) or None,
                          skip_pair_names=[n for n, _ in pairs] or None,
                          skip_pair_versions=[v for _, v in pairs] or None)
        items = orchestration_items(await self._rows(statement, params))
        for item in items:
            self._know(item.instance_id)
        return items

    async def poll_orchestration_items(self, lock_timeout: float, limit: int = 1,
                                       wait: float = 0.0, exclude: ExcludedWork | None = None
                                       ) -> list[OrchestrationItem]:
        """Fetch; finding nothing, park until an orchestrator note, a message committed
        here falls due, a start is handed over (see _parking.py) or ``wait`` is up.
        Right after a hand-off, or a fetch that found less than there was room for, with
        nothing new since, it parks at once, for ``_QUIET_PARK_S`` at most before it
        fetches: work that no news announces (rows another node's fetch skipped past,
        leases that lapsed) is then found about as soon as a fetch at once would have."""
        self._writable("poll_orchestration_items")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        quiet, self._quiet = self._quiet, None
        fetch = not (wait > 0 and quiet is not None and quiet == self._news())
        quiet_until = None if fetch else loop.time() + _QUIET_PARK_S
        while True:
            if fetch:
                news = self._news()
                due = self._parking.retrying()
                items = await self._fetch_or_give_back(lock_timeout, limit, exclude)
                if items:
                    self._parking.found()
                    if (not due and len(items) < limit
                            and sum(len(i.messages) for i in items) < _scan(limit)):
                        # Fewer than asked, and not for want of scanning: nothing else
                        # was visible. The next poll parks at once unless news came.
                        # Not while something just fell due: the store's clock may lag
                        # and show the rest a moment later.
                        self._quiet = news
                if items or wait <= 0 or self._closed or loop.time() >= deadline:
                    return items
                if self._news() != news:
                    continue  # news during the fetch, which may not have seen it
            fetch = True
            if self._parking.retrying():
                await asyncio.sleep(DUE_RETRY_PAUSE_S)
                continue
            if self._parking_unlisten is None:
                self._parking_unlisten = self.listen("orchestrator", self._parking.wake)
            news = self._news()
            until = deadline if quiet_until is None else min(deadline, quiet_until)
            quiet_until = None  # however this park ends, the next one waits for news
            got = await self._parking.wait(lock_timeout, until - loop.time(), self._give_back,
                                           exclude)
            if got == [] and until < deadline and not self._closed:
                continue  # the quiet moment is over: fetch, then park for the rest
            if got:
                self._quiet = news
            if got is not None or self._closed:
                # handed over, or the time is up: the caller's next poll fetches first
                return got or []

    def _news(self) -> tuple[int, int]:
        return self._notifier.mark(), self._parking.fired

    async def lock_instance(self, instance_id: str, lock_timeout: float
                            ) -> OrchestrationItem | None:
        self._writable("lock_instance")
        rows = await self._rows("lock_instance", {
            "key": _key(instance_id), "lock_timeout": float(lock_timeout)})
        items = orchestration_items(rows)
        if not items:
            return None
        self._know(items[0].instance_id)
        return items[0]

    async def ack_orchestration_item(self, lock_token: str, commit: OrchestrationCommit
                                     ) -> list[ActivityItem]:
        self._writable("ack_orchestration_item")
        if self._pending_starts:
            claimed = await self._ack_fused(lock_token, commit)
            if claimed is not None:
                return claimed
        return await self._commit_turn("ack_turn", commit, {"token": lock_token})

    async def commit_turn(self, instance_id: str, expected_history_len: int,
                          commit: OrchestrationCommit,
                          consume: Sequence[OrchestratorMessage] = ()) -> list[ActivityItem]:
        self._writable("commit_turn")
        return await self._commit_turn("commit_turn", commit, {
            "token": None, "key": _key(instance_id),
            "expected_len": int(expected_history_len), **consumed(consume)})

    async def _commit_turn(self, statement: str, commit: OrchestrationCommit,
                           params: dict[str, Any],
                           first: tuple[dict[str, Any], Callable[[list[Row]], Any]]
                           | None = None) -> list[ActivityItem]:
        """Run ack_turn or commit_turn (see turn_writes in queue_orchestrations.sql);
        with ``first``, after ``create_instance_leased`` with its parameters in the same
        transaction, whose rows go to its callback before anything else (see
        _starts.py).

        The instance is announced again when messages wait that the turn did not consume
        (``pending``: visible to its statement, but delivered to nobody while the lease
        was held), or when a note named the instance after the statement was sent: that
        note's message may have committed too late for the statement to see it, and
        fetches woken by it skipped the instance. A note seen before the statement was
        sent is of a commit the statement sees, so ``pending`` covers it."""
        if commit.state not in _STATES:
            raise ValueError(f"unknown instance state {commit.state!r}")
        t = turn(commit, self._node_id)  # encodes everything first: may raise, sends nothing
        t.params.update(params, channel=self._channel)
        mark = self._notifier.mark()
        stmt = self._q.variant(statement, t.parts)
        if first is None:
            rows = await self._rows(stmt, t.params)
        else:
            created, rows = await self._rows_in_one(
                self._q["create_instance_leased"], first[0], stmt, t.params)
            if not first[1](created) and not rows:
                raise LockLost("the instance exists already (or another worker holds it): "
                               "this start was not taken, and its first turn is void")
        if not rows:
            raise LockLost("orchestration lock is not held (released, taken over or deleted)"
                           if statement == "ack_turn" else "the instance has no record")
        instance_id, has_record, alive, acked_held, acked_alive, pending = rows[0][:6]
        self._know(instance_id)
        if not alive:
            raise LockLost("orchestration lock expired" if statement == "ack_turn" else
                           "the instance moved on, is locked or has messages waiting")
        wanted = t.params["acked_count"]
        if acked_held != wanted:
            raise LockLost("an acknowledged activity's lock is not held (released, taken "
                           "over or cancelled)")
        if acked_alive != wanted:
            raise LockLost("an acknowledged activity's lock expired")
        notes = t.notes
        if pending:  # the statement announced it to every node
            notes.append(("orchestrator", instance_id))
        elif self._notifier.noted_since(instance_id, mark):
            notes.append(("orchestrator", instance_id))
            # best effort, like the note itself: the turn has committed
            in_background(self._rows("announce", {
                "channel": self._channel, "note": self._note("orchestrator", instance_id)}))
        if has_record and (commit.custom_status_changed or commit.kv_changed):
            notes.append(("updated", instance_id))
        if has_record and commit.state in TERMINAL_STATES:
            notes.append(("terminal", instance_id))
            created_at, updated_at, parent, history_len = rows[0][9:13]
            status_version, kv_base = rows[0][14:16]
            if self._notifier.listening("terminal") and history_len is not None:
                # The waiter this end wakes gets the final record without a read.
                self._finals.keep(InstanceRecord(
                    instance_id=instance_id, name=commit.name, version=commit.version,
                    state=commit.state, execution_id=commit.execution_id,
                    output=commit.output, error=commit.error,
                    custom_status=commit.custom_status, created_at=created_at,
                    updated_at=updated_at, parent_instance_id=parent,
                    history_len=int(history_len),
                    custom_status_version=int(status_version), kv_base=bool(kv_base)))
        for visible_at in t.due:
            self._parking.due_at(visible_at)
        if self._waker is not None:
            for m in commit.messages:  # (timers this worker fires itself included)
                if m.visible_at is not None:
                    self._waker.due(m.visible_at)
        self._notifier.call(notes)
        return t.claimed_items(rows[0][6:9])

    async def abandon_orchestration_item(self, lock_token: str, delay: float = 0.0, *,
                                         ignore_attempt: bool = False) -> None:
        self._writable("abandon_orchestration_item")
        if self._pending_starts:
            await self._settle_start(lock_token)
        rows = await self._rows(self._q.variant(
            "abandon_orchestration", frozenset({"undo"} if ignore_attempt else ())), {
            "token": lock_token, "delay": float(delay), "channel": self._channel,
            "note_prefix": self._note("orchestrator", "")})
        if not rows:
            raise LockLost("orchestration lock is not held or expired")
        if delay <= 0:
            self._notifier.call([("orchestrator", rows[0][0])])
        else:  # its messages become fetchable when the cool-down ends
            self._parking.due_at(time.time() + delay)

    async def renew_orchestration_lock(self, lock_token: str, lock_timeout: float) -> None:
        self._writable("renew_orchestration_lock")
        if self._pending_starts:
            await self._settle_start(lock_token)
        rows = await self._rows("renew_orchestration", {
            "token": lock_token, "lock_timeout": float(lock_timeout)})
        if len(rows) != 1:
            raise LockLost("orchestration lock is not held or expired")

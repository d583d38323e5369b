"""Threads that own SQLite connections, so the event loop never waits on SQLite.

A :class:`ConnectionWorker` is one daemon thread with one connection and a queue of
operations. Callers on any event loop submit an :class:`Op` carrying that loop and a
future; the thread resolves the future with ``loop.call_soon_threadsafe``. Nothing is
bound to a loop beyond one call, so a store works from one event loop after another,
and a daemon thread never keeps the process alive.

Write operations are grouped: the thread takes every operation waiting in its queue
and runs them in ONE ``BEGIN IMMEDIATE`` transaction (group commit), each inside its
own ``SAVEPOINT``, so an operation that raises (``LockLost`` ...) rolls back only its own
changes and fails only its own caller. Writes queued while that transaction ran join it
before its COMMIT (twice at most), rather than wait for the next one: a caller that
waits for durability (a client's start) then waits for one commit, not two.

Commit first, then effects: no outcome of a transaction (a lock, a claimed activity, a
record, a wake-up) leaves this thread before its COMMIT has returned. Listeners hear of
an operation's effects after that commit, before its caller is resumed. A transaction
whose COMMIT fails hands out nothing but the error.

A fetch may wait for work (``deadline``): it parks in this thread and is answered when a
transaction of this worker enqueues orchestration messages (the fetch then runs inside
that transaction), when a delayed message falls due, or at its deadline.

One class holds the thread's state (its connection, the batch in progress, the parked
fetches, the due times) under one lock, shared by the thread and by callers that run a
write themselves; that is why this module runs past 500 lines.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from ...errors import ProviderError
from ._outcomes import Outbox, deliver, flush
from ._tx import (
    STOP,
    Details,
    Notes,
    Op,
    Tx,
    begin_immediate,
    given_up,
    is_busy,
    provider_error,
)

__all__ = ["ConnectionWorker"]

log = logging.getLogger("duroxy.providers.sqlite")

#: How many times a transaction takes in the writes queued while it ran before it
#: commits. Bounded, so that a steady stream of writes cannot keep it from committing.
_LATE_ROUNDS = 2

#: A writer about to sleep until a queued message falls due, for at least
#: ``_WARM_UP_IDLE_S``, wakes ``_WARM_UP_AHEAD_S`` before it to warm its connection up
#: (``warm_up``): after an idle spell the first transaction is slow, and the fetch at
#: the due time would be that transaction.
_WARM_UP_IDLE_S = 0.002
_WARM_UP_AHEAD_S = 0.0006


class _Busy(BaseException):
    """An operation run on its caller's thread met another process's write lock: it is
    handed to the worker thread instead, which may wait for it. (Not an ``Exception``:
    the batch machinery must let it through untouched.)"""


#: wakes the worker thread to recompute how long it may sleep (no outcome)
_POKE: Callable[[Tx], Any] = lambda tx: None  # noqa: E731 - a sentinel, by identity


class ConnectionWorker:
    """A daemon thread that owns one connection (opened by ``opener`` on the thread)
    and runs submitted operations in order. ``group_writes`` makes it the writer:
    write operations then run in group-committed ``BEGIN IMMEDIATE`` transactions.

    ``sync_levels`` = (durable, lazy): the ``PRAGMA synchronous`` level for a transaction
    holding at least one durable operation, and for one holding only lock operations
    (fetch, renew, abandon). The lazy level skips the fsync at commit. That is safe: WAL
    recovery after a power cut keeps a prefix of the committed transactions, the next
    durable commit syncs every frame before it, and a lock transaction that is lost only
    hands locks back, which the crash of the lock holder does anyway.

    ``next_due(tx)`` (writer) gives the earliest future visibility time among queued
    orchestration messages, so parked fetches wake when a timer falls due; ``warm_up(tx)``
    (writer) runs a moment before that, outside any transaction, when the thread has been
    idle (see ``_WARM_UP_IDLE_S``). ``now`` is the store's clock."""

    def __init__(
        self,
        name: str,
        opener: Callable[[], sqlite3.Connection],
        *,
        group_writes: bool,
        begin_timeout: float,
        on_commit: Callable[[Notes, Details], None] | None = None,
        sync_levels: tuple[str, str] | None = None,
        reopenable: bool = True,
        next_due: Callable[[Tx], float | None] | None = None,
        warm_up: Callable[[Tx], None] | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._name = name
        #: the store's clock (epoch seconds): ``Tx.now`` of every operation, and what
        #: due times are compared with
        self._now = now
        self._reopenable = reopenable
        self._opener = opener
        self._group_writes = group_writes
        self._begin_timeout = begin_timeout
        self._on_commit = on_commit
        self._sync_levels = sync_levels
        self._sync_now = sync_levels[0] if sync_levels else ""
        self._next_due_fn = next_due
        self._warm_up_fn = warm_up
        #: write transactions committed so far (statistics; tests check group commit)
        self.commits = 0
        #: test hook: called on the worker thread right before each COMMIT (tests use it
        #: to hold a commit open, or to make it fail)
        self.before_commit: Callable[[], None] | None = None
        self._queue: queue.SimpleQueue[Op] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        #: guards the start of the thread and ``_stopped``, so that nothing is queued
        #: for a thread that has exited
        self._lock = threading.Lock()
        self._stopped = False
        self._outbox: Outbox = {}
        #: the thread's connection (worker thread only; None until opened)
        self._tx: Tx | None = None
        # Worker thread only: fetches waiting for work, and the earliest time a queued
        # message falls due (None: none known; recomputed when ``_due_stale``).
        self._parked: list[Op] = []
        self._next_due: float | None = None
        self._due_stale = False
        #: set (from any thread) when the store's clock jumped: see ``clock_jumped``
        self._jumped = False
        #: operations taken from the queue for the next batch (they could not join the
        #: transaction that was open when they were taken)
        self._backlog: list[Op] = []
        #: operations that joined the open transaction after its batch was taken (parked
        #: fetches, late writes): a batch that fails as a whole fails them too
        self._joined: list[Op] = []
        #: held by whichever thread uses the connection and the state above: the worker
        #: thread, except while it sleeps waiting for operations, when a caller may run
        #: one on its own thread (``run_inline``)
        self._busy = threading.Lock()
        #: a transaction begun on a caller's thread must not wait for another process
        self._inline = False

    # ----------------------------------------------------------------- submission
    def submit(self, op: Op) -> None:
        with self._lock:
            if not self._stopped:
                if self._thread is None:
                    t = threading.Thread(target=self._run, name=self._name, daemon=True)
                    t.start()
                    self._thread = t
                self._queue.put(op)
                return
        deliver(op, None, ProviderError("the SQLite store is closed"))

    def _out(self, op: Op, result: Any, exc: BaseException | None) -> None:
        """Deliver an outcome with the batch, or park a fetch that found nothing and may
        still wait."""
        if (op.deadline is not None and exc is None and not result and not op.delivered
                and op.deadline > time.monotonic() and not self._stopped
                and not given_up(op)):
            if not self._parked:
                self._due_stale = True
            self._parked.append(op)
            return
        deliver(op, result, exc, self._outbox)

    @property
    def started(self) -> bool:
        return self._thread is not None

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def stop_nowait(self) -> None:
        """Ask the thread to close its connection after the work already queued."""
        if self._thread is not None:
            self.submit(Op(STOP, False, None, None))

    def refuse_if_unstarted(self) -> bool:
        """If the thread never started, refuse all later work (so that no thread, and no
        connection, is opened after the store closed) and return True."""
        with self._lock:
            if self._thread is None:
                self._stopped = True
                return True
            return False

    # ----------------------------------------------------------------- the thread
    def _run(self) -> None:
        # The thread holds ``_busy`` whenever it touches the connection or the state
        # around it, and lets it go while it sleeps waiting for operations (a caller may
        # then run one itself, see ``run_inline``) and while it hands outcomes out.
        try:
            while True:
                with self._busy:
                    batch: list[Op] | None = None
                    if self._backlog:
                        batch, self._backlog = self._backlog, []
                    else:
                        timeout = self._park_timeout()
                        early = self._warm_up_wait(timeout)
                if batch is None:
                    try:
                        got: Op | None = self._queue.get(
                            timeout=timeout if early is None else early)
                    except queue.Empty:
                        got = None
                    if got is None and early is not None:
                        with self._busy:
                            if self._next_due is not None and self._now() < self._next_due:
                                self._warm_up()
                                continue
                    batch = [] if got is None else [got]
                while True:  # drain what else is waiting: one transaction for all
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                with self._busy:
                    try:
                        stopped = self._handle(batch)
                        if not stopped and self._parked:
                            self._wake_parked()
                    finally:
                        outbox, self._outbox = self._outbox, {}
                flush(outbox)  # one wake-up per caller loop and batch
                if stopped:
                    return
        except BaseException:  # pragma: no cover - a bug here must not go unnoticed
            log.exception("SQLite worker thread %s failed", self._name)
            raise
        finally:
            with self._busy:
                if self._tx is not None:
                    self._tx.conn.close()
                    self._tx = None

    # ----------------------------------------------------------------- on the caller's thread
    def run_inline(self, op: Op) -> bool:
        """Run the write ``op`` on the calling thread, as the worker thread would, if
        the worker is asleep with nothing queued and its connection is open; False
        (nothing done) otherwise, or when another process holds the write lock: the
        caller then submits it. Its outcome is delivered before this returns (to its
        future at once when called on that future's loop).

        This saves the two thread wake-ups of a hand-off, each a sizeable part of a
        sequential step, and costs the caller the wait for the commit: callers use it
        only when they have nothing else to do meanwhile."""
        if (not self._group_writes or not self._queue.empty()
                or not self._busy.acquire(blocking=False)):
            return False
        try:
            if self._stopped or self._tx is None or self._backlog:
                return False
            due = self._next_due
            self._inline = True
            try:
                self._handle([op])
            except _Busy:
                return False
            finally:
                self._inline = False
            if self._parked:
                self._wake_parked()
            # The worker sleeps for as long as it computed before this ran. A message
            # falling due sooner (a timer committed here), or work left for it, wakes it
            # now to look again. A fetch parked here wakes it at its deadline instead,
            # from the fetch's own loop: not now, while its caller goes on writing.
            if op in self._parked and op.loop is not None and op.deadline is not None:
                wait = op.deadline - time.monotonic()
                until_due = self._until_due()
                if until_due is None or until_due > wait:
                    op.loop.call_later(max(wait, 0.0), self.poke)
                    return True
                self.poke()  # a message falls due before the deadline: the worker's
            elif self._backlog or (self._parked and self._next_due != due):
                self.poke()
            return True
        finally:
            outbox, self._outbox = self._outbox, {}
            self._busy.release()
            flush(outbox)

    def _until_due(self) -> float | None:
        """Seconds until the next queued message falls due (``None``: none is known),
        reading the store when that is not known (``_busy`` held)."""
        if self._due_stale and self._tx is not None and self._next_due_fn is not None:
            self._due_stale = False
            self._tx.now = self._now()
            try:
                self._next_due = self._next_due_fn(self._tx)
            except sqlite3.Error:
                self._next_due = None
        return None if self._next_due is None else self._next_due - self._now()

    def poke(self) -> None:
        """Wake the worker thread to look again at what it waits for (parked fetches'
        deadlines, messages falling due); any thread may call it."""
        if not self._stopped:
            self._queue.put(Op(_POKE, False, None, None))

    def clock_jumped(self) -> None:
        """The store's clock jumped forward (a test's virtual clock): whatever waited
        for a time may be due now, a queued message or the end of an instance's
        cool-down, so the parked fetches run once more. Any thread may call it."""
        self._jumped = True
        self.poke()

    # ----------------------------------------------------------------- parked fetches
    def _park_timeout(self) -> float | None:
        """How long the thread may sleep: until a parked fetch's deadline or the next
        due message; ``None`` (forever) with nothing parked."""
        if not self._parked:
            return None
        until_due = self._until_due()
        wait = min(op.deadline for op in self._parked if op.deadline is not None) \
            - time.monotonic()
        if until_due is not None:
            wait = min(wait, until_due)
        return max(wait, 0.0)

    def _warm_up_wait(self, timeout: float | None) -> float | None:
        """How long to sleep before warming up for the next due message (see
        ``warm_up``), when the sleep ``timeout`` ends at that due time and is long
        enough for the connection to have gone cold; else ``None``."""
        if self._warm_up_fn is None or timeout is None or self._next_due is None:
            return None
        until_due = self._next_due - self._now()
        # (not within the lead either: the sleep after a warm-up goes to the due time)
        if (until_due < _WARM_UP_IDLE_S or until_due <= _WARM_UP_AHEAD_S
                or timeout < until_due - 0.0001):
            return None
        return until_due - _WARM_UP_AHEAD_S

    def _warm_up(self) -> None:
        """Best effort: a warm-up that fails leaves no transaction open and is logged."""
        if self._tx is None or self._warm_up_fn is None:
            return
        conn = self._tx.conn
        try:
            self._warm_up_fn(self._tx)
        except Exception:
            log.debug("warming up before a due message failed", exc_info=True)
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")

    def _wake_parked(self) -> None:
        """Run the parked fetches whose deadline passed, or all of them once a queued
        message fell due; those that find nothing and may wait on park again."""
        now = self._now()
        due = self._jumped or (self._next_due is not None and self._next_due <= now)
        self._jumped = False
        mono = time.monotonic()
        ready = [op for op in self._parked if due or (op.deadline or 0.0) <= mono
                 or given_up(op)]
        if not ready:
            return
        self._parked = [op for op in self._parked if op not in ready]
        if due:
            self._next_due = None
            self._due_stale = True
        # Woken because a message fell due, the fetches know there is work: no probe.
        self._handle(ready, probe=not due)

    def _unpark(self) -> list[Op]:
        """Take the parked fetches that someone still waits for."""
        ops = [op for op in self._parked if not given_up(op)]
        self._parked = []
        return ops

    # ----------------------------------------------------------------- batches
    def _handle(self, batch: list[Op], probe: bool = True) -> bool:
        """Run one batch; True once the worker has stopped. ``probe=False``: fetches
        that would probe first go straight to their transaction."""
        stop_at = next((i for i, op in enumerate(batch) if op.fn is STOP), None)
        work = batch if stop_at is None else batch[:stop_at]
        # Operations whose caller gave up before they ran are skipped.
        work = [op for op in work if not given_up(op)]
        if work and self._tx is None:
            try:
                self._tx = Tx(self._opener())
            except BaseException as e:
                for op in work:
                    self._out(op, None, provider_error(e))
                work = []
        if work:
            assert self._tx is not None
            self._joined = []
            try:
                self._run_batch(self._tx, work, probe)
            except Exception as e:
                # Not an operation's own failure (those are delivered): the batch left
                # the connection in an unknown state. Fail what is left, roll back, and
                # if even that fails start over with a new connection (a private
                # in-memory database lives in its connection: that one is kept).
                log.exception("SQLite worker %s: batch failed", self._name)
                err = ProviderError(f"SQLite store failure: {e}", retryable=True)
                for op in [*work, *self._joined]:
                    if op not in self._parked:
                        self._out(op, None, err)
                conn = self._tx.conn
                try:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                except sqlite3.Error:
                    if self._reopenable:
                        with contextlib.suppress(Exception):
                            conn.close()
                        self._tx = None
        if stop_at is None:
            return False
        with self._lock:
            self._stopped = True
        late = batch[stop_at + 1:]
        while True:
            try:
                late.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if self._tx is not None:
            self._tx.conn.close()
            self._tx = None
        for op in self._parked:  # nothing came for them
            deliver(op, [], None, self._outbox)
        self._parked = []
        self._out(batch[stop_at], None, None)
        for op in late:
            if op.fn is STOP:
                self._out(op, None, None)
            else:
                self._out(op, None, ProviderError("the SQLite store is closed"))
        return True

    def _run_batch(self, tx: Tx, ops: list[Op], probe: bool = True) -> None:
        reads = ops
        if self._group_writes:
            writes = [op for op in ops if op.write]
            reads = [op for op in ops if not op.write]
            if not probe:
                pass
            elif writes and all(op.probe is not None for op in writes):
                # Only probes when nothing else writes in this batch: a fetch after an
                # ack in the same batch must see what that ack enqueued.
                writes = self._run_probes(tx, writes)
            elif any(op.deadline is not None for op in writes):
                # A fetch that may wait parks when it finds nothing now; should the
                # batch enqueue work, it takes that in the same transaction.
                waiting = [op for op in writes if op.deadline is not None]
                writes = [op for op in writes if op.deadline is None]
                writes += self._run_probes(tx, waiting)
            if writes:
                self._run_writes(tx, writes)
        for op in reads:
            tx.notes = []
            tx.now = self._now()
            try:
                assert op.fn is not None
                result = op.fn(tx)
            except BaseException as e:
                self._out(op, None, provider_error(e))
            else:
                self._out(op, result, None)

    def _run_probes(self, tx: Tx, ops: list[Op]) -> list[Op]:
        """Answer what the probes can; return the operations that still need to write.
        This thread is the process's only writer, so nothing of ours commits between a
        probe and the transaction; other processes' work is found by the next fetch."""
        rest: list[Op] = []
        for op in ops:
            tx.now = self._now()
            try:
                assert op.probe is not None
                answer = op.probe(tx)
            except BaseException as e:
                self._out(op, None, provider_error(e))
                continue
            if answer is None:
                rest.append(op)
            else:
                self._out(op, answer, None)
        return rest

    def _run_ops(self, tx: Tx, ops: list[Op], outcomes: list[_Done], savepoints: bool
                 ) -> BaseException | None:
        """Run operations inside the open transaction; returns what aborted it, if
        anything did. Outcomes are collected, to be delivered once the fate of the
        transaction is known."""
        conn = tx.conn
        for op in ops:
            tx.notes = []
            tx.details = {}
            tx.now = self._now()
            tx.wake_at = None
            if savepoints:
                conn.execute("SAVEPOINT op")
            try:
                assert op.fn is not None
                result = op.fn(tx)
            except BaseException as e:
                outcomes.append(_Done(op, None, e, [], {}, None))
                if not savepoints:
                    return None
                aborted: BaseException | None = None
                try:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                except sqlite3.Error as e2:
                    aborted = e2
                if not conn.in_transaction:  # SQLite gave up the whole transaction
                    aborted = aborted or e
                if aborted is not None:
                    return aborted
            else:
                if savepoints:
                    conn.execute("RELEASE op")
                outcomes.append(_Done(op, result, None, tx.notes, tx.details, tx.wake_at))
        return None

    def _run_writes(self, tx: Tx, ops: list[Op]) -> None:
        conn = tx.conn
        try:
            if self._sync_levels is not None:
                durable, lazy = self._sync_levels
                level = durable if any(op.durable for op in ops) else lazy
                if level != self._sync_now:
                    conn.execute(f"PRAGMA synchronous = {level}")
                    self._sync_now = level
            begin_immediate(conn, 0.0 if self._inline else self._begin_timeout)
        except BaseException as e:
            if self._inline and is_busy(e):
                raise _Busy from None
            err = provider_error(e)
            for op in ops:
                self._out(op, None, err)
            return
        self._write_and_commit(tx, ops)

    def _fuse_parked(self, tx: Tx, ops: list[Op], outcomes: list[_Done], since: int
                     ) -> BaseException | None:
        """When the operations from ``outcomes[since]`` on enqueue orchestration work,
        the fetches waiting for some take it in the same transaction."""
        if self._parked and any(ch == "orchestrator" for d in outcomes[since:]
                                if d.exc is None for ch, _iid in d.notes):
            fused = self._unpark()
            ops.extend(fused)
            self._joined.extend(fused)
            return self._run_ops(tx, fused, outcomes, savepoints=True)
        return None

    def _late_writes(self) -> list[Op]:
        """Writes queued while the open transaction ran: they join it before its COMMIT
        instead of waiting for the next one. The first that cannot join, and everything
        queued after it, waits for the next batch: anything but a plain write (reads,
        flushes, STOP, fetches that probe first), and a durable write when the open
        transaction commits without a sync (it holds lock operations only)."""
        if self._backlog:
            return []
        taken: list[Op] = []
        while True:
            try:
                taken.append(self._queue.get_nowait())
            except queue.Empty:
                break
        lazy = self._sync_levels is not None and self._sync_now != self._sync_levels[0]
        for i, op in enumerate(taken):
            if (not op.write or op.fn is STOP or op.probe is not None
                    or (lazy and op.durable)):
                self._backlog, taken = taken[i:], taken[:i]
                break
        return [op for op in taken if not given_up(op)]

    def _write_and_commit(self, tx: Tx, ops: list[Op]) -> None:
        conn = tx.conn
        single = len(ops) == 1
        ops = list(ops)
        outcomes: list[_Done] = []
        aborted = self._run_ops(tx, ops, outcomes, savepoints=not single)
        failed_alone = single and outcomes[0].exc is not None
        if aborted is None and not failed_alone:
            aborted = self._fuse_parked(tx, ops, outcomes, 0)
        rounds = 0
        while aborted is None and not failed_alone and rounds < _LATE_ROUNDS:
            late = self._late_writes()
            if not late:
                break
            rounds += 1
            since = len(outcomes)
            ops.extend(late)
            self._joined.extend(late)
            aborted = self._run_ops(tx, late, outcomes, savepoints=True)
            if aborted is None:
                aborted = self._fuse_parked(tx, ops, outcomes, since)
        if aborted is None:
            try:
                if failed_alone:
                    conn.execute("ROLLBACK")
                else:
                    if self.before_commit is not None:
                        self.before_commit()
                    conn.execute("COMMIT")
                    self.commits += 1
            except sqlite3.Error as e:
                aborted = e
        if aborted is not None:
            # Nothing of this transaction is durable: every operation fails.
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:  # pragma: no cover
                    pass
            err = ProviderError(f"SQLite transaction failed: {aborted}", retryable=True)
            done = {id(d.op) for d in outcomes}
            for d in outcomes:
                self._out(d.op, None, provider_error(d.exc) if d.exc is not None else err)
            for op in ops:
                if id(op) not in done:
                    self._out(op, None, err)
            return
        notes: Notes = []
        details: Details = {}
        for d in outcomes:
            if d.exc is None:
                notes.extend(d.notes)
                details.update(d.details)
                if d.wake_at is not None and (self._next_due is None
                                              or d.wake_at < self._next_due):
                    self._next_due = d.wake_at
        if notes and self._on_commit is not None:
            self._on_commit(notes, details)
        for d in outcomes:
            self._out(d.op, d.result, None if d.exc is None else provider_error(d.exc))


class _Done:
    """The outcome of one operation of a write transaction."""

    __slots__ = ("details", "exc", "notes", "op", "result", "wake_at")

    def __init__(self, op: Op, result: Any, exc: BaseException | None, notes: Notes,
                 details: Details, wake_at: float | None) -> None:
        self.op = op
        self.result = result
        self.exc = exc
        self.notes = notes
        self.details = details
        self.wake_at = wake_at

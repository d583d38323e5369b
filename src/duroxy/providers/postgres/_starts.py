"""Starts committed with their first turn: a part of PostgresProvider.

A start committed through this provider while one of its fetches is parked (long
polling, see ``_parking.py``) is handed to that fetch before anything is written: the
item a fetch would return, under a lease token made up here. The worker runs the first
turn, and its ack commits the start and the turn in one transaction sent in one round
trip (``create_instance_leased``, then ``ack_turn`` under that token, which sees the
lease the first statement took): one durable commit on a start's path instead of two.

Invariants:

- ``create_instance`` returns only after a COMMIT holding the start has returned, and
  raises ``InstanceAlreadyExists`` only after a statement found the id taken: the
  promise of an ordinary start. Nothing the turn decided leaves before that commit
  either: the ack returns the claimed activities only then.
- A start is committed whatever becomes of its item. The ack commits it with the turn;
  an abandon or a renewal of the item, the provider's close, or ``FUSE_WAIT_S`` without
  an ack commit it alone first (``create_instance_leased`` under the same token, so the
  worker's later ack, renewal or abandon works as on any fetched item). When the server
  refuses the turn's statement the transaction commits nothing, and the start is
  committed alone before the error reaches the worker. A connection lost during the
  transaction leaves its outcome unknown, as for any statement: the client's start and
  the worker's ack both raise that ``ProviderError``.
- Between the hand-over and the commit nobody else can see the instance; the client
  that started it is still waiting, so no caller can tell.
- Everything here runs on the event loop of the parked fetch, which is the loop of the
  start (``Parking.take`` hands over only to a fetch of the caller's loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from ...errors import InstanceAlreadyExists
from ...history import OrchestrationStarted, OrchestratorMessage
from ..base import ActivityItem, OrchestrationCommit
from ._errors import OutcomeUnknown
from ._marshal import started_item
from ._notify import Notifier
from ._parking import Parked, in_background

__all__ = ["FUSE_WAIT_S", "FusedStarts", "PendingStart"]

Row = tuple[Any, ...]

#: The longest a start handed over waits for its first turn's ack before it is committed
#: alone. A first turn takes about a millisecond; a worker that takes longer (a loaded
#: event loop, code that is slow to reach its first await) delays the start no further.
FUSE_WAIT_S = 0.05


class PendingStart:
    """A start handed over and not yet committed. ``answer`` is the client's
    (``None``, or the error its ``create_instance`` raises); ``alone``, once the start
    is being committed without its turn, whether that left it leased to the token."""

    __slots__ = ("alone", "answer", "instance_id", "params", "timer")

    def __init__(self, instance_id: str, params: dict[str, Any],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.instance_id = instance_id
        self.params = params
        self.answer: asyncio.Future[None] = loop.create_future()
        self.timer: asyncio.TimerHandle | None = None
        self.alone: asyncio.Future[bool] | None = None


class _Host(Protocol):
    """What this part uses of the provider."""

    _notifier: Notifier
    _pending_starts: dict[str, PendingStart]

    async def _rows(self, name: str, params: dict[str, Any]) -> list[Row]: ...

    def _track(self, task: asyncio.Future[Any]) -> None: ...

    async def _commit_turn(self, statement: str, commit: OrchestrationCommit,
                           params: dict[str, Any],
                           first: tuple[dict[str, Any], Callable[[list[Row]], Any]]
                           | None = None) -> list[ActivityItem]: ...


class FusedStarts:
    """Mixed into PostgresProvider."""

    async def _start_fused(self: _Host, message: OrchestratorMessage,
                           event: OrchestrationStarted, params: dict[str, Any],
                           parked: Parked) -> None:
        """create_instance through ``parked``: the item handed over now, the start
        committed by its ack (or alone, see the module's docstring)."""
        loop = asyncio.get_running_loop()
        token = str(uuid.uuid4())
        pending = PendingStart(message.instance_id, {
            **params, "token": token, "lock_timeout": float(parked.lock_timeout)}, loop)
        self._pending_starts[token] = pending
        pending.timer = loop.call_later(FUSE_WAIT_S, FusedStarts._start_alone, self, token)
        now = time.time()
        # The message id is the store's and unknown yet; nothing reads it from an item.
        # (Parking.take returned a poll whose future is pending, and nothing awaited
        # since, so it is still pending.)
        parked.fut.set_result([started_item(message, event, token, 0, now, now)])
        await asyncio.shield(pending.answer)

    def _start_alone(self: _Host, token: str) -> asyncio.Future[bool] | None:
        """Commit the pending start under ``token`` without its turn (once; None when
        it is no pending start): whether the start is now leased to ``token``."""
        pending = self._pending_starts.get(token)
        if pending is None:
            return None
        if pending.alone is None:
            if pending.timer is not None:
                pending.timer.cancel()
            pending.alone = in_background(FusedStarts._commit_alone(self, token, pending))
            self._track(pending.alone)
        return pending.alone

    async def _commit_alone(self: _Host, token: str, pending: PendingStart) -> bool:
        try:
            rows = await self._rows("create_instance_leased", pending.params)
        except BaseException as e:
            _answer(pending, e)
            raise
        finally:
            self._pending_starts.pop(token, None)
        return FusedStarts._started(self, pending, rows)

    def _started(self: _Host, pending: PendingStart, rows: list[Row]) -> bool:
        """Answer the client from ``create_instance_leased``'s rows: whether the start
        is leased to the token (not when its id was taken, nor when a held lock row made
        the statement announce the start instead)."""
        if not rows:
            _answer(pending, InstanceAlreadyExists(pending.instance_id))
            return False
        leased = rows[0][0]
        if leased is None:
            self._notifier.call([("orchestrator", pending.instance_id)])
        _answer(pending, None)
        return leased is not None

    async def _settle_start(self: _Host, token: str) -> None:
        """Before a renewal or an abandon under ``token``: a pending start under it is
        committed alone first (its failure is the client's to hear; the caller's own
        statement then finds no lease)."""
        alone = FusedStarts._start_alone(self, token)
        if alone is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(alone)

    def _settle_starts(self: _Host) -> None:
        """On close: every pending start of the running loop is committed alone (see
        _settle_leases); those of another loop are left to their own timers."""
        loop = asyncio.get_running_loop()
        for token, pending in list(self._pending_starts.items()):
            if pending.answer.get_loop() is loop:
                FusedStarts._start_alone(self, token)

    async def _ack_fused(self: _Host, token: str, commit: OrchestrationCommit
                         ) -> list[ActivityItem] | None:
        """The ack of a pending start's first turn: the start and the turn committed
        together. None when ``token`` is no pending start (any more): the caller acks
        as usual, after the start committed alone."""
        pending = self._pending_starts.get(token)
        if pending is None:
            return None
        if pending.alone is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(pending.alone)
            return None
        del self._pending_starts[token]
        if pending.timer is not None:
            pending.timer.cancel()
        # Shielded, so that the client hears the outcome even if this ack is cancelled
        # (whose failure then goes unheard, as the caller has gone).
        task = in_background(FusedStarts._commit_fused(self, token, pending, commit))
        self._track(task)
        return await asyncio.shield(task)

    async def _commit_fused(self: _Host, token: str, pending: PendingStart,
                            commit: OrchestrationCommit) -> list[ActivityItem]:
        try:
            return await self._commit_turn(
                "ack_turn", commit, {"token": token},
                first=(pending.params, lambda rows: FusedStarts._started(self, pending, rows)))
        except BaseException as e:
            if not pending.answer.done():
                if isinstance(e, OutcomeUnknown):
                    _answer(pending, e)  # the start may have committed, or not
                else:  # nothing was sent, or nothing committed: the start alone
                    self._pending_starts[token] = pending
                    alone = FusedStarts._start_alone(self, token)
                    assert alone is not None
                    with contextlib.suppress(Exception):
                        await asyncio.shield(alone)
            raise


def _answer(pending: PendingStart, outcome: BaseException | None) -> None:
    if pending.answer.done():
        return
    if outcome is None:
        pending.answer.set_result(None)
    elif isinstance(outcome, asyncio.CancelledError):
        pending.answer.cancel()
    else:
        pending.answer.set_exception(outcome)

"""How the outcome of a store operation reaches its caller, from the thread that ran it:
the caller's future is resolved on the caller's own event loop (at once when that loop
runs on this thread), or a thread-safe future's; the outcomes of one batch go out with one
wake-up per loop. A result nobody will read (its caller was cancelled, or its loop
closed) is discarded, which gives back the locks it holds."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any

from ...errors import DuroxyError
from ._tx import Op

__all__ = ["Outbox", "Outcome", "deliver", "flush"]

log = logging.getLogger("duroxy.providers.sqlite")


def resolve(op: Op, result: Any, exc: BaseException | None) -> None:
    """Runs on the caller's loop."""
    fut = op.fut
    assert isinstance(fut, asyncio.Future)
    if fut.done():  # cancelled while the thread worked
        if exc is None and op.discard is not None:
            op.discard(result)
        return
    if exc is None:
        fut.set_result(result)
    else:
        fut.set_exception(exc)


Outcome = tuple[Op, Any, BaseException | None]
#: outcomes waiting to be handed to their loops, one wake-up per loop and batch
Outbox = dict[asyncio.AbstractEventLoop, list[Outcome]]


def resolve_all(outcomes: list[Outcome]) -> None:
    for op, result, exc in outcomes:
        resolve(op, result, exc)


def discard_unread(outcomes: list[Outcome]) -> None:
    """The caller's loop is closed: nobody will read these results."""
    for op, result, exc in outcomes:
        if exc is None and op.discard is not None:
            try:
                op.discard(result)
            except Exception:  # pragma: no cover - best effort
                log.exception("discarding an unread SQLite result failed")


def deliver(op: Op, result: Any, exc: BaseException | None,
             outbox: Outbox | None = None) -> None:
    """Hand an outcome to its caller, now or (with ``outbox``) at the next flush."""
    if op.delivered:  # pragma: no cover - guards the recovery path in ConnectionWorker
        return
    op.delivered = True
    if op.fut is None:
        if exc is not None and not isinstance(exc, DuroxyError):
            log.warning("background SQLite operation failed: %s", exc)
        return
    if op.loop is None:
        assert isinstance(op.fut, concurrent.futures.Future)
        if op.fut.set_running_or_notify_cancel():
            if exc is None:
                op.fut.set_result(result)
            else:
                op.fut.set_exception(exc)
        return
    if outbox is not None:
        outbox.setdefault(op.loop, []).append((op, result, exc))
    else:
        flush({op.loop: [(op, result, exc)]})


def flush(outbox: Outbox) -> None:
    here = asyncio.events._get_running_loop()
    for loop, outcomes in outbox.items():
        if loop is here:  # an operation run on its caller's thread (``run_inline``)
            resolve_all(outcomes)
            continue
        try:
            loop.call_soon_threadsafe(resolve_all, outcomes)
        except RuntimeError:  # the loop is closed
            discard_unread(outcomes)
    outbox.clear()

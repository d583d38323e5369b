"""``ActivityContext``: what a running activity knows and may ask."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from .._tracing import TraceMethods

if TYPE_CHECKING:
    from ..client import Client
    from ..providers.base import Provider

__all__ = ["ActivityContext"]

logger = logging.getLogger("duroxy.activity")


class ActivityContext(TraceMethods):
    """Passed to every activity as its first argument: which instance, execution,
    orchestration and attempt the activity runs for (``instance_id``, ``execution_id``,
    ``orchestration_name``, ``orchestration_version``, ``activity_name``, ``attempt``,
    ``worker_id``), how it was routed (``session_id`` and ``tag``, ``None`` when not
    given), trace methods that log with the instance id attached, and its
    cancellation.

    ``is_cancelled()`` becomes true, and ``await cancelled()`` returns, once the
    orchestration no longer wants the result: it lost a select, the instance was
    cancelled, or a retry attempt timed out. Activities that run long should check it.
    """

    def __init__(self, *, instance_id: str, execution_id: int, orchestration_name: str,
                 orchestration_version: str | None, activity_name: str, attempt: int,
                 worker_id: str, provider: Provider | None = None,
                 loop: asyncio.AbstractEventLoop | None = None,
                 session_id: str | None = None, tag: str | None = None,
                 client: Client | None = None) -> None:
        self.instance_id = instance_id
        self.execution_id = execution_id
        self.orchestration_name = orchestration_name
        self.orchestration_version = orchestration_version
        self.activity_name = activity_name
        self.attempt = attempt
        self.worker_id = worker_id
        #: the session the activity was scheduled on, or ``None``
        self.session_id = session_id
        #: the tag the activity was scheduled with, or ``None``
        self.tag = tag
        self._provider = provider
        self._client = client
        self._loop = loop
        # Set on the runtime's loop only; plain-def activities in the thread pool read it
        # (a single attribute read needs no lock).
        self._cancelled = False
        self._waiters: list[asyncio.Future[None]] = []

    # ------------------------------------------------------------------ cancellation
    def is_cancelled(self) -> bool:
        return self._cancelled

    async def cancelled(self) -> None:
        """Returns once the result is no longer wanted."""
        if self._cancelled:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)

    def _cancel(self) -> None:
        """Mark as no longer wanted; from any thread."""
        if self._cancelled:
            return
        self._cancelled = True
        for fut in self._waiters:
            if not fut.done():
                fut.get_loop().call_soon_threadsafe(_set_done, fut)

    # ------------------------------------------------------------------ tracing
    def _trace(self, level: int, msg: str) -> None:
        if logger.isEnabledFor(level):
            logger.log(level, msg, extra={
                "instance_id": self.instance_id, "execution_id": self.execution_id,
                "activity_name": self.activity_name, "attempt": self.attempt,
                "worker_id": self.worker_id})

    # ------------------------------------------------------------------ client
    def get_client(self) -> Client:
        """A :class:`~duroxy.Client` on the same store (to start or signal instances)."""
        from ..client import Client

        if self._client is not None:
            return self._client
        if self._provider is None:
            raise RuntimeError("this ActivityContext is not attached to a store")
        return Client(self._provider)

    def __repr__(self) -> str:
        return (f"ActivityContext(activity_name={self.activity_name!r}, "
                f"instance_id={self.instance_id!r}, attempt={self.attempt})")


def _set_done(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_result(None)

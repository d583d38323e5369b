"""``ActivityEnvironment``: one activity run in a test, as the runtime would run it.

The activity gets an :class:`~duroxy.ActivityContext` built from the environment's
values, its input and output take the same JSON round trip as in production (so a
payload with no JSON form, or one that does not fit the annotations, raises
``PayloadError`` here too), and it runs where the runtime runs it: an ``async def`` on
the caller's loop, a plain ``def`` in a thread. Exceptions propagate as raised; they are
not wrapped in ``ActivityFailed``. Nothing is stored anywhere.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import codec
from ..runtime.activities import call_activity
from ..runtime.activity import ActivityContext
from ..runtime.registry import ActivityRegistry

if TYPE_CHECKING:
    from ..client import Client

__all__ = ["ActivityEnvironment"]


class ActivityEnvironment:
    """Run activity functions with a test context: ``await env.run(fn, input)``.

    ``env.cancel()`` (before ``run``, or from another task or thread during it) makes
    ``ctx.is_cancelled()`` true and lets ``await ctx.cancelled()`` return."""

    def __init__(self, *, instance_id: str = "test-instance", execution_id: int = 1,
                 orchestration_name: str = "test-orchestration",
                 orchestration_version: str | None = "1.0.0", activity_name: str | None = None,
                 attempt: int = 1, worker_id: str = "test-worker",
                 session_id: str | None = None, tag: str | None = None,
                 client: Client | None = None) -> None:
        self.instance_id = instance_id
        self.execution_id = execution_id
        self.orchestration_name = orchestration_name
        self.orchestration_version = orchestration_version
        self.activity_name = activity_name
        self.attempt = attempt
        self.worker_id = worker_id
        self.session_id = session_id
        self.tag = tag
        self.client = client
        self._lock = threading.Lock()
        self._cancelled = False
        self._running: list[ActivityContext] = []

    def cancel(self) -> None:
        """The result is no longer wanted: for the activity running now, and for those
        run after."""
        with self._lock:
            self._cancelled = True
            running = list(self._running)
        for ctx in running:
            ctx._cancel()

    async def run(self, fn: Callable[..., Any], input: Any = None) -> Any:
        """Run ``fn(ctx, input)`` and return its output, both through JSON."""
        name: str = self.activity_name or str(getattr(fn, "__name__", "activity"))
        entry = ActivityRegistry.builder().register(name, fn).build().get(name)
        assert entry is not None
        ctx = ActivityContext(
            instance_id=self.instance_id, execution_id=self.execution_id,
            orchestration_name=self.orchestration_name,
            orchestration_version=self.orchestration_version, activity_name=name,
            attempt=self.attempt, worker_id=self.worker_id,
            loop=asyncio.get_running_loop(), session_id=self.session_id, tag=self.tag,
            client=self.client)
        value = codec.decode(codec.encode(input, path="input"), entry.input_type, path="input")
        with self._lock:
            self._running.append(ctx)
            if self._cancelled:
                ctx._cancel()
        try:
            result = await call_activity(entry, ctx, value, None)
        except Exception as e:
            exit_in_thread = getattr(e, "exit", None)
            if isinstance(exit_in_thread, SystemExit):  # sys.exit() in a plain def
                raise exit_in_thread from None
            raise
        finally:
            with self._lock:
                self._running.remove(ctx)
        return codec.decode(codec.encode(result, path="output"), entry.output_type,
                            path="output")

"""A deterministic asyncio event loop for orchestration code.

The loop never touches a clock, a selector or a thread: ``call_soon`` is a FIFO,
``call_later``/``call_at`` become durable timers (through the owning execution),
``time()`` is the orchestration's recorded time. So ``asyncio.gather``, ``wait``,
``TaskGroup``, ``wait_for``, ``timeout`` and ``sleep`` work unchanged and replay
identically. Everything that needs real I/O raises :class:`NonDurableAwait`.

The loop is driven synchronously by :meth:`DeterministicLoop.run_ready`, which runs
callbacks until none is ready. While it runs it is installed as the thread's running
loop, and the previous one (the runtime's) is put back afterwards.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import weakref
from asyncio import events
from collections.abc import Callable
from typing import Any, NoReturn, Protocol

from ..errors import NonDurableAwait
from .futures import DurableFuture

__all__ = ["DeterministicLoop", "DurableTimerHandle", "LoopHost"]


class LoopHost(Protocol):
    """What the loop asks of the execution it runs: its clock and durable timers."""

    #: the orchestration's time: the time of the event being delivered (epoch ms)
    current_time_ms: int

    def loop_timer(self, delay: float, callback: Callable[..., object], args: tuple[Any, ...],
                   context: contextvars.Context | None) -> asyncio.TimerHandle:
        """A durable timer that calls ``callback(*args)`` in ``context`` after ``delay``."""
        ...

    def verify_tags(self) -> None:
        """A step that matched activities against history ended: compare their tags."""
        ...


class DurableTimerHandle(asyncio.TimerHandle):
    """What ``call_later`` returns: cancelling it drops the durable timer."""

    __slots__ = ("_on_cancel",)

    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...],
                 loop: DeterministicLoop, context: contextvars.Context | None,
                 on_cancel: Callable[[], None]) -> None:
        super().__init__(when, callback, args, loop, context)
        self._on_cancel = on_cancel

    def cancel(self) -> None:
        if not self.cancelled():
            super().cancel()
            self._on_cancel()


def _not_durable(what: str) -> NoReturn:
    raise NonDurableAwait(
        f"orchestration code called {what}, which is not durable: do I/O, threads and "
        "real waits in an activity and await ctx.schedule_activity(...) instead")


async def _awaiting(fut: asyncio.Future[Any]) -> Any:
    return await fut


def _qualname(fn: Any) -> str:
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return f"{module}.{name}" if module and module != "builtins" else name


class DeterministicLoop(asyncio.AbstractEventLoop):
    def __init__(self, host: LoopHost) -> None:
        self._ready: collections.deque[asyncio.Handle] = collections.deque()
        self._host = host
        self._closed = False
        self._running = False
        self._exceptions: list[dict[str, Any]] = []
        #: the tasks made here (``asyncio.all_tasks(loop)`` would scan every task of the
        #: process: with many live orchestrations, that made each ending cost O(n))
        self.tasks: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        #: the id of the history event being delivered when each task here finished
        #: (a select's order among futures already done; see ``completed_by``)
        #: (made on first use: most orchestrations start no task of their own)
        self.finished_at: weakref.WeakKeyDictionary[asyncio.Future[Any], int] | None = None
        #: the id of the history event being delivered (0 before the first). Kept here,
        #: not on the execution: one more attribute there would cost each live
        #: orchestration a kilobyte (its instance dict would stop sharing keys).
        self.delivering = 0
        #: callbacks run so far: a step is one callback (``with_tag`` is allowed only in
        #: the step that scheduled the activity)
        self.step = 0
        #: activity futures matched against history in the current step, with the tag
        #: the code gives them (compared with history's when the step ends)
        self.unverified: dict[DurableFuture[Any], str | None] | None = None

    # ------------------------------------------------------------------ driving
    def run_ready(self) -> None:
        """Run callbacks until none is ready (quiescence)."""
        previous = events._get_running_loop()
        events._set_running_loop(self)
        self._running = True
        try:
            ready = self._ready
            while ready:
                handle = ready.popleft()
                if not handle._cancelled:
                    # SystemExit and KeyboardInterrupt propagate, as asyncio lets them:
                    # a signal handler's sys.exit() may land in any turn.
                    handle._run()
                    self.step += 1
                    if self.unverified:
                        self._host.verify_tags()
        finally:
            self._running = False
            events._set_running_loop(previous)

    # ------------------------------------------------------------------ scheduling
    def call_soon(self, callback: Callable[..., object], *args: Any,
                  context: contextvars.Context | None = None) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    call_soon_threadsafe = call_soon  # type: ignore[assignment]

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any,
                   context: contextvars.Context | None = None) -> asyncio.TimerHandle:
        if delay <= 0:
            # No time passes: nothing to record; the callback just runs in order.
            handle = asyncio.TimerHandle(self.time(), callback, args, self, context)
            self._ready.append(handle)
            return handle
        return self._host.loop_timer(delay, callback, args, context)

    def call_at(self, when: float, callback: Callable[..., object], *args: Any,
                context: contextvars.Context | None = None) -> asyncio.TimerHandle:
        return self.call_later(when - self.time(), callback, *args, context=context)

    def time(self) -> float:
        return self._host.current_time_ms / 1000.0

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(self, coro: Any, *, name: str | None = None,
                    context: contextvars.Context | None = None) -> asyncio.Task[Any]:
        if asyncio.isfuture(coro):
            # ctx.schedule_*() gives futures, which asyncio.create_task and TaskGroup
            # would refuse (they want a coroutine); a task awaiting the future composes.
            coro = _awaiting(coro)
        task = self.main_task(coro, context, name)
        task.add_done_callback(self._finished)
        return task

    def main_task(self, coro: Any, context: contextvars.Context | None = None,
                  name: str | None = None) -> asyncio.Task[Any]:
        """A task of this loop that no select dates (the orchestration's own)."""
        task = asyncio.Task(coro, loop=self, name=name, context=context)
        self.tasks.add(task)
        return task

    def _finished(self, task: asyncio.Future[Any]) -> None:
        if self.finished_at is None:
            self.finished_at = weakref.WeakKeyDictionary()
        self.finished_at[task] = self.delivering

    def completed_by(self, fut: asyncio.Future[Any]) -> int | None:
        """The id of the history event at which ``fut``, done, completed, when known."""
        by = getattr(fut, "completed_by", None)
        if by is None and self.finished_at is not None:
            by = self.finished_at.get(fut)
        return by

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        pass

    # ------------------------------------------------------------------ state
    def is_running(self) -> bool:
        return self._running

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._ready.clear()

    def get_debug(self) -> bool:
        return False

    def set_debug(self, enabled: bool) -> None:
        pass

    # ------------------------------------------------------------------ errors
    def call_exception_handler(self, context: dict[str, Any]) -> None:
        # Unretrieved task exceptions and the like: kept for diagnostics, never printed
        # while replaying (they would repeat on every replay).
        self._exceptions.append(context)

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self._exceptions.append(context)

    def get_exception_handler(self) -> None:
        return None

    def set_exception_handler(self, handler: Any) -> None:
        _not_durable("loop.set_exception_handler()")

    def get_task_factory(self) -> None:
        return None

    def set_task_factory(self, factory: Any) -> None:
        _not_durable("loop.set_task_factory()")

    # ------------------------------------------------------------------ not durable
    def run_forever(self) -> None:
        _not_durable("loop.run_forever()")

    def run_until_complete(self, future: Any) -> Any:
        _not_durable("loop.run_until_complete()")

    def stop(self) -> None:
        _not_durable("loop.stop()")

    async def shutdown_asyncgens(self) -> None:
        return None

    async def shutdown_default_executor(self, timeout: float | None = None) -> None:
        return None

    def run_in_executor(self, executor: Any, func: Any, *args: Any) -> Any:
        target = getattr(func, "func", func)
        args = getattr(func, "args", ())
        if isinstance(getattr(target, "__self__", None), contextvars.Context) and args:
            # asyncio.to_thread(f) runs partial(context.run, f): name f, not Context.run
            _not_durable(f"asyncio.to_thread({_qualname(args[0])})")
        _not_durable(f"run_in_executor({_qualname(target)})")

    def set_default_executor(self, executor: Any) -> None:
        _not_durable("loop.set_default_executor()")

    async def getaddrinfo(self, *args: Any, **kwargs: Any) -> Any:
        _not_durable("getaddrinfo() (network I/O)")

    async def getnameinfo(self, *args: Any, **kwargs: Any) -> Any:
        _not_durable("getnameinfo() (network I/O)")

    async def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        _not_durable("create_connection() (a socket)")

    async def create_server(self, *args: Any, **kwargs: Any) -> Any:
        _not_durable("create_server() (a socket)")

    async def create_unix_connection(self, *args: Any, **kwargs: Any) -> Any:
        _not_durable("create_unix_connection() (a socket)")

    async def create_unix_server(self, *args: Any, **kwargs: Any) -> Any:
        _not_durable("create_unix_server() (a socket)")

    async def create_datagram_endpoint(self, *args: Any, **kwargs: Any) -> Any:
        _not_durable("create_datagram_endpoint() (a socket)")

    async def connect_accepted_socket(self, *args: Any, **kwargs: Any) -> Any:
        _not_durable("connect_accepted_socket() (a socket)")

    async def sock_recv(self, *args: Any, **kwargs: Any) -> Any:
        _not_durable("sock_recv() (a socket)")

    async def sock_recv_into(self, *args: Any, **kwargs: Any) -> Any:
        _not_durable("sock_recv_into() (a socket)")

    async def sock_sendall(self, *args: Any, **kwargs: Any) -> Any:
        _not_durable("sock_sendall() (a socket)")

    async def sock_connect(self, *args: Any, **kwargs: Any) -> Any:
        _not_durable("sock_connect() (a socket)")

    async def sock_accept(self, *args: Any, **kwargs: Any) -> Any:
        _not_durable("sock_accept() (a socket)")

    async def sock_recvfrom(self, *args: Any, **kwargs: Any) -> Any:
        _not_durable("sock_recvfrom() (a socket)")

    async def sock_recvfrom_into(self, *args: Any, **kwargs: Any) -> Any:
        _not_durable("sock_recvfrom_into() (a socket)")

    async def sock_sendto(self, *args: Any, **kwargs: Any) -> Any:
        _not_durable("sock_sendto() (a socket)")

    async def sock_sendfile(self, *args: Any, **kwargs: Any) -> Any:
        _not_durable("sock_sendfile() (a socket)")

    async def sendfile(self, *args: Any, **kwargs: Any) -> Any:
        _not_durable("sendfile() (a socket)")

    async def start_tls(self, *args: Any, **kwargs: Any) -> Any:
        _not_durable("start_tls() (a socket)")

    async def connect_read_pipe(self, *args: Any, **kwargs: Any) -> Any:
        _not_durable("connect_read_pipe() (a pipe)")

    async def connect_write_pipe(self, *args: Any, **kwargs: Any) -> Any:
        _not_durable("connect_write_pipe() (a pipe)")

    async def subprocess_shell(self, *args: Any, **kwargs: Any) -> Any:
        _not_durable("subprocess_shell() (a subprocess)")

    async def subprocess_exec(self, *args: Any, **kwargs: Any) -> Any:
        _not_durable("subprocess_exec() (a subprocess)")

    def add_reader(self, *args: Any, **kwargs: Any) -> None:
        _not_durable("add_reader() (a file descriptor)")

    def remove_reader(self, *args: Any, **kwargs: Any) -> bool:
        _not_durable("remove_reader() (a file descriptor)")

    def add_writer(self, *args: Any, **kwargs: Any) -> None:
        _not_durable("add_writer() (a file descriptor)")

    def remove_writer(self, *args: Any, **kwargs: Any) -> bool:
        _not_durable("remove_writer() (a file descriptor)")

    def add_signal_handler(self, *args: Any, **kwargs: Any) -> None:
        _not_durable("add_signal_handler()")

    def remove_signal_handler(self, *args: Any, **kwargs: Any) -> bool:
        _not_durable("remove_signal_handler()")

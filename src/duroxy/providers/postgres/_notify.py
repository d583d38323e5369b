"""LISTEN/NOTIFY wake-ups for the PostgreSQL store.

Every commit that enqueues work sends ``pg_notify(<channel of the schema>, <note>)`` in
the same transaction, so the note is delivered exactly when the work becomes visible
(and not at all if the transaction rolls back). A note is one text:

    <kind><node id>|<instance id>

``kind`` is ``o`` (orchestration queue), ``a`` (activity queue), ``t`` (an instance
reached a terminal state) or ``u`` (an instance's custom status or KV changed); ``node
id`` is the 12-character id of the provider object that committed. The committing
provider calls its own listeners directly after the commit, so its listening connection
skips notes carrying its own node id.

One dedicated connection per provider (per event loop) listens, started by the first
:meth:`Notifier.ensure_running` after a listener was registered. It idles in the server
at no cost; when it drops, it reconnects with exponential backoff and then wakes every
listener with ``None``, because notes sent while it was away are lost.

The notifier also remembers which instances orchestrator notes named lately
(:meth:`Notifier.mark`, :meth:`Notifier.noted_since`). A note for an instance whose
lease is held, here or on another node, wakes fetches that must skip it; the provider
uses this memory to announce the instance again once the lease it holds is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
from psycopg import sql

from ..base import Channel, Listener

__all__ = ["CODES", "Notifier", "note"]

_log = logging.getLogger("duroxy.providers.postgres")

CODES: dict[Channel, str] = {"orchestrator": "o", "activity": "a", "terminal": "t",
                             "updated": "u"}
_CHANNELS: dict[str, Channel] = {v: k for k, v in CODES.items()}
NODE_ID_LEN = 12
#: How many instances the memory of recent orchestrator notes keeps; older ones count
#: as noted at any time (see Notifier.noted_since).
_NOTED_CAPACITY = 4096

def note(channel: Channel, node_id: str, instance_id: str) -> str:
    return f"{CODES[channel]}{node_id}|{instance_id}"


class Notifier:
    """Listener registry plus the listening connection of one provider."""

    def __init__(
        self,
        conninfo: str,
        channel: str,
        node_id: str,
        connect_kwargs: dict[str, Any] | None = None,
        *,
        min_backoff: float = 0.05,
        max_backoff: float = 5.0,
    ) -> None:
        self._conninfo = conninfo
        self._connect_kwargs = dict(connect_kwargs or {})
        self._channel = channel
        self._node_id = node_id
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._mutex = threading.Lock()  # guards the registry: listen() may come from any thread
        self._listeners: dict[Channel, dict[int, Listener]] = {
            "orchestrator": {}, "activity": {}, "terminal": {}, "updated": {}}
        self._keys = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._ready: asyncio.Event | None = None
        self._connected_before = False
        self.reconnects = 0  # connections made after the first one (for tests and metrics)
        # Orchestrator notes seen (guarded by _mutex): each gets the next number; _noted
        # keeps the latest number per instance, for the most recent instances only.
        # Notes numbered up to _forgotten may have named any instance (a note without
        # an instance, or one dropped from _noted).
        self._seen = 0
        self._noted: OrderedDict[str, int] = OrderedDict()
        self._forgotten = 0

    # ------------------------------------------------------------ registry
    def add(self, channel: Channel, callback: Listener) -> Callable[[], None]:
        if channel not in self._listeners:
            raise ValueError(f"unknown channel {channel!r}")
        with self._mutex:
            key = next(self._keys)
            self._listeners[channel][key] = callback

        def unsubscribe() -> None:
            with self._mutex:
                self._listeners[channel].pop(key, None)

        return unsubscribe

    def listening(self, channel: Channel) -> bool:
        with self._mutex:
            return bool(self._listeners[channel])

    def has_listeners(self) -> bool:
        with self._mutex:
            return any(self._listeners.values())

    def clear(self) -> None:
        with self._mutex:
            for registered in self._listeners.values():
                registered.clear()

    def mark(self) -> int:
        """A point in the sequence of orchestrator notes, for :meth:`noted_since`."""
        with self._mutex:
            return self._seen

    def noted_since(self, instance_id: str, mark: int) -> bool:
        """Whether an orchestrator note that may concern ``instance_id`` was seen after
        ``mark``. Errs on the side of yes."""
        with self._mutex:
            return self._forgotten > mark or self._noted.get(instance_id, 0) > mark

    def _remember(self, instance_id: str | None) -> None:
        # under _mutex
        self._seen += 1
        if instance_id is None:
            self._forgotten = self._seen
            return
        self._noted[instance_id] = self._seen
        self._noted.move_to_end(instance_id)
        if len(self._noted) > _NOTED_CAPACITY:
            _, seen = self._noted.popitem(last=False)
            self._forgotten = max(self._forgotten, seen)

    def call(self, calls: Iterable[tuple[Channel, str | None]]) -> None:
        """Call the listeners of each (channel, instance id); a failing listener is
        logged and skipped (the commit it reports already happened)."""
        for channel, instance_id in calls:
            with self._mutex:
                if channel == "orchestrator":
                    self._remember(instance_id)
                targets = list(self._listeners[channel].values())
            for callback in targets:
                try:
                    callback(instance_id)
                except Exception:
                    _log.exception("%s listener failed", channel)

    def _call_all(self) -> None:
        self.call((ch, None) for ch in CODES)

    def _on_note(self, payload: str) -> None:
        channel = _CHANNELS.get(payload[:1])
        if channel is None or payload[1 + NODE_ID_LEN:2 + NODE_ID_LEN] != "|":
            _log.debug("ignoring foreign notification %r", payload[:80])
            return
        if payload[1:1 + NODE_ID_LEN] == self._node_id:
            return  # our own commit: its listeners were called directly
        self.call([(channel, payload[2 + NODE_ID_LEN:])])

    # ------------------------------------------------------------ the listening connection
    def ensure_running(self) -> None:
        """Start the listening task on the running loop if a listener is registered and
        the task is not running. Must be called from that loop."""
        if self._task is not None and not self._task.done():
            return
        if not self.has_listeners():
            return
        self._ready = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"duroxy-listen-{self._channel}")

    async def wait_ready(self, timeout: float) -> None:
        self.ensure_running()
        if self._ready is None:
            raise RuntimeError("no listener is registered")
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def _run(self) -> None:
        assert self._ready is not None
        delay = self._min_backoff
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, **self._connect_kwargs)
            except psycopg.Error as e:
                _log.warning("cannot open the listening connection (retry in %.2fs): %s",
                             delay, e)
            else:
                self._conn = conn
                try:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    delay = self._min_backoff
                    self._ready.set()
                    if self._connected_before:
                        self.reconnects += 1
                        self._call_all()  # notes sent while we were away are lost
                    self._connected_before = True
                    gen = conn.notifies()
                    try:
                        async for n in gen:
                            self._on_note(n.payload)
                    finally:
                        await gen.aclose()
                except psycopg.Error as e:
                    _log.warning("listening connection lost (reconnecting in %.2fs): %s",
                                 delay, e)
                finally:
                    self._ready.clear()
                    self._conn = None
                    await conn.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_backoff)

    async def aclose(self) -> None:
        """Stop listening. A task on the running loop is cancelled and awaited; one on
        another loop is dropped (see :meth:`drop`)."""
        task = self._task
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            self._task = None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.drop()

    def drop(self) -> None:
        """Forget the task and close its connection without awaiting: used when the loop
        that ran them is gone (closed, or no longer the running one)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            # Cancelling a task of a closed loop raises; the task is dead then anyway.
            with contextlib.suppress(RuntimeError):
                task.cancel()
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            conn.pgconn.finish()
        self._ready = None

    @property
    def backend_pid(self) -> int | None:
        """Server process id of the listening connection, ``None`` when not connected."""
        conn = self._conn
        if conn is None or conn.closed or self._ready is None or not self._ready.is_set():
            return None
        return int(conn.info.backend_pid)

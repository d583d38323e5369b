"""``duroxy watch ID``: an instance's history, followed live until the instance ends.

It reads the store only: one look at the instance's record per interval (a one-row
read), and its history only when the record says the history grew or a new execution
began. The interval starts short after news and doubles while nothing happens, up to
``--interval`` (1 s by default), so a quiet instance costs one small read a second and
a busy one is followed closely.
"""

from __future__ import annotations

import asyncio

from .._render import dumps, event_json, format_timeline, name_at
from ..client import OrchestrationState
from ..errors import InstanceNotFound
from ..providers.base import InstanceRecord
from ._common import EXIT_FAILED, EXIT_OK, Env, UsageError

__all__ = ["FIRST_INTERVAL_S", "cmd_watch"]

#: The first interval after news; it doubles up to ``--interval`` while nothing happens.
FIRST_INTERVAL_S = 0.05


async def cmd_watch(env: Env) -> int:
    a = env.args
    if not a.interval > 0:
        raise UsageError(f"--interval must be a positive number of seconds, got {a.interval}")
    iid = a.instance_id
    watcher = _Watcher(env, iid)
    record = await watcher.look()
    interval = FIRST_INTERVAL_S
    while True:
        if await watcher.catch_up(record):
            interval = FIRST_INTERVAL_S
        if record.state in ("COMPLETED", "FAILED", "CANCELLED"):
            break
        await asyncio.sleep(interval)
        interval = min(interval * 2, a.interval)
        record = await watcher.look()
    state = OrchestrationState(record.state)
    if not env.as_json:
        env.print(f"{iid} ended {state.value}"
                  + (f": {record.error}" if record.error is not None else ""))
    return EXIT_OK if state is OrchestrationState.COMPLETED else EXIT_FAILED


class _Watcher:
    """What has been shown of one instance: its execution and how many of its events."""

    def __init__(self, env: Env, instance_id: str) -> None:
        self.env = env
        self.instance_id = instance_id
        self.execution: int | None = None
        self.shown = 0  # events of ``execution`` printed so far

    async def look(self) -> InstanceRecord:
        rec = await self.env.client.provider.get_instance(self.instance_id)
        if rec is None:  # never there, or deleted while watched
            raise InstanceNotFound(self.instance_id)
        return rec

    async def catch_up(self, rec: InstanceRecord) -> bool:
        """Print what the store holds beyond what was shown; True if anything was."""
        news = False
        if self.execution is not None and rec.execution_id != self.execution:
            # Continued as new: the rest of the old execution first, then the new one.
            news = await self._show(self.execution) or news
            self.execution, self.shown = None, 0
        if self.execution is None:
            self.execution = rec.execution_id
            if not self.env.as_json:
                self.env.print(f"{self.instance_id}  {name_at(rec.name, rec.version)}  "
                               f"execution {rec.execution_id}")
            news = True
        if rec.history_len > self.shown:
            news = await self._show(self.execution) or news
        return news

    async def _show(self, execution: int) -> bool:
        events = await self.env.client.read_history(self.instance_id, execution)
        if len(events) <= self.shown:
            return False
        env = self.env
        if env.as_json:
            for ev in events[self.shown:]:
                env.print(dumps({"instance_id": self.instance_id,
                                       "execution_id": execution, **event_json(ev)}))
        else:
            width = 0 if env.args.full else 72
            lines = format_timeline(events, width=width, indent="  ", id_width=4)
            for line in lines[self.shown:]:
                env.print(line)
        env.out.flush()  # a reader at the other end of a pipe sees each event at once
        self.shown = len(events)
        return True

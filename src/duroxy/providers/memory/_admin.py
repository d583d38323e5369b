"""Executions, sizes and key-value state of the in-memory reference provider: a part of
:class:`~.provider.InMemoryProvider`, kept apart from its queues. Every
method does its work under the provider's one lock, as the rest of it does."""

from __future__ import annotations

from ...errors import PayloadError
from ...history import EventRaised, QueueEventDelivered, decode_event, decode_message
from ..base import ExecutionRecord, InstanceStats, KvEntry
from ._state import Host

__all__ = ["MemoryAdmin"]



def _ended_before(last_event: str, before_ms: int) -> bool:
    """Whether an execution whose last stored event is ``last_event`` ended before
    ``before_ms`` (an event that does not decode: not known to have ended)."""
    try:
        return decode_event(last_event).ts < before_ms
    except PayloadError:
        return False


class MemoryAdmin:
    """Mixed into InMemoryProvider."""

    async def get_execution(self: Host, instance_id: str, execution_id: int
                            ) -> ExecutionRecord | None:
        with self._lock:
            self._check_open()
            events = list(self._history.get(instance_id, {}).get(execution_id, ()))
        if not events:
            return None
        return ExecutionRecord(execution_id, len(events), decode_event(events[0][1]),
                               decode_event(events[-1][1]))

    async def prune_executions(self: Host, instance_id: str, keep_last: int,
                               ended_before_ms: int | None = None) -> tuple[int, int] | None:
        self._writable("prune_executions")
        with self._lock:
            self._check_open()
            rec = self._records.get(instance_id)
            if rec is None:
                return None
            execs = self._history.get(instance_id, {})
            past = sorted(e for e, evs in execs.items() if evs and e < rec.execution_id)
            doomed = past[:max(len(past) - max(keep_last - 1, 0), 0)]
            if ended_before_ms is not None:
                doomed = [e for e in doomed if _ended_before(execs[e][-1][1], ended_before_ms)]
            events = 0
            for e in doomed:
                events += len(execs.pop(e))
            return len(doomed), events

    async def get_instance_stats(self: Host, instance_id: str) -> InstanceStats | None:
        with self._lock:
            self._check_open()
            rec = self._records.get(instance_id)
            if rec is None:
                return None
            execs = self._history.get(instance_id, {})
            current = execs.get(rec.execution_id, [])
            texts = [m.text for m in self._messages.values() if m.instance_id == instance_id]
            kv = dict(self._kv.get(instance_id, {}))
            unread = rec.unread
            history = (len(current), sum(len(t.encode("utf-8", "surrogatepass"))
                                         for _, t in current))
            execution_count = sum(1 for evs in execs.values() if evs)
        mail = 0
        for text in texts:
            try:
                event = decode_message(instance_id, text).event
            except PayloadError:
                continue
            mail += isinstance(event, (EventRaised, QueueEventDelivered))
        return InstanceStats(
            history_event_count=history[0], history_size_bytes=history[1], queued_mail=mail,
            unread=unread, kv_key_count=len(kv),
            kv_value_bytes=sum(len(e.value.encode("utf-8", "surrogatepass"))
                               for e in kv.values()),
            execution_count=execution_count)

    async def read_kv(self: Host, instance_id: str, key: str | None = None
                      ) -> dict[str, KvEntry] | None:
        with self._lock:
            self._check_open()
            if instance_id not in self._records:
                return None
            kv = self._kv.get(instance_id, {})
            if key is not None:
                return {key: kv[key]} if key in kv else {}
            return {k: kv[k] for k in sorted(kv)}

    async def read_kv_base(self: Host, instance_id: str) -> dict[str, KvEntry]:
        with self._lock:
            self._check_open()
            rec = self._records.get(instance_id)
            return dict(rec.kv_base) if rec is not None and rec.kv_base else {}

"""Limits that user code meets, each raised or enforced where it is named."""

from __future__ import annotations

__all__ = ["MAX_CARRY_FORWARD_EVENTS", "MAX_PAYLOAD_BYTES"]

#: How many unread messages (events raised and never waited for) ``continue_as_new``
#: carries to the next execution, oldest first; newer ones are dropped with a warning.
#: Duroxide carries the same number (v0.1.29 ``limits.rs``), in history order.
MAX_CARRY_FORWARD_EVENTS = 100

#: The largest payload duroxy stores (an input, output, event's data or custom status, as
#: UTF-8 JSON text): 16 MiB. The codec refuses a bigger one with ``PayloadError`` where
#: it is made, before anything is stored. Why this size: a turn writes each payload it
#: records a few times (the history event, the activity work or message carrying it) and
#: must commit within ``orchestration_lock_timeout``; at 16 MiB a turn takes a second or
#: two on PostgreSQL, at 64 MiB it outlasts the default 5 s lock and never commits.
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024

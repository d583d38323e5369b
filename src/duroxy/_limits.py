"""Limits that user code meets, each raised or enforced where it is named."""

from __future__ import annotations

__all__ = ["MAX_CARRY_FORWARD_EVENTS", "MAX_KV_KEYS", "MAX_KV_VALUE_BYTES", "MAX_PAYLOAD_BYTES",
           "MAX_TAG_NAME_BYTES", "MAX_WORKER_TAGS"]

#: How many unread messages (queue messages never dequeued and events raised and never
#: waited for, counted together in arrival order) ``continue_as_new`` carries to the next
#: execution, oldest first; newer ones are dropped with a warning each. Duroxide carries
#: the same number (v0.1.29 ``limits.rs``), in history order.
MAX_CARRY_FORWARD_EVENTS = 100

#: The largest payload duroxy stores (an input, output, event's data or custom status, as
#: UTF-8 JSON text): 16 MiB. The codec refuses a bigger one with ``PayloadError`` where
#: it is made, before anything is stored. Why this size: a turn writes each payload it
#: records a few times (the history event, the activity work or message carrying it) and
#: must commit within ``orchestration_lock_timeout``; at 16 MiB a turn takes a second or
#: two on PostgreSQL, at 64 MiB it outlasts the default 5 s lock and never commits.
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024

#: The most keys an instance's key-value state holds: ``ctx.set_kv_value`` of a new key
#: past it raises ``ValueError`` at the call (Duroxide v0.1.29 ``limits.rs``).
MAX_KV_KEYS = 150

#: The largest KV value, as UTF-8 bytes of its JSON text: ``ctx.set_kv_value`` of a
#: bigger one raises ``ValueError`` at the call (Duroxide v0.1.29 ``limits.rs``).
MAX_KV_VALUE_BYTES = 65_536

#: The most tags one ``TagFilter`` (``tags()``, ``default_and()``) names: a fetch asks
#: the store once per tag, so the number is kept small (Duroxide ``MAX_WORKER_TAGS``).
MAX_WORKER_TAGS = 5

#: The longest tag, in UTF-8 bytes (Duroxide ``MAX_TAG_NAME_BYTES``): a tag is a column
#: of the activity queue and the first key of its routing index.
MAX_TAG_NAME_BYTES = 256

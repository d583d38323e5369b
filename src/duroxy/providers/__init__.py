"""Stores: the provider contract and its implementations.

``duroxy.providers.memory.InMemoryProvider`` (reference semantics, for tests),
``duroxy.providers.sqlite.SqliteProvider`` (embedded default) and
``duroxy.providers.postgres.PostgresProvider`` (the ``postgres`` extra).
"""

from .base import (
    TERMINAL_STATES,
    ActivityItem,
    InstanceRecord,
    OrchestrationCommit,
    OrchestrationItem,
    Provider,
    QueuedMessage,
)

__all__ = [
    "TERMINAL_STATES",
    "ActivityItem",
    "InstanceRecord",
    "OrchestrationCommit",
    "OrchestrationItem",
    "Provider",
    "QueuedMessage",
]

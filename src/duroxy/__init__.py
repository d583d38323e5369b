"""duroxy: durable execution for Python.

Orchestrations are ``async def (ctx, input)`` functions replayed from a recorded
history; activities are ``async def``/``def (ctx, input)`` functions that run at least
once. Every name in ``__all__`` is public and importable from ``duroxy``; the README
and the documentation site are the guide, and each name's docstring states what it
promises.
"""

from ._admin import DeleteResult, ExecutionInfo, InstanceTree, OrchestrationStats, PruneResult
from ._connect import connect
from ._engine import OrchestrationContext
from ._limits import (
    MAX_CARRY_FORWARD_EVENTS,
    MAX_KV_KEYS,
    MAX_KV_VALUE_BYTES,
    MAX_TAG_NAME_BYTES,
    MAX_WORKER_TAGS,
)
from ._tracing import init_tracing
from ._version import __version__
from .client import (
    Client,
    InstanceInfo,
    InstancePage,
    OrchestrationState,
    OrchestrationStatus,
    WorkerInfo,
)
from .errors import (
    ActivityFailed,
    ConfigurationError,
    DuroxyError,
    ErrorDetails,
    InstanceAlreadyExists,
    InstanceNotFound,
    LockLost,
    NondeterminismError,
    NonDurableAwait,
    NonRetryableError,
    NotRegistered,
    PayloadError,
    ProviderError,
    SubOrchestrationFailed,
)
from .options import BackoffStrategy, RetryPolicy, RuntimeOptions, TagFilter
from .runtime import (
    ActivityContext,
    ActivityRegistry,
    MetricsSnapshot,
    OrchestrationRegistry,
    Runtime,
)

__all__ = [
    "MAX_CARRY_FORWARD_EVENTS",
    "MAX_KV_KEYS",
    "MAX_KV_VALUE_BYTES",
    "MAX_TAG_NAME_BYTES",
    "MAX_WORKER_TAGS",
    "ActivityContext",
    "ActivityFailed",
    "ActivityRegistry",
    "BackoffStrategy",
    "Client",
    "ConfigurationError",
    "DeleteResult",
    "DuroxyError",
    "ErrorDetails",
    "ExecutionInfo",
    "InstanceAlreadyExists",
    "InstanceInfo",
    "InstanceNotFound",
    "InstancePage",
    "InstanceTree",
    "LockLost",
    "MetricsSnapshot",
    "NonDurableAwait",
    "NonRetryableError",
    "NondeterminismError",
    "NotRegistered",
    "OrchestrationContext",
    "OrchestrationRegistry",
    "OrchestrationState",
    "OrchestrationStats",
    "OrchestrationStatus",
    "PayloadError",
    "ProviderError",
    "PruneResult",
    "RetryPolicy",
    "Runtime",
    "RuntimeOptions",
    "SubOrchestrationFailed",
    "TagFilter",
    "WorkerInfo",
    "__version__",
    "connect",
    "init_tracing",
]

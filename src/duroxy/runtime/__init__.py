"""The runtime: dispatchers, registries and the activity context."""

from .activity import ActivityContext
from .metrics import MetricsSnapshot
from .registry import ActivityRegistry, OrchestrationRegistry
from .runtime import Runtime

__all__ = ["ActivityContext", "ActivityRegistry", "MetricsSnapshot", "OrchestrationRegistry",
           "Runtime"]

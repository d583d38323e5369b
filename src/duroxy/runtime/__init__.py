"""The runtime: dispatchers, registries and the activity context."""

from .activity import ActivityContext
from .registry import ActivityRegistry, OrchestrationRegistry
from .runtime import Runtime

__all__ = ["ActivityContext", "ActivityRegistry", "OrchestrationRegistry", "Runtime"]

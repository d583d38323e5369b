"""The replay engine: history in, decisions out. Imports nothing of the runtime or
the providers (a test walks the imports to keep it so)."""

from .context import OrchestrationContext
from .execution import ContinueAsNew, DurableFuture, OrchestrationExecution, TurnResult

__all__ = [
    "ContinueAsNew",
    "DurableFuture",
    "OrchestrationContext",
    "OrchestrationExecution",
    "TurnResult",
]

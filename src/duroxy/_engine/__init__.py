"""The replay engine: history in, decisions out. Imports nothing of the runtime or
the providers (a test walks the imports to keep it so).

Rooms, imported one way (each only from those after it):

* ``execution``: the core; one execution of one orchestration, turn by turn;
* ``context``: ``OrchestrationContext``, the public face, speaking to the execution
  through the ``port`` only;
* ``loop``: the deterministic asyncio loop orchestration code runs on;
* ``matching``: nondeterminism told in words;
* ``futures``: the leaf; durable futures and control-flow exceptions.
"""

from .context import OrchestrationContext
from .execution import OrchestrationExecution, TurnResult
from .futures import ContinueAsNew, DurableFuture

__all__ = [
    "ContinueAsNew",
    "DurableFuture",
    "OrchestrationContext",
    "OrchestrationExecution",
    "TurnResult",
]

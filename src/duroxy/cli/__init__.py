"""The ``duroxy`` command line: run workers, start and watch instances, read histories.

Exit codes (stable, for scripts):

====  ==============================================================================
0     success
1     ``start --wait`` / ``wait``: the instance ended FAILED or CANCELLED;
      ``demo``: an example instance did not end as expected
2     usage error: bad arguments, malformed JSON, an unloadable ``MODULE:ATTR``
3     no instance with that id
4     timed out waiting
5     the store failed, is missing or is not a duroxy store, has a schema newer than
      this duroxy knows, or the request was refused (e.g. deleting a running
      instance without ``--force``, starting a taken id)
====  ==============================================================================

``status`` only reads: it exits 0 whenever it could read the instance, whatever its
state (use ``--json`` and look at ``state``, or ``wait``, to branch on the outcome).

The reading commands (``status``, ``list``, ``history``, ``wait``, ``workers``) open the store
read-only (``connect(url, read_only=True)``): they never create, migrate or change it,
so pointing them at the wrong file (another application's database) changes nothing
and exits 5, naming the file and what is wrong with it. The other commands open it
for writing, creating and migrating it as needed.
"""

from __future__ import annotations

from .._render import format_timeline
from ._app import build_parser, main
from ._common import (
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    load_registries,
)

__all__ = [
    "EXIT_ERROR",
    "EXIT_FAILED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "build_parser",
    "format_timeline",
    "load_registries",
    "main",
]

"""Helpers for testing with duroxy, and for changing orchestration code safely.

* :class:`OrchestrationEnvironment` runs orchestrations and activities on a store of
  its own, on a virtual clock that skips ahead whenever nothing else can run, so a
  30-day timer takes no time in a test;
* :class:`ActivityEnvironment` runs one activity with a test context, as the runtime
  would run it;
* :class:`Replayer` replays recorded histories (``duroxy export``, or a store) against
  the code of today: what it cannot replay, a deployment would fail for nondeterminism;
* :func:`lint` finds calls that make an orchestration nondeterministic, by reading its
  source (``duroxy lint`` on the command line);
* :mod:`duroxy.testing.provider_suite` holds the conformance suite every store passes
  (for authors of stores; it needs pytest and is imported only when asked for).
"""

from __future__ import annotations

from ._activity import ActivityEnvironment
from ._environment import OrchestrationEnvironment
from ._lint import LintFinding, lint
from ._replay import Replayer, ReplayReport, ReplayResult

__all__ = [
    "ActivityEnvironment",
    "LintFinding",
    "OrchestrationEnvironment",
    "ReplayReport",
    "ReplayResult",
    "Replayer",
    "lint",
]

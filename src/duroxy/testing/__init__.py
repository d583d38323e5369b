"""Helpers for testing with duroxy.

* :class:`ActivityEnvironment` runs one activity with a test context, as the runtime
  would run it;
* :func:`lint` finds calls that make an orchestration nondeterministic, by reading its
  source (``duroxy lint`` on the command line);
* :mod:`duroxy.testing.provider_suite` holds the conformance suite every store passes
  (for authors of stores; it needs pytest and is imported only when asked for).
"""

from __future__ import annotations

from ._activity import ActivityEnvironment
from ._lint import LintFinding, lint

__all__ = ["ActivityEnvironment", "LintFinding", "lint"]

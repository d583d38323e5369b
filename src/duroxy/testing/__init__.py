"""Helpers for testing with duroxy.

:mod:`duroxy.testing.provider_suite` holds the conformance suite every store passes
(for authors of stores; it needs pytest and is imported only when asked for).
"""

from __future__ import annotations

__all__: list[str] = []

"""Helpers for testing duroxy stores and applications.

:class:`ProviderConformance` (in :mod:`duroxy.testing.conformance`) is the pytest
suite every provider passes. It is imported lazily so that ``import duroxy.testing``
does not need pytest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .conformance import ProviderConformance

__all__ = ["ProviderConformance"]


def __getattr__(name: str) -> Any:
    if name == "ProviderConformance":
        from .conformance import ProviderConformance

        return ProviderConformance
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

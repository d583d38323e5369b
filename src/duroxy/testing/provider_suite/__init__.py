"""The provider conformance suite: one pytest base class every store must pass.

Usage, in a provider's test module::

    import pytest
    from duroxy.testing.provider_suite import ProviderConformance

    class TestMyStore(ProviderConformance):
        @pytest.fixture
        async def provider(self):
            store = MyStore(...)          # fresh and empty for every test
            yield store
            await store.close()

        # optional: let the suite store undecodable data (otherwise those tests skip)
        async def corrupt_history(self, provider, instance_id): ...
        async def corrupt_messages(self, provider, instance_id): ...

        # optional: a provider opened read-only on the same store (otherwise skipped)
        async def open_read_only(self, provider): ...

        lock_slack = 0.05  # extra wait past lock expiry for a store with its own clock

The suite uses only the provider contract (:mod:`duroxy.providers.base`) and those
hooks; a store that offers the :class:`~duroxy.providers.base.FastPath` or the
:class:`~duroxy.providers.pending.PendingWork` capability is tested on it too. Waits
are real but short: lock expiry and visibility tests use 0.2 s locks.
Every test builds its own instance ids and, where it lists or purges, its own
orchestration names.
"""

from __future__ import annotations

from .activity import ActivityQueueTests
from .data import DataTests
from .fastpath import FastPathTests, TimerInPlaceTests
from .management import ManagementTests
from .orchestration import OrchestrationQueueTests
from .pending import PendingWorkTests
from .readonly import ReadOnlyTests
from .routing import RoutingTests
from .state import StateTests
from .support import LOCK, ConformanceBase
from .workers import WorkerTests

__all__ = ["LOCK", "ConformanceBase", "ProviderConformance"]


class ProviderConformance(OrchestrationQueueTests, ActivityQueueTests, ManagementTests,
                          DataTests, FastPathTests, TimerInPlaceTests, ReadOnlyTests,
                          WorkerTests, StateTests, PendingWorkTests, RoutingTests):
    """Every conformance test. Subclass it (with a name starting with ``Test``) and
    supply the ``provider`` fixture."""

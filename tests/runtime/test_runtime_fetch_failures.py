"""A store that fails for a while (an outage, a full disk): the dispatchers keep trying,
and the log tells the story once, not a traceback a second."""

from __future__ import annotations

import asyncio
import logging

import pytest

from duroxy import RuntimeOptions
from duroxy.errors import ProviderError
from duroxy.runtime.dispatch import FetchLoop, Slots, TaskSet, log_failure
from duroxy.runtime.wake import Wake


async def test_an_outage_logs_one_traceback_then_a_line_a_failure_and_its_end(
        caplog: pytest.LogCaptureFixture) -> None:
    wake = Wake(asyncio.get_running_loop())
    fetches = 0
    ran: list[str] = []
    loop: FetchLoop[str]

    async def fetch(limit: int, wait: float) -> list[str]:
        nonlocal fetches
        fetches += 1
        if fetches <= 3:
            wake.set()  # tried again at once rather than a second later
            raise ProviderError(f"store down ({fetches})", retryable=True)
        if fetches == 4:
            return ["item"]
        loop.stop()
        return []

    async def run(item: str) -> None:
        ran.append(item)

    tasks = TaskSet()
    loop = FetchLoop("orchestration", fetch, run, wake, Slots(2), False,
                     RuntimeOptions(poll_interval=0.01), tasks)
    with caplog.at_level(logging.INFO, logger="duroxy.runtime"):
        await asyncio.wait_for(loop.run(), 10)
        await asyncio.gather(*tasks.tasks)
    assert ran == ["item"] and fetches == 5
    told = [(r.levelname, r.exc_info is not None, r.getMessage())
            for r in caplog.records if r.name == "duroxy.runtime"]
    assert [(level, traced) for level, traced, _ in told] == [
        ("ERROR", True), ("WARNING", False), ("WARNING", False), ("WARNING", False)]
    assert told[0][2] == "fetching orchestration work failed; retrying"
    assert "failed again (2 in a row" in told[1][2] and "store down (2)" in told[1][2]
    assert "failed again (3 in a row" in told[2][2] and "store down (3)" in told[2][2]
    assert "works again, after 3 failed attempts" in told[3][2]


def test_a_store_trouble_is_one_line_and_anything_else_a_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    failures: list[Exception] = [
        ProviderError("PostgreSQL store: DiskFull: could not extend file", retryable=True),
        ProviderError("PostgreSQL store: duplicate key"),  # not retryable: a bug's sign
        ValueError("a bug"),
    ]
    with caplog.at_level(logging.INFO, logger="duroxy.runtime"):
        for failure in failures:
            try:
                raise failure
            except Exception:
                log_failure("turn for %r failed; releasing it", "order-1")
    told = [(r.levelname, r.exc_info is not None, r.getMessage())
            for r in caplog.records if r.name == "duroxy.runtime"]
    assert told == [
        ("WARNING", False, "turn for 'order-1' failed; releasing it (ProviderError: "
                           "PostgreSQL store: DiskFull: could not extend file)"),
        ("ERROR", True, "turn for 'order-1' failed; releasing it"),
        ("ERROR", True, "turn for 'order-1' failed; releasing it"),
    ]

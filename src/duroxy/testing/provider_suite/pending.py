"""Conformance tests for the optional ``PendingWork`` capability: what a store holds now
and when its next work falls due (the time-skipping test environment moves its clock
by it). A store without the capability skips them. Times are compared with this
process's clock, with slack for a store that reads its own (a database's)."""

from __future__ import annotations

import time

import pytest

from ...providers.base import Provider
from ...providers.pending import PendingWork, PendingWorkReport
from .activity import fetch_activity
from .support import (
    HOLD,
    ConformanceBase,
    commit,
    create,
    fetch_one,
    raised,
    started,
    uid,
    work,
)

__all__ = ["PendingWorkTests"]

#: How far a store's clock may be from this process's (seconds).
SLACK = 5.0
#: A time to come, far beyond any slack (seconds from now).
LATER = 1000.0


async def _report(provider: Provider) -> PendingWorkReport:
    if not isinstance(provider, PendingWork):
        pytest.skip(f"{type(provider).__name__} does not report pending work")
    return await provider.pending_work()


def _due_now(report: PendingWorkReport) -> bool:
    return report.due_at is not None and report.due_at <= time.time() + SLACK


def _due_later(report: PendingWorkReport, seconds: float = LATER) -> bool:
    at = time.time() + seconds
    return report.due_at is not None and at - SLACK <= report.due_at <= at + SLACK


class PendingWorkTests(ConformanceBase):
    async def test_an_empty_store_holds_nothing_and_has_nothing_due(
            self, provider: Provider) -> None:
        assert await _report(provider) == PendingWorkReport(0, None)

    async def test_a_queued_start_is_due_now_and_its_turn_is_held(
            self, provider: Provider) -> None:
        await _report(provider)
        iid = uid()
        await create(provider, iid)
        report = await _report(provider)
        assert report.held == 0 and _due_now(report)
        item = await fetch_one(provider, HOLD)
        assert (await _report(provider)).held == 1
        # the turn schedules a timer: nothing is held, and it falls due later
        timer = raised(iid, "timer", visible_at=time.time() + LATER)
        await provider.ack_orchestration_item(item.lock_token, commit(started(),
                                                                      messages=[timer]))
        report = await _report(provider)
        assert report.held == 0 and _due_later(report), report

    async def test_a_cool_down_is_due_when_it_ends_and_holds_nothing(
            self, provider: Provider) -> None:
        await _report(provider)
        iid = uid()
        await create(provider, iid)
        item = await fetch_one(provider, HOLD)
        await provider.abandon_orchestration_item(item.lock_token, delay=LATER)
        report = await _report(provider)
        # the start is visible, but the instance may not be fetched before then
        assert report.held == 0 and _due_later(report), report

    async def test_activities_are_due_until_fetched_then_held(
            self, provider: Provider) -> None:
        await _report(provider)
        iid = uid()
        await create(provider, iid)
        item = await fetch_one(provider, HOLD)
        await provider.ack_orchestration_item(
            item.lock_token, commit(started(), activities=[work(iid)]))
        report = await _report(provider)
        assert report.held == 0 and _due_now(report)
        got = await fetch_activity(provider, HOLD)
        assert (await _report(provider)) == PendingWorkReport(1, None)
        await provider.abandon_activity(got.lock_token, delay=LATER)
        report = await _report(provider)
        assert report.held == 0 and _due_later(report), report

    async def test_a_later_message_of_an_ended_instance_counts_for_nothing(
            self, provider: Provider) -> None:
        await _report(provider)
        iid = uid()
        await create(provider, iid)
        item = await fetch_one(provider, HOLD)
        late = raised(iid, "timer", visible_at=time.time() + LATER)
        await provider.ack_orchestration_item(
            item.lock_token, commit(started(), state="COMPLETED", output="1",
                                    messages=[late]))
        assert await _report(provider) == PendingWorkReport(0, None)
        # a message visible now still counts: a turn takes (and discards) it
        await provider.enqueue_orchestrator_message(raised(iid, "now"))
        report = await _report(provider)
        assert report.held == 0 and _due_now(report)

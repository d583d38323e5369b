"""Conformance tests for activity routing: the tag and session of queued work, fetches
by route (tag filters, session owners, the cap on new sessions), and session leases
(claim, expiry, renewal, release)."""

from __future__ import annotations

import pytest

from ...errors import LockLost
from ...history import ActivityCompleted, ActivityWork
from ...options import TagFilter
from ...providers.base import ActivityItem, ActivityRoute, Provider
from ...providers.pending import PendingWork
from .support import (
    HOLD,
    LOCK,
    TS,
    ConformanceBase,
    activity_completion,
    events_of,
    fetch_one,
    first_turn,
    scheduled,
    uid,
    work,
)

__all__ = ["RoutingTests"]


def route(filt: TagFilter = TagFilter.ANY, owner: str | None = None, new_sessions: int = 10,
          lease: float = HOLD) -> ActivityRoute:
    return ActivityRoute(filt, owner, new_sessions if owner is not None else 0, lease)


async def queue(provider: Provider, *routing: tuple[str | None, str | None]
                ) -> list[ActivityWork]:
    """One instance's first turn scheduling one activity per ``(tag, session_id)``, in
    that order (event ids 2, 3 ...); returns the work items."""
    iid = uid()
    works = [work(iid, 2 + n, name=f"act{n}", tag=tag, session_id=sid)
             for n, (tag, sid) in enumerate(routing)]
    await first_turn(provider, iid, *[scheduled(w.event_id, w.name) for w in works],
                     activities=works)
    return works


async def fetch(provider: Provider, r: ActivityRoute | None, limit: int = 10,
                lock_timeout: float = HOLD) -> list[ActivityItem]:
    return await provider.fetch_activity_items(lock_timeout, limit, route=r)


def names(items: list[ActivityItem]) -> list[str]:
    return [i.work.name for i in items]


class RoutingTests(ConformanceBase):
    async def test_routed_work_comes_back_with_its_tag_and_session(
            self, provider: Provider) -> None:
        sid = uid("s")
        works = await queue(provider, ("gpu", None), (None, sid), ("gpu", sid))
        items = await fetch(provider, route(owner="a"))
        assert [i.work for i in items] == works
        assert [(i.work.tag, i.work.session_id) for i in items] == [
            ("gpu", None), (None, sid), ("gpu", sid)]

    async def test_a_fetch_without_a_route_takes_untagged_work_without_a_session_only(
            self, provider: Provider) -> None:
        await queue(provider, ("gpu", None), (None, uid("s")), (None, None))
        assert names(await fetch(provider, None)) == ["act2"]
        assert await fetch(provider, None) == []

    async def test_tag_filters_take_what_they_accept(self, provider: Provider) -> None:
        await queue(provider, (None, None), ("gpu", None), ("cpu", None), ("tpu", None))
        cases = [(TagFilter.NONE, []), (TagFilter.DEFAULT_ONLY, ["act0"]),
                 (TagFilter.tags(["gpu"]), ["act1"]),
                 (TagFilter.tags(["cpu", "gpu"]), ["act1", "act2"]),
                 (TagFilter.default_and(["tpu"]), ["act0", "act3"]),
                 (TagFilter.ANY, ["act0", "act1", "act2", "act3"])]
        for filt, expected in cases:
            items = await fetch(provider, route(filt))
            assert names(items) == expected, filt
            for item in items:  # back in the queue for the next filter
                await provider.abandon_activity(item.lock_token, ignore_attempt=True)

    async def test_a_routed_fetch_takes_the_oldest_first_across_kinds_of_work(
            self, provider: Provider) -> None:
        sid = uid("s")
        await queue(provider, (None, None), ("gpu", None), (None, sid), ("gpu", sid),
                    (None, None))
        got: list[str] = []
        for _ in range(5):
            got += names(await fetch(provider, route(owner="a"), limit=1))
        assert got == ["act0", "act1", "act2", "act3", "act4"]
        assert await fetch(provider, route(owner="a")) == []

    async def test_session_work_goes_only_to_an_owner(self, provider: Provider) -> None:
        await queue(provider, (None, uid("s")), ("gpu", uid("s")))
        assert await fetch(provider, route(TagFilter.ANY)) == []
        assert names(await fetch(provider, route(owner="a"))) == ["act0", "act1"]

    async def test_the_fetch_that_takes_a_free_sessions_work_claims_the_session(
            self, provider: Provider) -> None:
        sid = uid("s")
        await queue(provider, (None, sid), (None, sid), (None, sid))
        assert names(await fetch(provider, route(owner="a"), limit=1)) == ["act0"]
        # another owner finds nothing of it, the owner finds the rest
        assert await fetch(provider, route(owner="b")) == []
        assert names(await fetch(provider, route(owner="a"), limit=1)) == ["act1"]
        assert await fetch(provider, route(owner="b")) == []
        assert names(await fetch(provider, route(owner="a"))) == ["act2"]

    async def test_a_fetch_claims_at_most_new_sessions_sessions_the_first_in_order(
            self, provider: Provider) -> None:
        s1, s2, s3 = uid("s1"), uid("s2"), uid("s3")
        await queue(provider, (None, s1), (None, s2), (None, None), (None, s3), (None, s1),
                    (None, s2))
        items = await fetch(provider, route(owner="a", new_sessions=2))
        assert {i.work.session_id for i in items} <= {s1, s2, None}
        assert "act0" in names(items) and "act2" in names(items)
        rest = names(items) + names(await fetch(provider, route(owner="a", new_sessions=0)))
        # at its cap the owner still takes the work of its sessions and plain work
        assert sorted(rest) == ["act0", "act1", "act2", "act4", "act5"]
        # the third session was never claimed: another owner takes it
        assert names(await fetch(provider, route(owner="b"))) == ["act3"]

    async def test_new_sessions_0_takes_no_free_session(self, provider: Provider) -> None:
        await queue(provider, (None, uid("s")), (None, None))
        assert names(await fetch(provider, route(owner="a", new_sessions=0))) == ["act1"]
        assert names(await fetch(provider, route(owner="b", new_sessions=1))) == ["act0"]

    async def test_tagged_session_work_needs_both_the_tag_and_the_session(
            self, provider: Provider) -> None:
        sid = uid("s")
        await queue(provider, ("gpu", sid))
        assert await fetch(provider, route(TagFilter.DEFAULT_ONLY, owner="a")) == []
        assert await fetch(provider, route(TagFilter.tags(["gpu"]))) == []
        assert names(await fetch(provider, route(TagFilter.tags(["gpu"]), owner="a"))) == [
            "act0"]

    async def test_an_ended_lease_frees_the_session(self, provider: Provider) -> None:
        sid = uid("s")
        await queue(provider, (None, sid), (None, sid))
        assert names(await fetch(provider, route(owner="a", lease=LOCK), limit=1)) == ["act0"]
        assert await fetch(provider, route(owner="b")) == []
        await self.expire(LOCK)
        assert names(await fetch(provider, route(owner="b"))) == ["act1"]
        # b holds it now: a's renewal finds it gone
        assert await provider.renew_sessions("a", [sid], HOLD) == []

    async def test_renewal_keeps_a_session_past_its_first_lease(
            self, provider: Provider) -> None:
        sid, other = uid("s"), uid("s")
        await queue(provider, (None, sid), (None, sid))
        assert names(await fetch(provider, route(owner="a", lease=LOCK), limit=1)) == ["act0"]
        assert await provider.renew_sessions("a", [sid, other], HOLD) == [sid]
        await self.expire(LOCK)
        assert await fetch(provider, route(owner="b")) == []
        assert names(await fetch(provider, route(owner="a"))) == ["act1"]

    async def test_release_frees_the_owners_sessions(self, provider: Provider) -> None:
        s1, s2 = uid("s1"), uid("s2")
        await queue(provider, (None, s1), (None, s2), (None, s1), (None, s2))
        assert names(await fetch(provider, route(owner="a"), limit=2)) == ["act0", "act1"]
        assert await provider.release_sessions("b") == 0  # not b's
        assert await provider.release_sessions("a", [s1]) == 1
        assert names(await fetch(provider, route(owner="b"))) == ["act2"]
        assert await provider.release_sessions("a") == 1
        assert names(await fetch(provider, route(owner="b"))) == ["act3"]
        assert await provider.renew_sessions("a", [s1, s2], HOLD) == []
        assert await provider.renew_sessions("b", [s1, s2], HOLD) == sorted([s1, s2])

    async def test_an_owner_restarted_under_its_id_takes_its_sessions_back_at_once(
            self, provider: Provider) -> None:
        sid = uid("s")
        await queue(provider, (None, sid), (None, sid))
        assert names(await fetch(provider, route(owner="node-1"), limit=1)) == ["act0"]
        # a runtime of another id waits for the lease; the same id takes it now
        assert await fetch(provider, route(owner="node-2")) == []
        assert names(await fetch(provider, route(owner="node-1", new_sessions=0))) == ["act1"]

    async def test_an_activity_keeps_its_lock_when_its_session_moves(
            self, provider: Provider) -> None:
        sid = uid("s")
        works = await queue(provider, (None, sid), (None, sid))
        [running] = await fetch(provider, route(owner="a"), limit=1)
        assert await provider.release_sessions("a") == 1
        [moved] = await fetch(provider, route(owner="b"))
        assert moved.work == works[1]
        await provider.renew_activity_lock(running.lock_token, HOLD)
        await provider.ack_activity(running.lock_token, activity_completion(works[0]))
        item = await fetch_one(provider)
        assert events_of(item) == [ActivityCompleted(ts=TS, source_event_id=2,
                                                     result='"done"')]

    async def test_an_abandoned_session_activity_stays_with_its_owner(
            self, provider: Provider) -> None:
        sid = uid("s")
        await queue(provider, (None, sid))
        [item] = await fetch(provider, route(owner="a"))
        await provider.abandon_activity(item.lock_token)
        assert await fetch(provider, route(owner="b")) == []
        [again] = await fetch(provider, route(owner="a"))
        assert again.id == item.id and again.attempt == 2

    async def test_excluded_names_are_left_alone_on_every_route(
            self, provider: Provider) -> None:
        from ...providers.base import ExcludedWork

        await queue(provider, (None, None), ("gpu", None), (None, uid("s")))
        skip = ExcludedWork(activities=frozenset({"act0", "act1", "act2"}))
        assert await provider.fetch_activity_items(HOLD, 10, exclude=skip,
                                                   route=route(owner="a")) == []
        skip = ExcludedWork(activities=frozenset({"act1"}))
        items = await provider.fetch_activity_items(HOLD, 10, exclude=skip,
                                                    route=route(owner="a"))
        assert names(items) == ["act0", "act2"]

    async def test_a_lapsed_activity_lock_redelivers_within_its_session(
            self, provider: Provider) -> None:
        sid = uid("s")
        await queue(provider, (None, sid))
        [old] = await fetch(provider, route(owner="a"), lock_timeout=LOCK)
        await self.expire(LOCK)
        assert await fetch(provider, route(owner="b")) == []
        [new] = await fetch(provider, route(owner="a"))
        assert new.id == old.id and new.attempt == 2
        try:
            await provider.ack_activity(old.lock_token, activity_completion(old.work))
        except LockLost:
            pass
        else:
            raise AssertionError("an expired activity lock acknowledged its work")

    async def test_pending_work_counts_only_the_activities_of_the_tags_it_is_given(
            self, provider: Provider) -> None:
        if not isinstance(provider, PendingWork):
            pytest.skip("this store does not tell its pending work")
        await queue(provider, ("gpu", None))
        everything = await provider.pending_work()
        assert everything.held == 0 and everything.due_at is not None
        for filt in (TagFilter.DEFAULT_ONLY, TagFilter.tags(["cpu"]), TagFilter.NONE):
            assert (await provider.pending_work(filt)).due_at is None, filt
        for filt in (TagFilter.ANY, TagFilter.default_and(["gpu"])):
            assert (await provider.pending_work(filt)).due_at == everything.due_at, filt
        await queue(provider, (None, None))
        assert (await provider.pending_work(TagFilter.DEFAULT_ONLY)).due_at is not None

"""A runtime's heartbeat row, and what it knows of the other live workers (what
``Client.list_workers`` and ``duroxy workers`` show).

Every runtime writes its row when it starts, then every ``heartbeat_interval``, and
marks it stopped when it shuts down; each heartbeat also removes the rows of workers not
seen for a day, and rereads the rows of the others. A heartbeat that fails is logged and
tried again at the next interval: it never stops the runtime.

From the other live workers' rows the runtime learns what it should leave to them: the
orchestrations (names, or versions of a name) and the activities that it has not
registered and a live worker has (a rolling deploy, where old and new code run side by
side). Its fetches then leave that work in the store (:class:`ExcludedWork`), so the
worker that has the code takes it at once. Work this runtime meets without the code
(its view was out of date) goes back to the store without using up an attempt as long
as a live worker has the code; only work that no live worker can run uses up attempts
and ends ``not_registered``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable

from .._names import did_you_mean
from .._semver import parse_semver
from .._version import __version__
from ..options import RuntimeOptions, TagFilter
from ..providers.base import (
    ActivityItem,
    ExcludedWork,
    OrchestrationItem,
    Provider,
    WorkerRecord,
)
from .registry import ActivityRegistry, OrchestrationRegistry

__all__ = ["Heartbeat", "claim_worker_id", "release_worker_id"]

logger = logging.getLogger("duroxy.runtime")

#: Rows of workers not seen for this long are removed (by any runtime's heartbeat).
FORGET_AFTER_S = 24 * 3600.0
#: Work met without the code for it rereads the other workers' rows at most this often
#: (much such work may come at once); the heartbeat rereads them besides.
REFRESH_AT_MOST_S = 1.0
#: How long work handed back is kept from this runtime when its fetches cannot leave it
#: alone (the instance's record names a version this runtime has): long enough for the
#: worker that has the code to take it first, short next to a backoff.
HAND_BACK_DELAY_S = 0.05
# Worker ids of this process's running runtimes: a runtime without an explicit id takes
# host:pid, or host:pid:2, host:pid:3 ... when that one is in use here.
_ids_in_use: collections.Counter[str] = collections.Counter()
# worker_node_id of this process's running runtimes (each must be unique among the live)
_nodes_in_use: set[str] = set()


def claim_worker_id(explicit: str | None) -> str:
    """The worker id of a runtime starting now: ``explicit``, or a default no running
    runtime of this process has."""
    if explicit is not None:
        worker_id = explicit
    else:
        base = f"{socket.gethostname()}:{os.getpid()}"
        worker_id, n = base, 1
        while worker_id in _ids_in_use:
            n += 1
            worker_id = f"{base}:{n}"
    _ids_in_use[worker_id] += 1
    return worker_id


def release_worker_id(worker_id: str) -> None:
    _ids_in_use[worker_id] -= 1
    if _ids_in_use[worker_id] <= 0:
        del _ids_in_use[worker_id]


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


async def claim_node_id(provider: Provider, options: RuntimeOptions) -> None:
    """Refuse (``ValueError``) a ``worker_node_id`` that a live runtime has: another of
    this process, or one whose heartbeat is recent. A row of this host whose process is
    gone (or is this process) is a predecessor that died or stopped: its sessions are
    taken back at once. Call :func:`release_node_id` when the runtime stops."""
    node = options.worker_node_id
    if node is None:
        return
    if node in _nodes_in_use:
        raise ValueError(f"RuntimeOptions.worker_node_id {node!r} is in use by another "
                         "running runtime of this process; give each runtime its own")
    host, pid, now = socket.gethostname(), os.getpid(), time.time()
    for row in await provider.list_workers():
        if row.worker_node_id != node or not row.alive_at(now):
            continue
        if row.host == host and (row.pid == pid or not _pid_running(row.pid)):
            continue  # a predecessor on this host that is gone
        raise ValueError(
            f"RuntimeOptions.worker_node_id {node!r} is in use by the live worker "
            f"{row.worker_id!r} ({row.host}, pid {row.pid}, last seen "
            f"{now - row.last_seen_at:.0f} s ago): give each runtime its own, or start this "
            f"one once that worker stopped (a worker that died counts as live until its "
            f"heartbeat is {3 * row.heartbeat_interval:g} s old)")
    _nodes_in_use.add(node)


def release_node_id(options: RuntimeOptions) -> None:
    if options.worker_node_id is not None:
        _nodes_in_use.discard(options.worker_node_id)


def _overlap(a: TagFilter, b: TagFilter) -> bool:
    """Whether some activity (tagged or not) is accepted by both filters."""
    if a.include_default and b.include_default:
        return True
    if a.any_tag:
        return b.any_tag or bool(b.tags)
    if b.any_tag:
        return bool(a.tags)
    return bool(a.tags & b.tags)


def _filter_of(row: WorkerRecord) -> TagFilter | None:
    """What a live worker's row says it runs (``None``: no activities, or a filter this
    release cannot read)."""
    if row.activity_concurrency <= 0:
        return None
    found = TagFilter.from_text(row.tag_filter)
    return None if found is None or found.runs_nothing else found


def _semver_key(version: str) -> tuple[object, ...]:
    try:
        return (0, parse_semver(version))
    except ValueError:  # a version another worker wrote that this one cannot read
        return (1, version)


class Heartbeat:
    """The heartbeat of one runtime and its view of the others. ``active`` counts the
    runtime's running activities (read at each heartbeat)."""

    def __init__(self, provider: Provider, worker_id: str, options: RuntimeOptions,
                 activities: ActivityRegistry, orchestrations: OrchestrationRegistry,
                 active: Callable[[], int], sessions: Callable[[], int] = lambda: 0) -> None:
        self._provider = provider
        self.worker_id = worker_id
        self._options = options
        self._active = active
        self._sessions = sessions
        self._host = socket.gethostname()
        self._pid = os.getpid()
        self._started_at = time.time()
        # What this runtime runs (a split worker lists only its kind of work).
        self._orchestrations = tuple(f"{n}@{v}" for n in orchestrations.names()
                                     for v in orchestrations.versions(n)
                                     ) if options.runs_orchestrations else ()
        self._activities = tuple(activities.names()) if options.runs_activities else ()
        self._our_versions = {(n, v) for n in orchestrations.names()
                              for v in orchestrations.versions(n)}
        self._our_names = set(orchestrations.names())
        #: what this runtime's fetches leave to other live workers (None: nothing)
        self.exclude: ExcludedWork | None = None
        # What live other workers have registered: "name@version", bare names (of the
        # workers that run turns), activities (of those that run activities).
        self._elsewhere: tuple[frozenset[str], frozenset[str], frozenset[str]] = (
            frozenset(), frozenset(), frozenset())
        # activity name -> the tag filters of the live other workers that have it
        self._filters: dict[str, tuple[TagFilter, ...]] = {}
        #: ids of the other live workers, as of the last reread
        self._others: tuple[str, ...] = ()
        self._demanded_at = -float("inf")  # time.monotonic() of the last refresh_soon reread
        self._refreshing: asyncio.Future[None] | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._warned_shared = False
        # Work handed back in a row: key -> (first, last) time.monotonic() (see hand_back).
        self._handed_back: dict[str, tuple[float, float]] = {}

    # ------------------------------------------------------------------ the row
    def record(self, now: float, *, stopped: bool = False) -> WorkerRecord:
        opts = self._options
        return WorkerRecord(
            worker_id=self.worker_id, host=self._host, pid=self._pid,
            duroxy_version=__version__, started_at=self._started_at, last_seen_at=now,
            heartbeat_interval=opts.heartbeat_interval,
            orchestration_concurrency=opts.orchestration_concurrency,
            activity_concurrency=opts.activity_concurrency,
            tag_filter=(opts.worker_tag_filter if opts.runs_activities
                        else TagFilter.NONE).to_text(),
            orchestrations=self._orchestrations, activities=self._activities,
            active_activities=0 if stopped else self._active(),
            sessions_owned=0 if stopped else self._sessions(),
            worker_node_id=opts.worker_node_id, stopped_at=now if stopped else None)

    async def start(self) -> None:
        """Write the first row and read the others (before the runtime fetches any
        work), then keep beating in the background."""
        await self._beat()
        self._task = asyncio.create_task(self._run(), name=f"duroxy-heartbeat[{self.worker_id}]")

    async def stop(self) -> None:
        """Stop beating and mark the row stopped: other workers stop leaving work to this
        one at their next heartbeat."""
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task  # a heartbeat under way ends first
        try:
            await self._provider.record_heartbeat(self.record(time.time(), stopped=True))
        except Exception as e:
            logger.warning("could not mark worker %r stopped in the store (%s); it shows as "
                           "not alive once its heartbeats are %g s old", self.worker_id, e,
                           3 * self._options.heartbeat_interval)

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._options.heartbeat_interval):
                    await self._stop.wait()
            if not self._stop.is_set():
                await self._beat()

    async def _beat(self) -> None:
        now = time.time()
        try:
            await self._provider.record_heartbeat(self.record(now),
                                                  forget_before=now - FORGET_AFTER_S)
        except Exception as e:
            # Logged once per run of failures; the next interval tries again.
            (logger.debug if self._failing else logger.warning)(
                "writing the heartbeat of worker %r failed (%s); retrying in %g s",
                self.worker_id, e, self._options.heartbeat_interval)
            self._failing = True
        else:
            if self._failing:
                logger.info("the heartbeat of worker %r is written again", self.worker_id)
            self._failing = False
        await self.refresh()

    # ------------------------------------------------------------------ the others
    async def refresh(self) -> None:
        """Reread the other workers' rows (joining a reread under way, which may have
        begun before the caller's news: then a fresh one follows)."""
        if self._refreshing is not None and not self._refreshing.done():
            await asyncio.shield(self._refreshing)
        self._refreshing = asyncio.ensure_future(self._reread())
        await asyncio.shield(self._refreshing)

    async def refresh_soon(self) -> None:
        """For work met without its code: wait for a reread under way, else reread
        unless this did so less than ``REFRESH_AT_MOST_S`` ago."""
        if self._refreshing is not None and not self._refreshing.done():
            await asyncio.shield(self._refreshing)
        elif time.monotonic() - self._demanded_at >= REFRESH_AT_MOST_S:
            self._demanded_at = time.monotonic()
            await self.refresh()

    async def _reread(self) -> None:
        """On failure the view stays as it was."""
        try:
            rows = await self._provider.list_workers()
        except Exception as e:
            logger.debug("reading the workers of the store failed: %s", e)
            return
        self._apply(rows, time.time())

    def _apply(self, rows: list[WorkerRecord], now: float) -> None:
        others = [r for r in rows if r.worker_id != self.worker_id and r.alive_at(now)]
        own = next((r for r in rows if r.worker_id == self.worker_id), None)
        if own is not None and not self._warned_shared and (
                own.host, own.pid, own.started_at) != (self._host, self._pid,
                                                       self._started_at):
            self._warned_shared = True
            logger.warning("another runtime (%s, pid %s) writes its heartbeat as worker %r "
                           "too; give each runtime its own RuntimeOptions.worker_id",
                           own.host, own.pid, self.worker_id)
        # Only what the others run counts: turns on those with turn slots, activities
        # on those that run some (by tag: see runs_activity).
        keys = frozenset(k for r in others if r.orchestration_concurrency > 0
                         for k in r.orchestrations)
        names = frozenset(k.rpartition("@")[0] for k in keys)
        filters: dict[str, list[TagFilter]] = {}
        mine = self._options.worker_tag_filter
        shared: set[str] = set()  # names of workers that run some activity this one runs
        for r in others:
            f = _filter_of(r)
            if f is None:
                continue
            for a in r.activities:
                filters.setdefault(a, []).append(f)
            if _overlap(f, mine):
                shared.update(r.activities)
        self._filters = {a: tuple(fs) for a, fs in filters.items()}
        acts = frozenset(filters)
        self._elsewhere = (keys, names, acts)
        self._others = tuple(r.worker_id for r in others)
        skip_names: set[str] = set()
        skip_versions: set[tuple[str, str]] = set()
        for key in keys:
            name, _, version = key.rpartition("@")  # a version holds no "@"
            if name not in self._our_names:
                skip_names.add(name)
            elif (name, version) not in self._our_versions:
                skip_versions.add((name, version))
        skip_acts = frozenset(shared).difference(self._activities)
        if skip_names or skip_versions or skip_acts:
            self.exclude = ExcludedWork(frozenset(skip_names), frozenset(skip_versions),
                                        frozenset(skip_acts))
        else:
            self.exclude = None

    def runs_orchestration(self, name: str, version: str | None) -> bool:
        """Whether another live worker has registered ``name`` at ``version`` (any
        version when ``None``: the latest is wanted)."""
        keys, names, _ = self._elsewhere
        return name in names if version is None else f"{name}@{version}" in keys

    def runs_activity(self, name: str, tag: str | None = None) -> bool:
        """Whether another live worker has registered activity ``name`` and runs
        activities tagged ``tag`` (``None``: untagged)."""
        return any(f.matches(tag) for f in self._filters.get(name, ()))

    def hand_back(self, key: str, now: float | None = None) -> bool:
        """Whether work ``key`` may go back to the store once more without using up an
        attempt (at ``now``, ``time.monotonic()`` by default). Not once it has gone back
        again and again, with no gap as long as three heartbeat intervals, for longer
        than that: the live worker that has its code should have taken it by then (this
        bounds a hand-back loop between workers that each think the other runs it)."""
        now = time.monotonic() if now is None else now
        horizon = 3 * self._options.heartbeat_interval
        first, last = self._handed_back.get(key, (now, now))
        if now - last > horizon:
            first = now
        self._handed_back[key] = (first, now)
        if len(self._handed_back) > 4096:
            self._handed_back = {k: v for k, v in self._handed_back.items()
                                 if now - v[1] <= horizon}
        return now - first <= horizon

    # ------------------------------------------------------------------ telling users
    def missing(self, kind: str, name: str, version: str | None = None) -> str:
        """Why work for ``kind`` (``"activity"`` or ``"orchestration"``) ``name`` finds
        no worker, for a person: the names registered on the live workers closest to it
        (a typo), and which workers lack it (this one and every other live one, or it
        would have been handed to that one)."""
        if kind == "activity":
            known: set[str] = set(self._activities) | set(self._elsewhere[2])
        else:
            known = set(self._our_names) | set(self._elsewhere[1])
        what = f"{kind} {name!r}"
        guess = "" if name in known else did_you_mean(name, known)
        if version is not None and name in known:
            what = f"version {version!r} of {what}"
            keys = {k for k in self._elsewhere[0] if k.rpartition("@")[0] == name}
            keys |= {f"{n}@{v}" for n, v in self._our_versions if n == name}
            versions = sorted((k.rpartition("@")[2] for k in keys), key=_semver_key)
            guess = f" (registered versions: {', '.join(versions)})"
        workers = ", ".join([f"{self.worker_id} (this one)", *self._others])
        shown = sorted(known)
        listed = ", ".join(repr(n) for n in shown[:20]) + (
            f" and {len(shown) - 20} more" if len(shown) > 20 else "") if shown else "none"
        return (f"{what} is not registered on any running worker{guess}; the workers "
                f"without it: {workers}; the {kind} names they have: {listed}")

    # ------------------------------------------------------------------ handing back
    async def hand_back_turn(self, item: OrchestrationItem, version: str | None) -> bool:
        """Put back a turn whose code (its instance's orchestration at ``version``) this
        runtime lacks, without using up an attempt, when another live worker has
        registered it: True. False when none has (the caller counts the attempt)."""
        inst = item.instance
        assert inst is not None
        if not self.runs_orchestration(inst.name, version):
            await self.refresh_soon()
        if not self.runs_orchestration(inst.name, version) or not self.hand_back(
                item.instance_id):
            return False
        # Fetches leave it alone from now on, unless its record names code this runtime
        # has (a continue-as-new to a version it lacks): then the instance waits a
        # moment, so that the worker that has the code comes first.
        left = self.exclude is not None and self.exclude.excludes_instance(inst.name,
                                                                           inst.version)
        logger.debug("%r: orchestration %r version %s is not registered here; handed back "
                     "to the live worker that has it", item.instance_id, inst.name,
                     version or "(latest)")
        await self._provider.abandon_orchestration_item(
            item.lock_token, 0.0 if left else HAND_BACK_DELAY_S, ignore_attempt=True)
        return True

    async def hand_back_activity(self, item: ActivityItem) -> bool:
        """Put back an activity this runtime has not registered, without using up an
        attempt, when another live worker has: True (from then on this runtime's fetches
        leave that activity alone). False when no live worker has it."""
        work = item.work
        if not self.runs_activity(work.name, work.tag):
            await self.refresh_soon()
        key = f"{work.instance_id}\x00{work.execution_id}\x00{work.event_id}"
        if not self.runs_activity(work.name, work.tag) or not self.hand_back(key):
            return False
        logger.debug("%r: activity %r is not registered here; handed back to the live "
                     "worker that has it", work.instance_id, work.name)
        await self._provider.abandon_activity(item.lock_token, 0.0, ignore_attempt=True)
        return True

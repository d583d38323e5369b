"""Retry policies, backoff strategies and runtime options: frozen value objects."""

from __future__ import annotations

import abc
import dataclasses
import math
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, ClassVar

from ._names import name_problem
from ._tag_filter import TagFilter

__all__ = ["BackoffStrategy", "RetryPolicy", "RuntimeOptions", "TagFilter", "to_seconds"]


#: The longest duration a timer, a retry setting or a lock may have: about 1,000 years
#: (the times they lead to must stay datetimes, and within what the stores can hold).
LONGEST_DURATION_S = 1000 * 365.25 * 86400


def to_seconds(value: timedelta | float | int, what: str = "duration", *,
               finite: bool = False) -> float:
    """A ``timedelta`` or a number of seconds, as float seconds (never negative; with
    ``finite``, at most ``LONGEST_DURATION_S``)."""
    if isinstance(value, timedelta):
        secs = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            secs = float(value)
        except OverflowError:  # an int beyond any float
            secs = math.inf
    else:
        raise TypeError(f"{what} must be a timedelta or seconds, not {type(value).__name__}")
    if secs != secs or secs < 0:
        raise ValueError(f"{what} must be a non-negative duration, got {value!r}")
    if finite and secs > LONGEST_DURATION_S:
        raise ValueError(f"{what} must be at most {LONGEST_DURATION_S:g} s (about 1,000 "
                         f"years), got {value!r}")
    return secs


#: Counts beyond this are refused: the stores keep them as 64-bit integers.
_MAX_COUNT = 2**63 - 1


def check_count(value: object, what: str, least: int) -> None:
    """``ValueError`` unless ``value`` is an int (not a bool) from ``least`` up."""
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= _MAX_COUNT:
        raise ValueError(f"{what} must be an int >= {least}, got {value!r:.80}")


class BackoffStrategy(abc.ABC):
    """How long to wait after failed attempt ``n`` (1-based) before the next one.

    ``BackoffStrategy.Fixed(delay=)``, ``BackoffStrategy.Linear(base=, max=)``,
    ``BackoffStrategy.Exponential(base=, multiplier=, max=)``; durations are
    ``timedelta`` or seconds. Each is an instance of ``BackoffStrategy``.
    """

    @abc.abstractmethod
    def delay_after(self, attempt: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    @dataclass(frozen=True)
    class Fixed:
        delay: timedelta | float = 1.0

        def __post_init__(self) -> None:
            to_seconds(self.delay, "Fixed.delay", finite=True)

        def delay_after(self, attempt: int) -> float:
            return to_seconds(self.delay, "Fixed.delay")

    @dataclass(frozen=True)
    class Linear:
        base: timedelta | float = 1.0
        max: timedelta | float = 60.0

        def __post_init__(self) -> None:
            to_seconds(self.base, "Linear.base", finite=True)
            to_seconds(self.max, "Linear.max", finite=True)

        def delay_after(self, attempt: int) -> float:
            return min(to_seconds(self.base, "Linear.base") * attempt,
                       to_seconds(self.max, "Linear.max"))

    @dataclass(frozen=True)
    class Exponential:
        base: timedelta | float = 1.0
        multiplier: float = 2.0
        max: timedelta | float = 60.0

        def __post_init__(self) -> None:
            to_seconds(self.base, "Exponential.base", finite=True)
            to_seconds(self.max, "Exponential.max", finite=True)
            m = self.multiplier
            if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 < m < math.inf:
                raise ValueError(f"Exponential.multiplier must be a positive finite number, "
                                 f"got {m!r}")

        def delay_after(self, attempt: int) -> float:
            base = to_seconds(self.base, "Exponential.base")
            cap = to_seconds(self.max, "Exponential.max")
            try:
                return float(min(base * self.multiplier ** (attempt - 1), cap))
            except OverflowError:
                return cap


Backoff = BackoffStrategy.Fixed | BackoffStrategy.Linear | BackoffStrategy.Exponential
for _strategy in (BackoffStrategy.Fixed, BackoffStrategy.Linear, BackoffStrategy.Exponential):
    BackoffStrategy.register(_strategy)
del _strategy


#: An entry of ``RetryPolicy.non_retryable``: an exception class, or a type name.
ErrorTypeName = type | str


def _error_type_names(entries: tuple[ErrorTypeName, ...]) -> frozenset[str]:
    """The names ``entries`` stand for: a class by its ``__qualname__`` (what an
    attempt's ``error_type`` records), a string as given; ``TypeError`` otherwise."""
    names = set()
    for entry in entries:
        if isinstance(entry, type):
            names.add(entry.__qualname__)
        elif isinstance(entry, str):
            names.add(entry)
        else:
            raise TypeError(f"non_retryable takes exception classes or type names (str), "
                            f"not {type(entry).__name__}: {entry!r:.80}")
    return frozenset(names)


@dataclass(frozen=True)
class RetryPolicy:
    """``RetryPolicy(max_attempts=3, backoff=..., timeout=None, non_retryable=())``.

    ``timeout`` bounds one attempt: a timed-out attempt is cancelled and counts as failed.
    ``non_retryable`` lists error types that stop the retries at once: a failed attempt
    whose ``error_type`` equals the ``__qualname__`` of a listed class, or a listed
    string, is the last (exact names: a subclass does not match; a timed-out attempt's
    type is ``"TimeoutError"``). The ``ActivityFailed`` raised then has ``retryable``
    false. An activity that raises :class:`~duroxy.NonRetryableError` stops the retries
    whatever this lists.
    Builder spelling as in Duroxide: ``RetryPolicy(5).with_backoff(b).with_timeout(t)``,
    and ``.with_non_retryable(ValueError, "CardDeclined")``.
    """

    max_attempts: int = 3
    backoff: Backoff = dataclasses.field(
        default_factory=lambda: BackoffStrategy.Exponential(base=1.0, multiplier=2.0, max=60.0)
    )
    timeout: timedelta | float | None = None
    non_retryable: tuple[ErrorTypeName, ...] = ()

    def __post_init__(self) -> None:
        check_count(self.max_attempts, "max_attempts", 1)
        if not hasattr(self.backoff, "delay_after"):
            raise TypeError(f"backoff must be a BackoffStrategy, got {self.backoff!r}")
        if self.timeout is not None:
            to_seconds(self.timeout, "timeout", finite=True)
        entries = self.non_retryable
        if isinstance(entries, (type, str)):  # one entry given alone
            entries = (entries,)
        elif not isinstance(entries, tuple):
            try:
                entries = tuple(entries)
            except TypeError:
                raise TypeError(f"non_retryable takes exception classes or type names "
                                f"(str), not {type(entries).__name__}") from None
        object.__setattr__(self, "non_retryable", entries)
        _error_type_names(entries)  # TypeError for a bad entry, now rather than later

    @property
    def non_retryable_names(self) -> frozenset[str]:
        """The error type names that stop the retries (see ``non_retryable``)."""
        return _error_type_names(self.non_retryable)

    def with_non_retryable(self, *types: ErrorTypeName) -> RetryPolicy:
        """This policy with ``non_retryable`` set to ``types`` (classes or names)."""
        return dataclasses.replace(self, non_retryable=types)

    def with_backoff(self, backoff: Backoff) -> RetryPolicy:
        return dataclasses.replace(self, backoff=backoff)

    def with_timeout(self, timeout: timedelta | float | None) -> RetryPolicy:
        return dataclasses.replace(self, timeout=timeout)

    def with_max_attempts(self, max_attempts: int) -> RetryPolicy:
        return dataclasses.replace(self, max_attempts=max_attempts)

    def delay_after(self, attempt: int) -> float:
        return self.backoff.delay_after(attempt)

    @property
    def timeout_seconds(self) -> float | None:
        return None if self.timeout is None else to_seconds(self.timeout, "timeout")




_Duration = float | timedelta


@dataclass(frozen=True, kw_only=True)
class RuntimeOptions:
    """How a runtime runs. Every field has a default that suits one machine.

    - ``orchestration_concurrency``: orchestration turns in flight at once (default 32; more
      turns in flight let the store group their commits). ``0`` makes an
      **activity-only** runtime: it runs no turns (its orchestration registry may be
      ``None``).
    - ``activity_concurrency``: activities run at once (default 32); plain ``def``
      activities run on a thread pool of this size. ``0`` (or ``worker_tag_filter=
      TagFilter.NONE``) makes an **orchestration-only** runtime: it runs no activities
      (its activity registry may be ``None``). Both at ``0`` is refused.
    - ``worker_tag_filter``: which activities this runtime runs, by tag (default
      ``TagFilter.DEFAULT_ONLY``: untagged ones only). An activity that no live runtime
      accepts waits in the store; it is never failed for that.
    - ``max_sessions_per_runtime``: distinct activity sessions this runtime owns at once
      (default 10). At the cap it claims no new session but still runs the activities of
      the sessions it owns, and work without a session; ``0``: it never owns a session.
    - ``session_idle_timeout``: a session this runtime owns is released after this long
      without activity of its own (a fetch, a lock renewal or a completion of one of its
      activities), default 300 s. Must be longer than ``activity_lock_timeout``, so that
      a running activity's renewals keep its session.
    - ``session_lock_timeout``: the lease on each owned session, renewed while the
      runtime lives (default 30 s): how long the sessions of a runtime that died stay
      with it before another may claim them. ``Runtime.shutdown`` releases them at once.
    - ``worker_node_id``: a stable identity for session ownership (default ``None``: the
      sessions belong to this runtime's lifetime). A runtime restarted with the same id
      takes its sessions back at once; two live runtimes must not share one
      (``Runtime.start`` raises ``ValueError``).
    - ``orchestration_lock_timeout``: seconds an instance stays locked by a turn before
      another worker may take it (default 5 s).
    - ``activity_lock_timeout``: seconds an activity stays locked; renewed while it
      runs, so only a dead worker lets it lapse (default 30 s).
    - ``max_attempts``: poison threshold; an instance or activity fetched more often
      than this without being acknowledged fails with a poison error (default 10).
    - ``poll_interval``: safety-net poll for work enqueued by other processes; work from
      this process wakes the dispatchers at once (default 0.05 s). While nothing comes,
      the poll slows down, doubling up to ``max_poll_interval`` (default 0.25 s), so an
      idle worker costs almost nothing; on a store that announces every process's work
      to all of them (PostgreSQL) it doubles up to four times ``max_poll_interval``, since it
      only catches what no commit announces (an expired lock, another node's timer).
    - ``cancel_check_interval``: how often a running activity's lock is checked to learn
      that its result is no longer wanted (default 0.5 s).
    - ``heartbeat_interval``: how often this runtime writes its heartbeat row to the store
      (default 10 s; see ``Client.list_workers``). A worker counts as alive while it was
      seen within three of its intervals. At each heartbeat the runtime also rereads
      which other workers are alive and what they have registered, and removes the rows
      of workers not seen for 24 hours.
    - ``not_registered_backoff``: delay before a turn or activity that this worker cannot
      run, and that no other live worker has registered either, is offered again
      (default 1 s). Each such offer uses up an attempt: after ``max_attempts`` the
      instance fails (or the activity fails) with kind ``not_registered``. Work that
      another live worker (by its heartbeat) has registered, name and version, goes back
      to the store at once without using up an attempt, and this worker's fetches leave
      it alone from then on, so the worker that has it takes it (a rolling deploy).
    - ``cache_size``: live orchestrations kept between turns (default 1,000).
    - ``slow_turn_threshold``: an orchestration turn whose code (and replay) runs longer
      than this logs a warning on the ``duroxy.runtime`` logger naming the instance,
      the orchestration and the time, and counts in ``metrics_snapshot().slow_turns``
      (default 1 s). Orchestration code runs on the runtime's event loop: while it
      runs, nothing else of the runtime does (other turns, lock renewals).
    - ``worker_id``: this runtime's name in ``ActivityContext.worker_id`` and its
      heartbeat row, which it must not share with another live runtime (default
      host:pid; host:pid:2, host:pid:3 ... for further runtimes of one process).

    The durations are seconds; a ``timedelta`` is accepted too and kept as seconds.
    """

    orchestration_concurrency: int = 32
    activity_concurrency: int = 32
    orchestration_lock_timeout: float = 5.0
    activity_lock_timeout: float = 30.0
    max_attempts: int = 10
    poll_interval: float = 0.05
    max_poll_interval: float = 0.25
    cancel_check_interval: float = 0.5
    heartbeat_interval: float = 10.0
    not_registered_backoff: float = 1.0
    cache_size: int = 1000
    worker_id: str | None = None
    slow_turn_threshold: float = 1.0
    worker_tag_filter: TagFilter = TagFilter.DEFAULT_ONLY
    max_sessions_per_runtime: int = 10
    session_idle_timeout: float = 300.0
    session_lock_timeout: float = 30.0
    worker_node_id: str | None = None

    if TYPE_CHECKING:
        # What callers may pass: every duration takes a timedelta too (kept as seconds by
        # __post_init__), which the fields' own types cannot say. At run time the
        # dataclass writes __init__ from the fields as usual.
        def __init__(
            self, *, orchestration_concurrency: int = ..., activity_concurrency: int = ...,
            orchestration_lock_timeout: _Duration = ..., activity_lock_timeout: _Duration = ...,
            max_attempts: int = ..., poll_interval: _Duration = ...,
            max_poll_interval: _Duration = ..., cancel_check_interval: _Duration = ...,
            heartbeat_interval: _Duration = ..., not_registered_backoff: _Duration = ...,
            cache_size: int = ..., worker_id: str | None = ...,
            slow_turn_threshold: _Duration = ..., worker_tag_filter: TagFilter = ...,
            max_sessions_per_runtime: int = ..., session_idle_timeout: _Duration = ...,
            session_lock_timeout: _Duration = ..., worker_node_id: str | None = ...,
        ) -> None: ...

    _COUNTS: ClassVar[tuple[str, ...]] = ("max_attempts",)
    #: counts that may be 0 (a runtime without that kind of work)
    _COUNTS_OR_ZERO: ClassVar[tuple[str, ...]] = (
        "orchestration_concurrency", "activity_concurrency", "max_sessions_per_runtime",
        "cache_size",
    )

    _DURATIONS: ClassVar[tuple[str, ...]] = (
        "orchestration_lock_timeout", "activity_lock_timeout", "poll_interval",
        "max_poll_interval", "cancel_check_interval", "heartbeat_interval",
        "not_registered_backoff", "slow_turn_threshold", "session_idle_timeout",
        "session_lock_timeout",
    )

    @property
    def runs_orchestrations(self) -> bool:
        """Whether this runtime runs orchestration turns."""
        return self.orchestration_concurrency > 0

    @property
    def runs_activities(self) -> bool:
        """Whether this runtime runs activities (a slot, and a filter accepting some)."""
        return self.activity_concurrency > 0 and not self.worker_tag_filter.runs_nothing

    def __post_init__(self) -> None:
        for name in self._DURATIONS:  # a timedelta is taken too, and kept as seconds
            value = getattr(self, name)
            if isinstance(value, timedelta):
                object.__setattr__(self, name, value.total_seconds())
        for name in self._COUNTS:
            check_count(getattr(self, name), f"RuntimeOptions.{name}", 1)
        for name in self._COUNTS_OR_ZERO:
            check_count(getattr(self, name), f"RuntimeOptions.{name}", 0)
        for name in self._DURATIONS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0 <= value <= LONGEST_DURATION_S \
                    or (value == 0 and name != "not_registered_backoff"):
                raise ValueError(f"RuntimeOptions.{name} must be a positive number of "
                                 f"seconds up to {LONGEST_DURATION_S:g}, got {value!r}")
        for name in ("worker_id", "worker_node_id"):
            value = getattr(self, name)
            problem = None if value is None else name_problem(value)
            if problem is not None:
                raise ValueError(f"RuntimeOptions.{name}, when given, {problem}")
        self._check_routing()

    def _check_routing(self) -> None:
        if not isinstance(self.worker_tag_filter, TagFilter):
            raise TypeError("RuntimeOptions.worker_tag_filter must be a TagFilter (TagFilter."
                            "DEFAULT_ONLY, TagFilter.tags([...]) ...), not "
                            f"{type(self.worker_tag_filter).__name__}")
        if not self.runs_orchestrations and not self.runs_activities:
            why = ("activity_concurrency=0" if self.activity_concurrency == 0
                   else "worker_tag_filter=TagFilter.NONE")
            raise ValueError(f"RuntimeOptions.orchestration_concurrency=0 with {why} makes a "
                             "runtime that runs nothing: keep orchestration_concurrency above "
                             "0 for an orchestration-only runtime, or let it run activities")
        if self.session_idle_timeout <= self.activity_lock_timeout:
            raise ValueError(
                f"RuntimeOptions.session_idle_timeout ({self.session_idle_timeout:g} s) must be "
                f"longer than activity_lock_timeout ({self.activity_lock_timeout:g} s): a "
                "session would be released while one of its activities runs, between two "
                "renewals of its lock. Raise session_idle_timeout or lower "
                "activity_lock_timeout")

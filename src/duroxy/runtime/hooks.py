"""The hooks one runtime calls: its own (its metrics) and those installed for the
whole process (see :mod:`duroxy._hooks`), composed into one object the dispatchers
call.

An installed hook that raises is logged and ignored (``_Guarded``); the runtime's own
hooks are trusted. Installed hooks are looked up again whenever the set of installed
hooks changed (a generation number, compared at each turn and attempt), so an
integration switched on or off while a runtime runs takes effect at its next turn.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .. import _hooks
from .._hooks import ActivityAttempt, Carrier, RuntimeHooks, Turn
from ..errors import LockLost, ProviderError

__all__ = ["HookSet"]

logger = logging.getLogger("duroxy.runtime")


class _Guarded(RuntimeHooks):
    """An installed hook whose failures are logged, never raised into the runtime."""

    def __init__(self, hook: RuntimeHooks) -> None:
        self.hook = hook

    def _failed(self, method: str) -> None:
        logger.exception("the hook %s.%s failed; ignoring it", type(self.hook).__name__, method)

    def turn_start(self, turn: Turn) -> Any:
        try:
            return self.hook.turn_start(turn)
        except Exception:
            self._failed("turn_start")
            return None

    def schedule(self, turn: Turn, token: Any, kind: str, name: str) -> Carrier | None:
        try:
            return self.hook.schedule(turn, token, kind, name)
        except Exception:
            self._failed("schedule")
            return None

    def turn_committing(self, turn: Turn, token: Any) -> None:
        try:
            self.hook.turn_committing(turn, token)
        except Exception:
            self._failed("turn_committing")

    def turn_end(self, turn: Turn, token: Any) -> None:
        try:
            self.hook.turn_end(turn, token)
        except Exception:
            self._failed("turn_end")

    def activity_start(self, attempt: ActivityAttempt) -> Any:
        try:
            return self.hook.activity_start(attempt)
        except Exception:
            self._failed("activity_start")
            return None

    def activity_committing(self, attempt: ActivityAttempt, token: Any) -> None:
        try:
            self.hook.activity_committing(attempt, token)
        except Exception:
            self._failed("activity_committing")

    def activity_end(self, attempt: ActivityAttempt, token: Any) -> None:
        try:
            self.hook.activity_end(attempt, token)
        except Exception:
            self._failed("activity_end")

    def fetched(self, kind: str, count: int) -> None:
        try:
            self.hook.fetched(kind, count)
        except Exception:
            self._failed("fetched")

    def provider_error(self, error: BaseException) -> None:
        try:
            self.hook.provider_error(error)
        except Exception:
            self._failed("provider_error")

    def runtime_started(self, worker_id: str, held: Callable[[], tuple[int, int]]) -> None:
        try:
            self.hook.runtime_started(worker_id, held)
        except Exception:
            self._failed("runtime_started")

    def runtime_stopped(self, worker_id: str) -> None:
        try:
            self.hook.runtime_stopped(worker_id)
        except Exception:
            self._failed("runtime_stopped")


class HookSet:
    """Every hook of one runtime, called in order: its own first, then the installed
    ones. ``turn.tokens`` / ``attempt.tokens`` pair each hook with what its start
    returned, so a hook installed or removed mid-turn never gets another's token."""

    def __init__(self, own: tuple[RuntimeHooks, ...], worker_id: str,
                 held: Callable[[], tuple[int, int]]) -> None:
        self._own = own
        self._worker_id = worker_id
        self._held = held
        self._installed: dict[RuntimeHooks, _Guarded] = {}
        self._generation = -1
        self._all: tuple[RuntimeHooks, ...] = own
        self._running = False
        self._last_failure = 0

    def _hooks(self) -> tuple[RuntimeHooks, ...]:
        if _hooks.generation != self._generation:
            self._refresh()
        return self._all

    def _refresh(self) -> None:
        self._generation = _hooks.generation
        now = _hooks.installed_runtime_hooks()
        for gone in [h for h in self._installed if h not in now]:
            guarded = self._installed.pop(gone)
            if self._running:
                guarded.runtime_stopped(self._worker_id)
        for hook in now:
            if hook not in self._installed:
                self._installed[hook] = _Guarded(hook)
                if self._running:
                    self._installed[hook].runtime_started(self._worker_id, self._held)
        self._all = self._own + tuple(self._installed[h] for h in now)

    # ------------------------------------------------------------------ lifecycle
    def started(self) -> None:
        self._running = True
        for hook in self._hooks():
            hook.runtime_started(self._worker_id, self._held)

    def stopped(self) -> None:
        if not self._running:
            return
        for hook in self._hooks():
            hook.runtime_stopped(self._worker_id)
        self._running = False

    # ------------------------------------------------------------------ turns
    def turn_start(self, turn: Turn) -> None:
        turn.tokens = [(h, h.turn_start(turn)) for h in self._hooks()]

    def schedule(self, turn: Turn, kind: str, name: str) -> Carrier | None:
        if kind == "sub_orchestration":
            turn.suborchestrations += 1
        carrier = None
        for hook, token in turn.tokens:
            got = hook.schedule(turn, token, kind, name)
            if carrier is None:
                carrier = got
        return carrier

    def turn_committing(self, turn: Turn) -> None:
        for hook, token in turn.tokens:
            hook.turn_committing(turn, token)

    def turn_end(self, turn: Turn, committed: bool, error: BaseException | None = None
                 ) -> None:
        """After the turn's commit returned (``committed``), or failed with ``error``,
        or the turn ended without one."""
        turn.committed = committed
        turn.commit_error = error
        if error is not None:
            self.store_failed(error)
        for hook, token in turn.tokens:
            hook.turn_end(turn, token)

    # ------------------------------------------------------------------ activities
    def activity_start(self, attempt: ActivityAttempt) -> None:
        attempt.tokens = [(h, h.activity_start(attempt)) for h in self._hooks()]

    def activity_committing(self, attempt: ActivityAttempt) -> None:
        for hook, token in attempt.tokens:
            hook.activity_committing(attempt, token)

    def activity_end(self, attempt: ActivityAttempt, committed: bool,
                     error: BaseException | None = None) -> None:
        attempt.committed = committed
        attempt.commit_error = error
        if error is not None:
            self.store_failed(error)
        for hook, token in attempt.tokens:
            hook.activity_end(attempt, token)

    # ------------------------------------------------------------------ the store
    def fetched(self, kind: str, count: int) -> None:
        if count:
            for hook in self._hooks():
                hook.fetched(kind, count)

    def store_failed(self, error: BaseException) -> None:
        """Report ``error`` if a store operation raised it (a lock lost is an answer
        of the store, not a failure)."""
        if isinstance(error, ProviderError) and not isinstance(error, LockLost):
            # One failure may pass several handlers on its way up: counted once.
            # (By id: holding the exception would keep its frames alive.)
            if id(error) == self._last_failure:
                return
            self._last_failure = id(error)
            for hook in self._hooks():
                hook.provider_error(error)

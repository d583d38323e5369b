"""Patching code in place, as orchestration code sees it: ``ctx.is_patched`` and
``ctx.deprecate_patch``, mixed into ``OrchestrationContext``.

A patch marker (``PatchRecorded``) is recorded the first time code that runs live
reaches a patch; a replay answers from the markers of *this execution's* history,
wherever they stand in it. Markers are looked up by id, never matched by position: they
are not decisions, so a marker no call asks about (a ``deprecate_patch`` since deleted)
changes nothing. The first answer for an id holds for the rest of the execution (the
same id asked again records nothing), so one ``if`` and another on the same id never
disagree; each execution (continue-as-new starts a fresh history) decides anew.
"""

from __future__ import annotations

from .._names import name_problem
from .port import ExecutionPort

__all__ = ["PatchMethods"]


def _change_id(change_id: str) -> str:
    problem = name_problem(change_id)
    if problem is not None:
        raise ValueError(f"patch change_id {problem}")
    return change_id


class PatchMethods:
    """The patch calls of ``OrchestrationContext`` (which supplies ``_x``)."""

    _x: ExecutionPort
    #: change id -> the answer this execution gave (set on first use)
    _patches: dict[str, bool]

    def _patch_answers(self) -> dict[str, bool]:
        try:
            return self._patches
        except AttributeError:
            self._patches = {}
            return self._patches

    def is_patched(self, change_id: str) -> bool:
        """Whether this execution takes the new code path of the change ``change_id``
        (Temporal's ``workflow.patched``): ``True`` when the code reaches the call live,
        which records a marker; on replay, ``True`` if and only if this execution's
        history holds a marker for it (an execution started before the change replays
        its old path). The first answer holds for the rest of the execution. Raises
        ``ValueError`` for a bad id (1 to 1,024 characters, no NUL)."""
        answers = self._patch_answers()
        found = answers.get(_change_id(change_id))
        if found is None:
            found = answers[change_id] = self._x.patch(change_id, deprecated=False)
        return found

    def deprecate_patch(self, change_id: str) -> None:
        """Mark the change ``change_id`` as the only path left: recorded (when the code
        runs live) like ``is_patched``, and it never fails, whether a history holds a
        marker for it or not. Use it once no execution without the marker remains and
        the old branch is deleted; remove it later, when no execution that recorded it
        runs any more (a marker no call asks about is ignored)."""
        answers = self._patch_answers()
        if _change_id(change_id) not in answers:
            self._x.patch(change_id, deprecated=True)
            answers[change_id] = True

"""Exported histories: :class:`ExecutionHistory` and the history file format.

A history file is UTF-8 JSON::

    {"format": "duroxy-history", "format_version": 1,
     "histories": [{"instance_id": "order-42", "execution_id": 1, "name": "create",
                    "version": "1.0.2", "events": [{"v": 1, "k": "OrchestrationStarted",
                                                     "id": 1, "ts": 1700000000000, ...}]}]}

Events are in their stored wire form (:func:`~duroxy.history.event_to_json`), so the
payload fields (JSON text) are copied exactly as stored: reading a file back gives equal
events with the same payload texts, and writing them again gives the same bytes.
Readers accept every ``format_version`` up to :data:`HISTORY_FILE_VERSION` and ignore
top-level keys they do not know; a newer version, another ``format`` or a malformed
document raises :class:`~duroxy.errors.PayloadError`.

The writer puts one event per line, so that an exported file kept beside the tests of
an application reads and diffs line by line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

from ..codec._common import dump_json
from ..errors import PayloadError
from ._events import HistoryEvent, OrchestrationStarted, event_from_json, event_to_json

__all__ = [
    "HISTORY_FILE_FORMAT",
    "HISTORY_FILE_VERSION",
    "ExecutionHistory",
    "dump_histories",
    "load_histories",
]

#: The ``format`` of a history file.
HISTORY_FILE_FORMAT = "duroxy-history"
#: The ``format_version`` this duroxy writes, and the newest it reads.
HISTORY_FILE_VERSION = 1


@dataclass(frozen=True, slots=True)
class ExecutionHistory:
    """The history of one execution of one instance, as ``Client.export_history``
    returns it and a history file holds it: ``events`` is a tuple of history events,
    oldest first (a list given is kept as a tuple). ``name`` and ``version`` are the
    orchestration and the version this execution ran (``version`` is ``None`` only for
    an instance whose first turn has not run yet)."""

    instance_id: str
    execution_id: int
    name: str
    version: str | None
    events: tuple[HistoryEvent, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.events, tuple):
            object.__setattr__(self, "events", tuple(self.events))

    @property
    def started(self) -> OrchestrationStarted | None:
        """The execution's ``OrchestrationStarted`` event (``None`` for an empty one)."""
        first = self.events[0] if self.events else None
        return first if isinstance(first, OrchestrationStarted) else None

    def to_json(self) -> str:
        """This history as the text of a history file that holds it alone."""
        return _document([self])

    @classmethod
    def from_json(cls, text: str | bytes) -> ExecutionHistory:
        """The history in ``text``: a history file holding exactly one history, or one
        element of a file's ``histories``. Raises ``PayloadError`` otherwise."""
        data = _parse(text)
        if isinstance(data, dict) and "histories" not in data and "events" in data:
            return _history(data, "the history")
        found = _histories(data)
        if len(found) != 1:
            raise PayloadError(f"the text holds {len(found)} histories, not one: read it "
                               "with duroxy.history.load_histories")
        return found[0]


def dump_histories(histories: Iterable[ExecutionHistory], fp: IO[str]) -> None:
    """Write ``histories`` to the text file object ``fp`` in the history file format
    (open it with ``encoding="utf-8"``)."""
    items = list(histories)
    for h in items:
        if not isinstance(h, ExecutionHistory):
            raise TypeError(f"dump_histories takes ExecutionHistory objects, not "
                            f"{type(h).__name__}")
    fp.write(_document(items))


def load_histories(fp: IO[str] | IO[bytes]) -> list[ExecutionHistory]:
    """The histories of the history file read from the file object ``fp``. Raises
    ``PayloadError`` for a file of another format, a newer ``format_version`` or a
    malformed one, naming what is wrong."""
    return _histories(_parse(fp.read()))


# ------------------------------------------------------------------ writing
def _document(histories: list[ExecutionHistory]) -> str:
    parts = [dump_json({"format": HISTORY_FILE_FORMAT,
                        "format_version": HISTORY_FILE_VERSION})[:-1] + ',"histories":[']
    for i, h in enumerate(histories):
        head = dump_json({"instance_id": h.instance_id, "execution_id": h.execution_id,
                          "name": h.name, "version": h.version})
        events = ",\n".join(dump_json(event_to_json(e)) for e in h.events)
        parts.append(("\n" if i == 0 else ",\n") + head[:-1] + ',"events":['
                     + ("\n" + events + "\n" if events else "") + "]}")
    parts.append("\n]}\n" if histories else "]}\n")
    return "".join(parts)


# ------------------------------------------------------------------ reading
def _parse(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError) as e:
        raise PayloadError(f"a history file must be JSON: {e}") from None


def _histories(data: Any) -> list[ExecutionHistory]:
    if not isinstance(data, dict):
        raise PayloadError(f"a history file must hold a JSON object, not "
                           f"{type(data).__name__}")
    fmt = data.get("format")
    if fmt != HISTORY_FILE_FORMAT:
        raise PayloadError(f"not a duroxy history file: its format is {fmt!r}, not "
                           f"{HISTORY_FILE_FORMAT!r}")
    version = data.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise PayloadError(f"history file format_version must be a positive integer, got "
                           f"{version!r}")
    if version > HISTORY_FILE_VERSION:
        raise PayloadError(f"history file format_version {version} is newer than this "
                           f"duroxy reads ({HISTORY_FILE_VERSION}): upgrade duroxy to "
                           "read it")
    items = data.get("histories")
    if not isinstance(items, list):
        raise PayloadError("a history file needs a list under 'histories'")
    return [_history(item, f"histories[{i}]") for i, item in enumerate(items)]


def _history(item: Any, where: str) -> ExecutionHistory:
    if not isinstance(item, dict):
        raise PayloadError(f"{where} must be a JSON object, not {type(item).__name__}")
    iid, eid = item.get("instance_id"), item.get("execution_id")
    name, version, events = item.get("name"), item.get("version"), item.get("events")
    problem = None
    if not isinstance(iid, str) or not iid:
        problem = f"instance_id must be a non-empty string, got {iid!r:.80}"
    elif isinstance(eid, bool) or not isinstance(eid, int) or eid < 1:
        problem = f"execution_id must be an integer from 1, got {eid!r:.80}"
    elif not isinstance(name, str):
        problem = f"name must be a string, got {name!r:.80}"
    elif version is not None and not isinstance(version, str):
        problem = f"version must be a string or null, got {version!r:.80}"
    elif not isinstance(events, list):
        problem = "events must be a list"
    if problem is not None:
        raise PayloadError(f"{where}: {problem}")
    assert isinstance(iid, str) and isinstance(eid, int) and isinstance(name, str)
    assert isinstance(events, list)
    decoded = []
    for n, raw in enumerate(events):
        try:
            decoded.append(event_from_json(raw))
        except PayloadError as e:
            raise PayloadError(f"{where} (instance {iid!r}, execution {eid}), events[{n}]: "
                               f"{e}") from None
    return ExecutionHistory(iid, eid, name, version, tuple(decoded))

"""``Replayer``: recorded histories replayed against the code of today, with no store.

Before new orchestration code is deployed, the histories of instances still running
(``duroxy export``, or a store read directly) are replayed against it: a history the
new code cannot replay is an instance the deployment would fail for nondeterminism.
Each execution replays on its own with the handler of its recorded version, exactly as
a runtime replays a turn (:mod:`duroxy.runtime.replay`): nothing runs, nothing is
written, ``trace_*`` stays silent.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InstanceNotFound, NondeterminismError, NotRegistered, PayloadError
from ..history import ExecutionHistory, load_histories
from ..runtime.registry import ActivityRegistry, OrchestrationRegistry
from ..runtime.replay import replay_execution

if TYPE_CHECKING:
    from ..client import Client

__all__ = ["ReplayReport", "ReplayResult", "Replayer"]

#: What ``Replayer.replay`` takes: histories, or the path of a history file or of a
#: directory of them.
Histories = Iterable[ExecutionHistory] | AsyncIterable[ExecutionHistory] | str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """How one execution's history replayed. ``kind`` is ``None`` when it passed, else
    ``"nondeterminism"`` (the code parts from history, or ends with another outcome
    kind), ``"not_registered"`` (no handler for the recorded name and version) or
    ``"undecodable"`` (the history could not be read). ``message`` is the runtime's
    own text, naming both sides and the event; ``event_id`` is the recorded event
    where code and history part (``None`` when the replay passed)."""

    instance_id: str
    execution_id: int
    name: str
    version: str | None
    ok: bool
    kind: str | None = None
    message: str = ""
    event_id: int | None = None

    def __str__(self) -> str:
        what = f"{self.instance_id} (execution {self.execution_id}, {self.name}" \
               f"{'@' + self.version if self.version else ''})"
        if self.ok:
            return f"{what}: ok"
        at = f" at event {self.event_id}" if self.event_id is not None else ""
        return f"{what}: {self.kind}{at}: {self.message}"

    def error(self) -> NondeterminismError | NotRegistered | PayloadError | None:
        """The exception ``replay_history`` raises for this result (``None`` if ok)."""
        if self.ok:
            return None
        if self.kind == "not_registered":
            return NotRegistered(self.message)
        if self.kind == "undecodable":
            return PayloadError(self.message)
        return NondeterminismError(self.message)


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """The results of a batch of replays, in the order replayed. ``str()`` gives one
    line per failure (nothing when none failed: ``assert report.ok, str(report)``)."""

    results: tuple[ReplayResult, ...] = ()

    @property
    def failures(self) -> tuple[ReplayResult, ...]:
        return tuple(r for r in self.results if not r.ok)

    @property
    def ok(self) -> bool:
        """True when every history replayed (also when there were none)."""
        return all(r.ok for r in self.results)

    def __str__(self) -> str:
        return "\n".join(str(r) for r in self.failures)


class Replayer:
    """Replays histories against the orchestrations of ``orchestrations``.

    ``activities`` (optional) are the activities as a worker registers them: with them
    an activity the code schedules by its function is named as on a worker, and its
    output is decoded to its registered type (without them a function is named by its
    ``__name__`` and an activity scheduled by name gives plain JSON values, which code
    that reads typed outputs may not expect)."""

    def __init__(self, orchestrations: OrchestrationRegistry, *,
                 activities: ActivityRegistry | None = None) -> None:
        if not isinstance(orchestrations, OrchestrationRegistry):
            raise TypeError("Replayer needs an OrchestrationRegistry (use "
                            "OrchestrationRegistry.builder()...build()), not "
                            f"{type(orchestrations).__name__}")
        if activities is not None and not isinstance(activities, ActivityRegistry):
            raise TypeError(f"activities must be an ActivityRegistry, not "
                            f"{type(activities).__name__}")
        self.orchestrations = orchestrations
        self.activities = activities

    # ------------------------------------------------------------------ one history
    async def replay_history(self, history: ExecutionHistory, *,
                             raise_on_failure: bool = True) -> ReplayResult:
        """Replay one execution. On failure, raises ``NondeterminismError``,
        ``NotRegistered`` (no handler for its name and version) or ``PayloadError``,
        unless ``raise_on_failure`` is false: the result then says what failed."""
        result = self._replay_one(history, None)[0]
        error = result.error()
        if error is not None and raise_on_failure:
            raise error
        return result

    def _replay_one(self, history: ExecutionHistory,
                    kv: dict[str, tuple[str, int]] | None
                    ) -> tuple[ReplayResult, dict[str, tuple[str, int]]]:
        if not isinstance(history, ExecutionHistory):
            raise TypeError(f"replay takes ExecutionHistory objects, not "
                            f"{type(history).__name__}")
        h = history
        version = h.version
        if version is None and h.started is not None:
            version = h.started.version
        done = replay_execution(self.orchestrations, self.activities, h.instance_id, h.name,
                                version, h.events, kv)
        result = ReplayResult(h.instance_id, h.execution_id, h.name, version,
                              done.error is None, done.kind,
                              "" if done.error is None else str(done.error), done.event_id)
        return result, done.kv

    # ------------------------------------------------------------------ many
    async def replay(self, histories: Histories, *,
                     raise_on_failure: bool = False) -> ReplayReport:
        """Replay every history of ``histories``: an iterable or async iterable of
        ``ExecutionHistory``, or the path of a history file (``duroxy export``) or of a
        directory of them (its ``*.json`` files, in name order). A history that cannot
        be read is a result of kind ``"undecodable"``. With ``raise_on_failure`` the
        first failure raises, as ``replay_history`` does."""
        if isinstance(histories, (str, os.PathLike)):
            return await self._replay_all(_from_path(Path(histories)), raise_on_failure)
        if isinstance(histories, AsyncIterable):
            return await self._replay_all(histories, raise_on_failure)
        return await self._replay_all(_aiter(histories), raise_on_failure)

    async def replay_store(self, client: Client, *, name: str | None = None,
                           state: str | Sequence[str] | None = None, limit: int = 1000,
                           all_executions: bool = False) -> ReplayReport:
        """Replay what a store holds: the latest execution of each matching instance
        (oldest created first, at most ``limit`` instances), or with ``all_executions``
        every execution still stored. Reads only (a client on a store opened read-only
        does). The execution that is current starts from the key-value state the store
        kept for it; an earlier one from what the execution before it left."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be an int >= 0, got {limit!r}")
        return await self._replay_all(
            _from_store(client, name, state, limit, all_executions), False)

    async def _replay_all(self, source: AsyncIterable[Any], raise_on_failure: bool
                          ) -> ReplayReport:
        results: list[ReplayResult] = []
        # The KV each instance's last replayed execution left, for the next one.
        left: dict[str, tuple[int, dict[str, tuple[str, int]]]] = {}
        async for item in source:
            if isinstance(item, _Unreadable):
                result = item.result
            else:
                history, kv = (item.history, item.kv) if isinstance(item, _Item) \
                    else (item, None)
                before = left.get(history.instance_id)
                if kv is None and before is not None and before[0] == history.execution_id - 1:
                    kv = before[1]
                result, after = self._replay_one(history, kv)
                left[history.instance_id] = (history.execution_id, after)
            results.append(result)
            error = result.error()
            if error is not None and raise_on_failure:
                raise error
        return ReplayReport(tuple(results))


# ====================================================================== sources
@dataclass(frozen=True, slots=True)
class _Item:
    """A history read from a store, with the KV its execution started with (if known)."""

    history: ExecutionHistory
    kv: dict[str, tuple[str, int]] | None = None


@dataclass(frozen=True, slots=True)
class _Unreadable:
    result: ReplayResult


async def _aiter(histories: Iterable[ExecutionHistory]) -> AsyncIterator[ExecutionHistory]:
    for h in histories:
        yield h


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix == ".json" and p.is_file())
    if not path.exists():
        raise FileNotFoundError(f"no history file or directory at {str(path)!r}")
    return [path]


async def _from_path(path: Path) -> AsyncIterator[ExecutionHistory | _Unreadable]:
    """The histories of a file or directory. A file that is not a history file raises
    ``PayloadError`` naming it; a history in it that does not decode is reported as
    ``undecodable`` and the others are replayed."""
    for file in _files(path):
        with open(file, encoding="utf-8") as fh:
            text = fh.read()
        try:
            data = json.loads(text)
            items = data.get("histories") if isinstance(data, dict) else None
            # The envelope (format, version) is checked by the reader itself.
            envelope = dict(data, histories=[]) if isinstance(items, list) else data
            load_histories(io.StringIO(json.dumps(envelope)))
        except (ValueError, PayloadError) as e:
            raise PayloadError(f"{file}: {e}") from None
        assert isinstance(items, list)
        for n, item in enumerate(items):
            try:
                yield ExecutionHistory.from_json(json.dumps(item))
            except PayloadError as e:
                yield _unreadable(item, f"{file}: histories[{n}]: {e}")


def _unreadable(item: Any, message: str, instance_id: str | None = None,
                execution_id: int | None = None) -> _Unreadable:
    get = item.get if isinstance(item, dict) else (lambda _k: None)
    iid = instance_id or get("instance_id")
    eid = execution_id or get("execution_id")
    name = get("name")
    version = get("version")
    return _Unreadable(ReplayResult(
        iid if isinstance(iid, str) else "?", eid if isinstance(eid, int) else 0,
        name if isinstance(name, str) else "?", version if isinstance(version, str) else None,
        False, "undecodable", message))


async def _from_store(client: Client, name: str | None, state: str | Sequence[str] | None,
                      limit: int, all_executions: bool
                      ) -> AsyncIterator[_Item | _Unreadable]:
    seen = 0
    async for info in client.iter_instances(name=name, state=state):
        if seen >= limit:
            return
        seen += 1
        iid = info.instance_id
        try:
            latest = info.execution_id
            executions = (await client.list_executions(iid) if all_executions
                          else [latest])
            for eid in executions or [latest]:
                try:
                    history = await client.export_history(iid, eid)
                except KeyError:
                    continue  # pruned meanwhile
                except PayloadError as e:
                    yield _unreadable(None, str(e), iid, eid)
                    continue
                kv = None
                if eid == latest:  # (the store keeps the current execution's)
                    base = await client.provider.read_kv_base(iid)
                    kv = {k: (v.value, v.updated_at) for k, v in base.items()}
                yield _Item(history, kv)
        except InstanceNotFound:
            continue  # deleted meanwhile


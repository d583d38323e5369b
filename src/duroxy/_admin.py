"""The values the client's admin calls return, and the opaque page
tokens of ``Client.list_instances_page``. Plain data: nothing here talks to a store."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from ._names import name_problem
from .errors import ErrorDetails

__all__ = ["DeleteResult", "ExecutionInfo", "InstanceTree", "OrchestrationStats",
           "PruneResult", "check_id", "decode_page_token", "encode_page_token"]


def check_id(value: object, what: str) -> str:
    """``value`` if it is a valid id or name (1 to 1,024 characters, no NUL), else
    ``ValueError`` naming ``what`` and the problem."""
    problem = name_problem(value)
    if problem is not None:
        raise ValueError(f"{what} {problem}")
    assert isinstance(value, str)
    return value


@dataclass(frozen=True, slots=True)
class ExecutionInfo:
    """One execution of an instance. ``state``: ``"RUNNING"``, ``"COMPLETED"``,
    ``"FAILED"``, ``"CANCELLED"``, or ``"CONTINUED_AS_NEW"`` for an execution that ended
    so; ``completed_at`` is ``None`` while it runs; ``output`` is the decoded output of a
    completed execution, ``error`` the error of a failed or cancelled one."""

    execution_id: int
    state: str
    started_at: datetime
    completed_at: datetime | None
    event_count: int
    output: Any = None
    error: ErrorDetails | None = None


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What ``prune_executions`` (or its bulk form) deleted."""

    instances_processed: int = 0
    executions_deleted: int = 0
    events_deleted: int = 0

    def __add__(self, other: PruneResult) -> PruneResult:
        return PruneResult(self.instances_processed + other.instances_processed,
                           self.executions_deleted + other.executions_deleted,
                           self.events_deleted + other.events_deleted)


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """What ``delete_instances`` did. ``instances_deleted`` counts children too;
    ``queue_messages_deleted`` counts queued orchestration messages and activity work;
    ``skipped``: ids still running, left alone without ``force``; ``not_found``: ids
    that did not exist."""

    instances_deleted: int = 0
    executions_deleted: int = 0
    events_deleted: int = 0
    queue_messages_deleted: int = 0
    skipped: tuple[str, ...] = ()
    not_found: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class OrchestrationStats:
    """Sizes of one instance. ``history_*`` cover its current execution (sizes in UTF-8
    bytes of the stored events); ``queue_pending_count``: events and queue messages it
    received and has not consumed yet, those still queued for its next turn included;
    ``kv_*``: its key-value state (values as encoded JSON); ``execution_count``: the
    executions still stored."""

    history_event_count: int
    history_size_bytes: int
    queue_pending_count: int
    kv_user_key_count: int
    kv_total_value_bytes: int
    execution_count: int


@dataclass(frozen=True, slots=True)
class InstanceTree:
    """An instance and its descendants. ``all_ids``: the root first, then its
    descendants breadth-first, each level in creation order; ``parent_of``: each
    descendant's parent."""

    root_id: str
    all_ids: tuple[str, ...]
    parent_of: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def size(self) -> int:
        return len(self.all_ids)

    def children(self, instance_id: str) -> tuple[str, ...]:
        """The direct children of ``instance_id``, in creation order."""
        return tuple(i for i in self.all_ids if self.parent_of.get(i) == instance_id)


# ------------------------------------------------------------------ page tokens
_TOKEN_VERSION = 1


def filters_digest(filters: list[Any]) -> str:
    """A short digest of a listing's filters, carried by its page tokens."""
    text = json.dumps(filters, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def encode_page_token(digest: str, created_at: float, instance_id: str) -> str:
    """The token of the page after the instance ``(created_at, instance_id)``: opaque,
    keyset-based (the position, not an offset), bound to the filters' digest."""
    raw = json.dumps([_TOKEN_VERSION, digest, created_at, instance_id],
                     separators=(",", ":"), ensure_ascii=True)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_page_token(token: str, digest: str) -> tuple[float, str]:
    """The position a token names. ``ValueError`` for a token that is not one, or one
    made for other filters."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        version, made_for, created_at, instance_id = json.loads(raw)
        if version != _TOKEN_VERSION or not isinstance(instance_id, str) \
                or not isinstance(created_at, (int, float)) or not isinstance(made_for, str):
            raise ValueError
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ValueError(f"not a page token of list_instances_page: {token[:40]!r}") from None
    if made_for != digest:
        raise ValueError("this page token was made for other filters: pass the filters of "
                         "the first page again, or start over without page_token")
    return float(created_at), instance_id

"""Conversions between the provider's values and the rows and parameters of the
PostgreSQL store's statements (see ``sql/*.sql``): pure functions, no I/O."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import ErrorDetails, PayloadError, ProviderError
from ...history import (
    ActivityWork,
    OrchestrationStarted,
    OrchestratorMessage,
    TimerFired,
    decode_message,
    encode_event,
    encode_message,
)
from ..base import (
    TERMINAL_STATES,
    ActivityItem,
    Channel,
    InstanceRecord,
    KvEntry,
    OrchestrationCommit,
    OrchestrationItem,
    QueuedMessage,
)
from ._notify import note

__all__ = ["Turn", "completion_params", "due_or_noted", "key", "kv_base_from_json",
           "kv_base_json", "orchestration_items", "record", "started_item", "turn"]

Row = tuple[Any, ...]

#: Columns of an instance record in a row (see instances.sql), and where they start in
#: the rows of fetch_orchestrations and lock_instance.
_RECORD_COLUMNS = 14
_ITEM_RECORD_AT = 7


def key(instance_id: str) -> bytes:
    """The row key of an instance: SHA-256 of the id's UTF-8 bytes. Ids can be longer
    than a B-tree entry allows; the digest is short and, unlike a truncation or a weak
    hash, never maps two ids to one key in practice. A lone surrogate (not valid text
    for PostgreSQL either) raises ``UnicodeEncodeError``, a ``ValueError``; so does NUL,
    which PostgreSQL text cannot hold."""
    if "\x00" in instance_id:
        raise ValueError("instance ids cannot contain NUL characters")
    return hashlib.sha256(instance_id.encode("utf-8")).digest()


def record(row: Row) -> InstanceRecord:
    (instance_id, name, version, state, execution_id, output, error, custom_status,
     created_at, updated_at, parent, history_len, status_version, kv_base
     ) = row[:_RECORD_COLUMNS]
    return InstanceRecord(
        instance_id=instance_id, name=name, version=version, state=state,
        execution_id=execution_id, output=output,
        error=ErrorDetails.from_json(json.loads(error)) if error is not None else None,
        custom_status=custom_status, created_at=created_at, updated_at=updated_at,
        parent_instance_id=parent, history_len=int(history_len),
        custom_status_version=int(status_version), kv_base=bool(kv_base))


def orchestration_items(rows: list[Row]) -> list[OrchestrationItem]:
    """Items from the rows of fetch_orchestrations or lock_instance: one row per
    delivered message (message columns NULL for a leased instance without one), rows of
    one instance adjacent and in message order, instances in fetch order. An instance
    with a NULL token was claimed but not leased (a concurrent turn emptied it)."""
    items: list[OrchestrationItem] = []
    i = 0
    while i < len(rows):
        first = rows[i]
        j = i + 1
        while j < len(rows) and rows[j][0] == first[0]:
            j += 1
        _, instance_id, token = first[:3]
        if token is not None:
            messages: list[QueuedMessage] = []
            attempt = 1
            for row in rows[i:j]:
                mid, payload, due_at, attempts = row[3:7]
                if mid is None:
                    continue
                attempt = max(attempt, int(attempts))
                try:
                    messages.append(QueuedMessage(
                        int(mid), decode_message(instance_id, payload, due_at)))
                except PayloadError as e:
                    messages.append(QueuedMessage(int(mid), None, str(e)))
            rec = first[_ITEM_RECORD_AT:_ITEM_RECORD_AT + _RECORD_COLUMNS]
            items.append(OrchestrationItem(
                instance_id=instance_id, lock_token=token, messages=messages,
                instance=record(rec) if rec[0] is not None else None, attempt=attempt))
        i = j
    return items


def started_item(message: OrchestratorMessage, event: OrchestrationStarted, token: str,
                 message_id: int, created_at: float, updated_at: float) -> OrchestrationItem:
    """The item of an instance create_instance_leased just created and leased: as a
    fetch would return it (one message, a PENDING record, no history)."""
    return OrchestrationItem(
        instance_id=message.instance_id, lock_token=token,
        messages=[QueuedMessage(message_id, message)],
        instance=InstanceRecord(
            instance_id=message.instance_id, name=event.name, version=event.version,
            state="PENDING", execution_id=event.execution_id, output=None, error=None,
            custom_status=event.custom_status, created_at=created_at,
            updated_at=updated_at, parent_instance_id=event.parent_instance_id,
            history_len=0, custom_status_version=0, kv_base=False),
        attempt=1)


def _columns(names: tuple[str, ...], rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """One array parameter per column of ``rows``; NULLs (``None``) instead of empty
    arrays, which psycopg takes as long to encode as short ones. The statements treat
    both alike (``unnest(NULL)`` yields no row, ``x = ANY(NULL)`` matches none)."""
    if not rows:
        return dict.fromkeys(names)
    return {n: list(col) for n, col in zip(names, zip(*rows, strict=True), strict=True)}


def _message_params(messages: list[OrchestratorMessage], payloads: list[str]
                    ) -> dict[str, Any]:
    """The message and start-record arrays of ack_turn and commit_turn."""
    return {
        **_columns(("msg_keys", "msg_ids", "msg_payloads", "msg_due_ats"), [
            (key(m.instance_id), m.instance_id, p, m.visible_at)
            for m, p in zip(messages, payloads, strict=True)]),
        **_columns(("start_keys", "start_ids", "start_names", "start_versions",
                    "start_execs", "start_statuses", "start_parents"), [
            (key(m.instance_id), m.instance_id, e.name, e.version, e.execution_id,
             e.custom_status, e.parent_instance_id)
            for m in messages if isinstance(e := m.event, OrchestrationStarted)]),
    }


#: The optional parts of the turn statements (see turn_writes), each by the array
#: parameter that holds its rows (NULL when there are none).
_PARTS = (("starts", "start_keys"), ("msgs", "msg_keys"), ("works", "work_keys"),
          ("cancels", "cancel_keys"))


@dataclass(slots=True)
class Turn:
    """A commit turned into the parameters of ack_turn / commit_turn (all but token,
    key, expected_len and channel), the notes for this process's listeners after the
    commit (the caller adds those that depend on what the statement found), and the
    work the statement inserts leased to the caller (the first ``len(claimed)``)."""

    params: dict[str, Any]
    notes: list[tuple[Channel, str]]
    claimed: list[ActivityWork]
    #: when the messages due later fall due: they are announced by alarms, not notes
    due: list[float]

    @property
    def parts(self) -> frozenset[str]:
        """The statement's optional parts this turn needs: those with rows to write."""
        parts = frozenset(part for part, column in _PARTS if self.params[column] is not None)
        if self.params["kv_clear"] or self.params["kv_del_keys"] is not None \
                or self.params["kv_set_keys"] is not None:
            parts |= {"kv"}
        if self.params.get("consume"):  # (commit_turn's, see consumed())
            parts |= {"consume"}
        return parts

    def claimed_items(self, row: Row) -> list[ActivityItem]:
        """The claimed activities, from the statement's ids, tokens and event ids (in
        insertion order, so in the order of ``claimed``)."""
        ids, tokens, events = row
        if ids is None:
            return []
        if list(events) != [w.event_id for w in self.claimed]:
            raise ProviderError("claimed activity rows do not match the commit")
        return [ActivityItem(int(i), t, w, 1)
                for i, t, w in zip(ids, tokens, self.claimed, strict=True)]


def due_or_noted(messages: list[OrchestratorMessage]) -> tuple[list[float], list[str]]:
    """How the committing node learns of the messages it committed: the due times of
    those visible later (an alarm each wakes its own fetches then; a note now would wake
    them to find nothing), and the instances with a message visible now (noted at once,
    each once). One clock reading decides, so every message gets one or the other."""
    now = time.time()
    due = [m.visible_at for m in messages if m.visible_at is not None and m.visible_at > now]
    noted = list(dict.fromkeys(m.instance_id for m in messages
                               if m.visible_at is None or m.visible_at <= now))
    return due, noted


def turn(commit: OrchestrationCommit, node_id: str) -> Turn:
    """See :class:`Turn`. Raises ``PayloadError`` for a value with no JSON form, before
    anything is sent."""
    try:
        history = [encode_event(e) for e in commit.history]
        payloads = [encode_message(m) for m in commit.messages]
        works = [(w, w.to_json()) for w in commit.activities]
    except (TypeError, ValueError) as e:
        raise PayloadError(f"commit holds a value with no JSON form: {e}") from None
    claim = max(0, min(commit.claim_activities, len(works)))
    if commit.cancel_activities:
        # The statement's writes share one snapshot, so its DELETE would not see rows
        # its own INSERT adds: work this turn both schedules and cancels is left out.
        cancelled = set(commit.cancel_activities)
        keep = [(w, p) for w, p in works
                if (w.instance_id, w.execution_id, w.event_id) not in cancelled]
        claim -= sum(1 for w, _ in works[:claim]
                     if (w.instance_id, w.execution_id, w.event_id) in cancelled)
        works = keep
    # Timers the committing worker fires itself are left to it: neither an alarm nor a
    # note here, whose fetch would race it for the instance.
    due, noted = due_or_noted(
        [m for m in commit.messages if not isinstance(m.event, TimerFired)]
        if commit.worker_fires_timers else commit.messages)
    notes: list[tuple[Channel, str]] = [("orchestrator", i) for i in noted]
    # claimed work needs no wake-up: its worker has it already
    notes += [("activity", i) for i in dict.fromkeys(w.instance_id for w, _ in works[claim:])]
    acked = list(dict.fromkeys(commit.acked_activities))
    params: dict[str, Any] = {
        "acked_tokens": acked or None, "acked_count": len(acked),
        "execution_id": commit.execution_id,
        **_columns(("event_ids", "payloads"), [
            (e.event_id, p) for e, p in zip(commit.history, history, strict=True)]),
        "state": commit.state, "name": commit.name, "version": commit.version,
        "output": commit.output,
        "error": json.dumps(commit.error.to_json()) if commit.error is not None else None,
        "custom_status": commit.custom_status,
        **_columns(("work_keys", "work_ids", "work_execs", "work_events", "work_names",
                    "work_payloads", "work_tags", "work_sessions", "work_skeys"), [
            (key(w.instance_id), w.instance_id, w.execution_id, w.event_id, w.name, p,
             w.tag or "", w.session_id,
             None if w.session_id is None else key(w.session_id))
            for w, p in works]),
        "claim": claim, "claim_timeout": float(commit.claim_lock_timeout),
        **_columns(("cancel_keys", "cancel_execs", "cancel_events"), [
            (key(iid), ex, eid) for iid, ex, eid in commit.cancel_activities]),
        "notes": [note(ch, node_id, i) for ch, i in notes] or None,
        "self_prefix": note("orchestrator", node_id, ""),
        "terminal_prefix": note("terminal", node_id, "")
        if commit.state in TERMINAL_STATES else None,
        "updated_prefix": note("updated", node_id, "")
        if commit.custom_status_changed or commit.kv_changed else None,
        "status_bump": 1 if commit.custom_status_changed else 0,
        "unread": commit.unread, "kv_base_set": commit.replace_kv_base,
        "kv_base": kv_base_json(commit.kv_base) if commit.replace_kv_base else None,
        "kv_clear": commit.kv_clear,
        "kv_del_keys": [key(k) for k in commit.kv_delete] or None,
        **_columns(("kv_set_keys", "kv_set_names", "kv_set_values", "kv_set_ats"), [
            (key(k), k, v, at) for k, v, at in commit.kv_set]),
        **_message_params(commit.messages, payloads),
    }
    return Turn(params, notes, [w for w, _ in works[:claim]], due)


def consumed(messages: Sequence[OrchestratorMessage]) -> dict[str, Any]:
    """The parameters of commit_turn's part consume: the queued messages a turn consumed,
    by their stored form (distinct), and how many."""
    payloads = list(dict.fromkeys(encode_message(m) for m in messages))
    return {"consume": payloads or None, "consume_count": len(payloads)}


def kv_base_json(base: dict[str, KvEntry] | None) -> str | None:
    """The stored form of a record's ``kv_base``: a JSON object of key -> [value text,
    updated_at]; ``None`` for no state."""
    return json.dumps({k: [e.value, e.updated_at] for k, e in base.items()}) if base else None


def kv_base_from_json(text: str | None) -> dict[str, KvEntry]:
    if text is None:
        return {}
    return {k: KvEntry(v, int(at)) for k, (v, at) in json.loads(text).items()}


def completion_params(completion: OrchestratorMessage) -> dict[str, Any]:
    """The parameters of ack_activity for its message (all but token, channel, note)."""
    event = completion.event
    start = event if isinstance(event, OrchestrationStarted) else None
    return {
        "key": key(completion.instance_id), "instance_id": completion.instance_id,
        "payload": encode_message(completion), "due_at": completion.visible_at,
        "start_name": start.name if start else None,
        "start_version": start.version if start else None,
        "start_execution_id": start.execution_id if start else None,
        "start_custom_status": start.custom_status if start else None,
        "start_parent": start.parent_instance_id if start else None,
    }

"""The instance list: filters, pages and counts by state, read through the public
``Client`` only.

* State, orchestration name and creation time are filters of the store
  (``Client.list_instances_page``), so a page costs one query of ``PAGE_SIZE + 1``
  instances however large the store. Pages follow the client's keyset page tokens, in
  the client's order: oldest created first.
* The client has no call that counts. The counts by state read at most ``COUNT_CAP``
  instances of each state (one page call per state) and show ``1000+`` past it.
* The client has no id-prefix filter. With one, the list and its counts scan the
  store-filtered listing in chunks, at most ``SCAN_LIMIT`` instances a request; the
  page says when it stopped there, and its next link goes on from that point.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..client import Client, InstanceInfo, OrchestrationState

__all__ = ["COUNT_CAP", "PAGE_SIZE", "SCAN_LIMIT", "STATES", "Counts", "Filters", "Listing",
           "count_states", "list_page", "parse_time"]

#: instances on one page of the list
PAGE_SIZE = 50
#: the most instances of one state the counts read
COUNT_CAP = 1000
#: the most instances one request scans for an id prefix (the page, and its counts)
SCAN_LIMIT = 10_000
_CHUNK = 1000
STATES = [s.value for s in OrchestrationState if s is not OrchestrationState.NOT_FOUND]


@dataclass(frozen=True)
class Filters:
    state: str | None = None
    name: str | None = None
    prefix: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None

    def store(self, *, state: str | None) -> dict[str, Any]:
        """The filters the store applies (all but the prefix), with ``state``."""
        return {"state": state, "name": self.name, "created_after": self.created_after,
                "created_before": self.created_before}


@dataclass(frozen=True)
class Listing:
    items: tuple[InstanceInfo, ...]
    #: the cursor of the next page, ``None`` on the last one
    next_cursor: str | None
    #: with a prefix: how many instances this page scanned
    scanned: int = 0
    #: with a prefix: the scan stopped at SCAN_LIMIT before the page was full
    scan_cut: bool = False


@dataclass(frozen=True)
class Counts:
    """Instances by state, of those matching every filter but the state."""

    by_state: dict[str, int]
    #: the states whose count stopped at COUNT_CAP (there are more)
    capped: frozenset[str] = frozenset()
    #: with a prefix: the instances the counting scan read
    scanned: int = 0
    #: with a prefix: the scan stopped at SCAN_LIMIT (counts cover that many)
    scan_cut: bool = False

    def shown(self, state: str | None) -> str:
        """A count as the page shows it: ``1,000+`` when there are more."""
        if state is None:
            return f"{self.total:,}" + ("+" if self.capped or self.scan_cut else "")
        return f"{self.by_state[state]:,}" + ("+" if state in self.capped or self.scan_cut
                                              else "")

    @property
    def total(self) -> int:
        return sum(self.by_state.values())

    def matching(self, state: str | None) -> str:
        """How many match every filter, in words: exact unless a bound was hit."""
        n = self.total if state is None else self.by_state[state]
        inexact = self.scan_cut or bool(self.capped if state is None
                                        else state in self.capped)
        return f"at least {n:,}" if inexact else f"{n:,}"


def parse_time(text: str | None) -> datetime | None:
    """A time from the list's filter form (``YYYY-MM-DDTHH:MM[:SS]``, read as UTC), or
    ``None`` for an empty field. ``ValueError`` for anything else."""
    if not text:
        return None
    dt = datetime.fromisoformat(text)
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


# ====================================================================== cursors
# A cursor names where a page starts. Without a prefix it is the client's page token.
# With one it is our own: the client token of the chunk the page starts in, and the key
# (created_at, instance_id) of the last instance shown before, which the scan skips past
# (keys only grow along the listing, so an instance present throughout is shown once).
@dataclass(frozen=True)
class _ScanCursor:
    chunk_token: str | None
    after: tuple[datetime, str] | None

    def encode(self) -> str:
        after = None if self.after is None else [self.after[0].isoformat(), self.after[1]]
        raw = json.dumps(["scan", self.chunk_token, after], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> _ScanCursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            tag, chunk_token, after = json.loads(raw)
            if tag != "scan" or not (chunk_token is None or isinstance(chunk_token, str)):
                raise ValueError
            key = None if after is None else (datetime.fromisoformat(after[0]), str(after[1]))
        except (ValueError, TypeError, IndexError, binascii.Error, UnicodeDecodeError):
            raise ValueError("this page link was made for other filters (or is damaged): "
                             "start again from the first page") from None
        return cls(chunk_token, key)


def _key(info: InstanceInfo) -> tuple[datetime, str]:
    return info.created_at, info.instance_id


# ====================================================================== pages
async def list_page(client: Client, filters: Filters, cursor: str | None) -> Listing:
    """The page of ``filters`` that starts at ``cursor`` (``None``: the first).
    ``ValueError`` for a cursor made for other filters."""
    if filters.prefix:
        return await _prefix_page(client, filters, filters.prefix, cursor)
    try:
        page = await client.list_instances_page(**filters.store(state=filters.state),
                                                limit=PAGE_SIZE, page_token=cursor)
    except ValueError as e:
        raise ValueError(f"{e} (start again from the first page)") from None
    return Listing(page.items, page.next_page_token)


async def _prefix_page(client: Client, filters: Filters, prefix: str,
                       cursor: str | None) -> Listing:
    start = _ScanCursor(None, None) if cursor is None else _ScanCursor.decode(cursor)
    token, after = start.chunk_token, start.after
    found: list[InstanceInfo] = []
    scanned = 0
    while True:
        try:
            chunk = await client.list_instances_page(**filters.store(state=filters.state),
                                                     limit=_CHUNK, page_token=token)
        except ValueError as e:
            raise ValueError(f"{e} (start again from the first page)") from None
        for info in chunk.items:
            if after is not None and _key(info) <= after:
                continue
            scanned += 1
            if not info.instance_id.startswith(prefix):
                continue
            if len(found) == PAGE_SIZE:  # one more matches: the next page starts here
                nxt = _ScanCursor(token, _key(found[-1])).encode()
                return Listing(tuple(found), nxt, scanned - 1)
            found.append(info)
        after = None  # (only the first chunk holds instances shown before)
        if chunk.next_page_token is None:
            return Listing(tuple(found), None, scanned)
        token = chunk.next_page_token
        if scanned >= SCAN_LIMIT:
            return Listing(tuple(found), _ScanCursor(token, None).encode(), scanned,
                           scan_cut=True)


# ====================================================================== counts
async def count_states(client: Client, filters: Filters) -> Counts:
    """The counts by state of the instances matching every filter but the state."""
    if filters.prefix:
        return await _count_scan(client, filters, filters.prefix)
    by_state: dict[str, int] = {}
    capped: set[str] = set()
    for state in STATES:
        page = await client.list_instances_page(**filters.store(state=state), limit=COUNT_CAP)
        by_state[state] = len(page.items)
        if page.next_page_token is not None:
            capped.add(state)
    return Counts(by_state, frozenset(capped))


async def _count_scan(client: Client, filters: Filters, prefix: str) -> Counts:
    by_state = dict.fromkeys(STATES, 0)
    scanned = 0
    token: str | None = None
    while True:
        chunk = await client.list_instances_page(**filters.store(state=None), limit=_CHUNK,
                                                 page_token=token)
        for info in chunk.items:
            scanned += 1
            if info.instance_id.startswith(prefix):
                by_state[info.state.value] += 1
        token = chunk.next_page_token
        if token is None:
            return Counts(by_state, scanned=scanned)
        if scanned >= SCAN_LIMIT:
            return Counts(by_state, scanned=scanned, scan_cut=True)


# ====================================================================== paging links
#: how many earlier pages the "previous" links remember
TRAIL_KEEP = 20
#: the first page in a trail (cursors are base64url: no "~" and no ".")
_FIRST = "~"


@dataclass(frozen=True)
class Trail:
    """Where the reader is: this page's cursor, the cursors of the pages before it (the
    last ``TRAIL_KEEP``; "previous" goes back along them) and the page's number."""

    cursor: str | None = None
    back: list[str | None] = field(default_factory=list)
    number: int = 1

    @classmethod
    def parse(cls, cursor: str | None, back: str | None, number: str | None) -> Trail:
        earlier: list[str | None] = [None if c == _FIRST else c
                                     for c in (back or "").split(".") if c]
        n = int(number) if number else len(earlier) + 1
        if n < 1:
            raise ValueError(f"page number {n} is not 1 or more")
        return cls(cursor or None, earlier[-TRAIL_KEEP:], n)

    def params(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.cursor is not None:
            out["page"] = self.cursor
        if self.back:
            out["back"] = ".".join(_FIRST if c is None else c for c in self.back)
        if self.number > 1:
            out["n"] = str(self.number)
        return out

    def next(self, cursor: str) -> Trail:
        return Trail(cursor, [*self.back, self.cursor][-TRAIL_KEEP:], self.number + 1)

    def previous(self) -> Trail | None:
        if not self.back:
            return None
        return Trail(self.back[-1], self.back[:-1], self.number - 1)

"""The one rule for ids and names: instance ids and orchestration, activity and event
names are strings of 1 to 1,024 characters, any characters but NUL, that the stores can
hold as text (UTF-8 has no form for a lone surrogate). The client, the orchestration
context and the registries each raise their own error type for a breach."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from ._limits import MAX_TAG_NAME_BYTES
from .codec._common import storable

__all__ = ["did_you_mean", "name_problem", "suggestions", "tag_problem"]


def name_problem(value: object) -> str | None:
    """What is wrong with ``value`` as an id or name, or ``None``."""
    if not isinstance(value, str):
        return f"must be a str, not {type(value).__name__}"
    if not 1 <= len(value) <= 1024:
        return f"must be 1 to 1,024 characters long, got {len(value)}"
    if "\x00" in value:
        return "must not contain NUL characters"
    if not storable(value):
        return f"must be valid Unicode text (it holds a lone surrogate), got {value!r:.80}"
    return None


def tag_problem(value: object) -> str | None:
    """What is wrong with ``value`` as an activity tag (1 to ``MAX_TAG_NAME_BYTES``
    UTF-8 bytes, no NUL), or ``None``."""
    if not isinstance(value, str):
        return f"must be a str, not {type(value).__name__}"
    if "\x00" in value:
        return "must not contain NUL characters"
    if not storable(value):
        return f"must be valid Unicode text (it holds a lone surrogate), got {value!r:.80}"
    size = len(value.encode("utf-8"))
    if not 1 <= size <= MAX_TAG_NAME_BYTES:
        return (f"must be 1 to {MAX_TAG_NAME_BYTES} UTF-8 bytes long (MAX_TAG_NAME_BYTES), "
                f"got {size}")
    return None


def suggestions(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """The known names closest to ``name`` (a typo's likely intent), best first. A long
    namespaced name (``pkg::activity::reserve``) is also compared by its last part, so a
    typo there is not drowned by the shared prefix."""
    known = sorted(set(known) - {name})
    close = difflib.get_close_matches(name, known, n=n, cutoff=0.6)
    tail = name.rsplit("::", 1)[-1]
    if len(close) < n and tail != name:
        tails = {k.rsplit("::", 1)[-1]: k for k in known}
        for t in difflib.get_close_matches(tail, list(tails), n=n, cutoff=0.6):
            if tails[t] not in close:
                close.append(tails[t])
    return close[:n]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'greet'?)`` for the closest known names, or ``""``."""
    close = suggestions(name, known)
    if not close:
        return ""
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)"

"""The one rule for ids and names: instance ids and orchestration, activity and event
names are strings of 1 to 1,024 characters, any characters but NUL, that the stores can
hold as text (UTF-8 has no form for a lone surrogate). The client, the orchestration
context and the registries each raise their own error type for a breach."""

from __future__ import annotations

from .codec._common import storable

__all__ = ["name_problem"]


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

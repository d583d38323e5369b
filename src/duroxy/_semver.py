"""Semantic version strings: parsing and ordering (used by registries and the client)."""

from __future__ import annotations

import re
from typing import Any

from .errors import ConfigurationError

__all__ = ["parse_semver"]

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$")


def parse_semver(version: str) -> tuple[Any, ...]:
    """A sort key for a semver string; ``ConfigurationError`` when it is not one."""
    m = _SEMVER.match(version) if isinstance(version, str) else None
    if m is None:
        raise ConfigurationError(f"{version!r} is not a semantic version (MAJOR.MINOR.PATCH)")
    major, minor, patch, pre = m.groups()
    # A pre-release sorts before its release; numeric identifiers before alphanumeric.
    pre_key: tuple[Any, ...] = (1,) if pre is None else (0, *(
        (0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")))
    return (int(major), int(minor), int(patch), pre_key)

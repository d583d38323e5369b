"""``TagFilter``: which activities a runtime runs, by the tag each was scheduled with.

A filter is a frozen value that the runtime hands to the store with every fetch; the
stores compare it to the tag column of the activity queue (see ``docs/routing.md``).
Its text form (:meth:`TagFilter.to_text`) is what a worker's heartbeat row shows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, overload

from ._limits import MAX_WORKER_TAGS
from ._names import tag_problem

__all__ = ["TagFilter"]


class _TagsField:
    """``TagFilter.tags``: on the class, the constructor ``TagFilter.tags([...])``; on a
    filter, the tags it accepts (a ``frozenset``, its dataclass field)."""

    #: set once the dataclass is built: while it is being built, the class attribute
    #: must not look like a default value of the field
    ready = False

    @overload
    def __get__(self, obj: None, owner: type[TagFilter]
                ) -> Callable[[Iterable[str]], TagFilter]: ...
    @overload
    def __get__(self, obj: TagFilter, owner: type[TagFilter] | None = None
                ) -> frozenset[str]: ...

    def __get__(self, obj: TagFilter | None, owner: type[TagFilter] | None = None) -> Any:
        if obj is None:
            if not self.ready:
                raise AttributeError("tags")
            assert owner is not None
            return owner._of_tags
        return obj.__dict__["tags"]

    def __set__(self, obj: TagFilter, value: frozenset[str]) -> None:
        obj.__dict__["tags"] = value


def _checked_tags(tags: Iterable[str], call: str) -> frozenset[str]:
    """The tags given to ``TagFilter.<call>()``, checked."""
    if isinstance(tags, (str, bytes)):
        raise TypeError(f"TagFilter.{call}() takes an iterable of tags, not a single "
                        f"{type(tags).__name__} (it would be read as its letters): write "
                        f"TagFilter.{call}([{tags!r}])")
    try:
        listed = list(tags)
    except TypeError:
        raise TypeError(f"TagFilter.{call}() takes an iterable of tags, not "
                        f"{type(tags).__name__}") from None
    if not listed:
        raise ValueError(f"TagFilter.{call}() needs at least one tag (TagFilter.NONE runs no "
                         "activities, TagFilter.DEFAULT_ONLY only untagged ones)")
    for tag in listed:
        problem = tag_problem(tag)
        if problem is not None:
            raise ValueError(f"TagFilter.{call}(): a tag {problem}")
    found = frozenset(listed)
    if len(found) > MAX_WORKER_TAGS:
        raise ValueError(f"TagFilter.{call}() takes at most {MAX_WORKER_TAGS} tags "
                         f"(MAX_WORKER_TAGS), got {len(found)}")
    return found


@dataclass(frozen=True, repr=False)
class TagFilter:
    """Which activities a runtime runs, by their tag (``RuntimeOptions.worker_tag_filter``).

    - ``TagFilter.DEFAULT_ONLY`` (the default): untagged activities only;
    - ``TagFilter.tags(["gpu", "cpu"])``: activities tagged with one of these, never
      untagged ones;
    - ``TagFilter.default_and(["gpu"])``: untagged ones and these tags;
    - ``TagFilter.ANY``: every activity;
    - ``TagFilter.NONE``: none (an orchestration-only runtime).

    ``tags()`` and ``default_and()`` take 1 to ``MAX_WORKER_TAGS`` (5) tags of 1 to
    ``MAX_TAG_NAME_BYTES`` (256) UTF-8 bytes each, without NUL. A filter is a frozen
    value: ``tags`` and ``include_default`` read it back (``any_tag`` is set for ``ANY``
    only), ``matches(tag)`` says whether it accepts a tag (``None``: untagged work).
    """

    tags: _TagsField = _TagsField()
    include_default: bool = False
    #: every tag is accepted (``TagFilter.ANY``); ``tags`` is then empty
    any_tag: bool = False

    DEFAULT_ONLY: ClassVar[TagFilter]
    ANY: ClassVar[TagFilter]
    NONE: ClassVar[TagFilter]

    @classmethod
    def _of_tags(cls, tags: Iterable[str]) -> TagFilter:
        return cls(_checked_tags(tags, "tags"))

    @classmethod
    def default_and(cls, tags: Iterable[str]) -> TagFilter:
        """Untagged activities and those tagged with one of ``tags``."""
        return cls(_checked_tags(tags, "default_and"), True)

    def matches(self, tag: str | None) -> bool:
        """Whether this filter accepts an activity with ``tag`` (``None``: untagged)."""
        if tag is None:
            return self.include_default
        return self.any_tag or tag in self.tags

    @property
    def runs_nothing(self) -> bool:
        """Whether the filter accepts no activity at all (``TagFilter.NONE``)."""
        return not (self.tags or self.include_default or self.any_tag)

    def __repr__(self) -> str:
        if self.any_tag:
            return "TagFilter.ANY"
        if not self.tags:
            return "TagFilter.DEFAULT_ONLY" if self.include_default else "TagFilter.NONE"
        call = "default_and" if self.include_default else "tags"
        return f"TagFilter.{call}({sorted(self.tags)!r})"

    def to_text(self) -> str:
        """The filter as a worker's heartbeat row shows it: ``DEFAULT_ONLY``, ``ANY``,
        ``NONE``, ``tags ["cpu","gpu"]`` or ``default_and ["gpu"]`` (tags as a JSON
        array, sorted), read back by :meth:`from_text`."""
        if self.any_tag:
            return "ANY"
        if not self.tags:
            return "DEFAULT_ONLY" if self.include_default else "NONE"
        call = "default_and" if self.include_default else "tags"
        return f"{call} {json.dumps(sorted(self.tags), ensure_ascii=False)}"

    @classmethod
    def from_text(cls, text: str) -> TagFilter | None:
        """The filter :meth:`to_text` wrote, or ``None`` for a text it did not write."""
        fixed = {"DEFAULT_ONLY": cls.DEFAULT_ONLY, "ANY": cls.ANY, "NONE": cls.NONE}
        if text in fixed:
            return fixed[text]
        call, _, listed = text.partition(" ")
        try:
            tags = json.loads(listed)
            if call == "tags":
                return cls._of_tags(tags)
            if call == "default_and":
                return cls.default_and(tags)
        except (ValueError, TypeError):
            pass
        return None


_TagsField.ready = True
TagFilter.DEFAULT_ONLY = TagFilter(frozenset(), True)
TagFilter.ANY = TagFilter(frozenset(), True, True)
TagFilter.NONE = TagFilter(frozenset())

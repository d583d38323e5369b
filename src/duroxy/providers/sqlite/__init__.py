"""The embedded SQLite store: :class:`SqliteProvider`."""

from .provider import SqliteProvider

__all__ = ["SqliteProvider"]

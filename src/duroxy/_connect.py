"""``duroxy.connect(url)``: a provider from a store URL."""

from __future__ import annotations

import os

from .errors import ConfigurationError
from .providers.base import Provider

__all__ = ["connect"]


def connect(url: str, *, read_only: bool = False) -> Provider:
    """Build a provider from a URL: ``sqlite:///relative.db``, ``sqlite:////abs/path.db``,
    ``sqlite::memory:``, ``memory://`` (the in-memory reference store) or
    ``postgresql://user@host/db`` (with ``?schema=name`` to pick the schema; needs the
    ``postgres`` extra). A file path with no scheme (``/srv/app.db``, ``./app.db``,
    ``app.sqlite3``) is a SQLite file. Synchronous; nothing is opened until first use.

    ``read_only=True`` opens an existing store for reading only: it is never created,
    migrated or changed, and every write raises :class:`~duroxy.errors.StoreReadOnly`
    (see ``SqliteProvider`` and ``PostgresProvider``; ``sqlite:///x.db?mode=ro`` says
    the same in the URL). A store that is new and empty every time (``memory://``,
    ``sqlite::memory:``) has nothing to read: it raises
    :class:`~duroxy.errors.ConfigurationError`."""
    if not isinstance(url, str) or not url:
        raise ConfigurationError(f"store URL must be a non-empty string, got {url!r}")
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if len(scheme) <= 1 and _looks_like_a_path(url):  # none, or a drive letter
        from .providers.sqlite import SqliteProvider

        return SqliteProvider(url, read_only=read_only)
    if scheme == "sqlite":
        from .providers.sqlite import SqliteProvider

        return SqliteProvider(url, read_only=read_only)
    if scheme in ("postgresql", "postgres"):
        from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

        from .providers.postgres import PostgresProvider

        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        schema = query.pop("schema", "duroxy")
        dsn = urlunsplit(parts._replace(query=urlencode(query)))
        return PostgresProvider(dsn, schema=schema, read_only=read_only)
    if scheme == "memory":
        from .providers.memory import InMemoryProvider

        if read_only:
            raise ConfigurationError(f"{url} is a new, empty store each time: there is "
                                     "nothing to open read-only")
        return InMemoryProvider()
    raise ConfigurationError(
        f"unsupported store URL {url!r}: use sqlite:///path.db, sqlite::memory:, memory:// "
        "or postgresql://...")


def _looks_like_a_path(text: str) -> bool:
    return ("/" in text or os.sep in text
            or text.lower().endswith((".db", ".sqlite", ".sqlite3", ".duroxy")))

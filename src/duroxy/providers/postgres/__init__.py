"""PostgreSQL store for duroxy: :class:`PostgresProvider`.

Needs psycopg 3 and psycopg_pool, installed with the ``postgres`` extra
(``pip install "duroxy[postgres]"``). See ``docs/postgres.md`` for deployment notes.
"""

from __future__ import annotations

try:
    import psycopg  # noqa: F401 - only to fail early, with the hint below
    import psycopg_pool  # noqa: F401 - likewise
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "duroxy.providers.postgres needs psycopg 3 and psycopg_pool: "
        'install duroxy[postgres] (pip install "duroxy[postgres]")') from e

from .provider import PostgresProvider

__all__ = ["PostgresProvider"]

"""What a PostgreSQL error becomes for duroxy: a ``ProviderError``, retryable when trying
again may help (connection trouble, serialization failures and deadlocks, lock timeouts,
a server shutting down or out of resources)."""

from __future__ import annotations

import psycopg
from psycopg import errors as pg_errors

from ..._redact import redact
from ...errors import ProviderError

__all__ = ["OutcomeUnknown", "provider_error", "retryable"]

#: SQLSTATE classes worth retrying.
_RETRYABLE_SQLSTATE_PREFIXES = ("08", "40", "55P03", "57P", "53")


def retryable(e: psycopg.Error) -> bool:
    if isinstance(e, psycopg.OperationalError) and e.sqlstate is None:
        return True  # connection lost, pool timeout: no server answer at all
    state = e.sqlstate or ""
    return state.startswith(_RETRYABLE_SQLSTATE_PREFIXES)


class OutcomeUnknown(ProviderError):
    """A transaction whose COMMIT may or may not have taken effect: the connection
    failed, or the server ended the session, after it was sent."""


def provider_error(e: psycopg.Error) -> ProviderError:
    if isinstance(e, pg_errors.UniqueViolation):
        detail = e.diag.message_detail or ""
        return ProviderError(redact(f"PostgreSQL store: duplicate key ({detail or e})"))
    # A driver's message may quote the connection string: its password never shows.
    return ProviderError(redact(f"PostgreSQL store: {type(e).__name__}: {e}"),
                         retryable=retryable(e))

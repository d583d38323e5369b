"""Every error duroxy raises, in one tree.

::

    DuroxyError                        base of every duroxy exception
    ├── ActivityFailed                 an activity raised (after its retries)
    ├── NonRetryableError              raised by an activity: fail now, retry no more
    ├── SubOrchestrationFailed         a child orchestration failed or was cancelled
    ├── NondeterminismError            orchestration code disagrees with its history
    ├── InstanceAlreadyExists          start_orchestration with a taken id
    ├── InstanceNotFound               an id no store knows
    ├── NotRegistered                  no orchestration/activity/version of that name here
    ├── PayloadError (also TypeError)  a value cannot be encoded to or decoded from JSON
    ├── NonDurableAwait                orchestration code awaited something not durable
    ├── ConfigurationError (ValueError) a registry, option or URL is malformed
    └── ProviderError                  the store failed; ``retryable`` says whether to retry
        ├── LockLost                   a lock token expired or its row vanished
        ├── StoreNotFound              opened read-only: no store there (no file, schema
        │                              or duroxy tables)
        ├── StoreReadOnly              a write through a store opened read-only
        └── SchemaVersionError         the store's schema is newer than this duroxy knows

Timeouts are Python's own :class:`TimeoutError`; bad identifiers are :class:`ValueError`.

Internal control flow (continue-as-new, replay suspension) derives from
:class:`BaseException` only, never from :class:`Exception`, so a user's
``except Exception`` can never swallow it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "ActivityFailed",
    "ConfigurationError",
    "DuroxyError",
    "ErrorDetails",
    "InstanceAlreadyExists",
    "InstanceNotFound",
    "LockLost",
    "NonDurableAwait",
    "NonRetryableError",
    "NondeterminismError",
    "NotRegistered",
    "PayloadError",
    "ProviderError",
    "SchemaVersionError",
    "StoreNotFound",
    "StoreReadOnly",
    "SubOrchestrationFailed",
]


class DuroxyError(Exception):
    """Base class of every exception duroxy raises on purpose."""


class ActivityFailed(DuroxyError):
    """An activity failed; raised inside the orchestration that awaited it.

    ``error_type`` is the qualified name of the exception the last attempt raised,
    ``attempts`` how many attempts ran, and ``retryable`` is false when the failure
    stopped the retries before the policy's ``max_attempts`` (the activity raised a
    :class:`NonRetryableError`, or the error type is listed in the policy's
    ``non_retryable``)."""

    def __init__(
        self,
        activity_name: str,
        error_type: str,
        message: str,
        attempts: int = 1,
        *,
        kind: str = "application",
        retryable: bool = True,
    ) -> None:
        self.activity_name = activity_name
        self.error_type = error_type
        self.message = message
        self.attempts = attempts
        self.kind = kind
        self.retryable = retryable
        if kind == "application":
            head = (f"activity {activity_name!r} failed after {attempts} attempt"
                    f"{'s' if attempts != 1 else ''}")
        else:  # it never ran to its end (not registered, poison): no attempt to count
            head = f"activity {activity_name!r} could not run ({kind})"
        super().__init__(f"{head}: {error_type}: {message}")


class NonRetryableError(DuroxyError):
    """Raised by an activity (or a subclass of it is): the activity fails with no
    further attempts, whatever its ``RetryPolicy`` says. The orchestration sees
    :class:`ActivityFailed` with ``retryable`` false and ``error_type`` the qualified
    name of the class raised, so a subclass per business error (``class
    CardDeclined(NonRetryableError)``) lets the orchestration tell them apart."""


class SubOrchestrationFailed(DuroxyError):
    """A child orchestration ended FAILED or CANCELLED."""

    def __init__(
        self, orchestration_name: str, instance_id: str, error_type: str, message: str
    ) -> None:
        self.orchestration_name = orchestration_name
        self.instance_id = instance_id
        self.error_type = error_type
        self.message = message
        super().__init__(
            f"sub-orchestration {orchestration_name!r} ({instance_id}) failed: "
            f"{error_type}: {message}"
        )


class NondeterminismError(DuroxyError):
    """Orchestration code asked for something other than what its history records."""


class InstanceAlreadyExists(DuroxyError):
    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        super().__init__(f"an instance with id {instance_id!r} already exists")


class InstanceNotFound(DuroxyError):
    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        super().__init__(f"no instance with id {instance_id!r}")


class NotRegistered(DuroxyError):
    """No orchestration, activity or version of that name is registered on this worker."""


class PayloadError(DuroxyError, TypeError):
    """A value has no JSON form, or stored JSON does not fit the annotated type."""


class NonDurableAwait(DuroxyError):
    """Orchestration code awaited something that is not recorded in history."""


class ConfigurationError(DuroxyError, ValueError):
    """A registry, an option or a store URL is malformed."""


class ProviderError(DuroxyError):
    """The store failed. ``retryable`` is true when trying again may succeed."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        self.retryable = retryable
        super().__init__(message)


class LockLost(ProviderError):
    """A lock token expired, was released, or its work item was deleted (cancelled)."""

    def __init__(self, message: str = "lock lost") -> None:
        super().__init__(message, retryable=False)


class StoreNotFound(ProviderError):
    """A store opened read-only is not there: no such file or schema, or one that holds
    no duroxy tables. ``store`` names where it was looked for. (A store opened for
    writing is created and migrated instead.)"""

    def __init__(self, message: str, *, store: str) -> None:
        self.store = store
        super().__init__(message, retryable=False)


class StoreReadOnly(ProviderError):
    """A write through a provider opened read-only (``read_only=True``), or a runtime
    started on one. Never retryable: open the store without ``read_only`` to write."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class SchemaVersionError(ProviderError):
    """The store's schema is of a version this duroxy cannot use: newer than it knows
    (upgrade duroxy), or, opened read-only, older and not migrated yet (reading it
    would need the migration that a read-only opening may not run)."""

    def __init__(self, store: str, store_version: int, supported_version: int) -> None:
        self.store = store
        self.store_version = store_version
        self.supported_version = supported_version
        if store_version > supported_version:
            message = (f"{store} has schema version {store_version}, newer than this duroxy "
                       f"knows (schema version {supported_version}): upgrade duroxy")
        else:
            message = (f"{store} has schema version {store_version}, older than this "
                       f"duroxy's (schema version {supported_version}), and a read-only "
                       "opening does not migrate: open it once for writing (a worker "
                       "does), then read it")
        super().__init__(message, retryable=False)


@dataclass(frozen=True, slots=True)
class ErrorDetails:
    """Why an instance failed: ``kind`` is one of ``application``, ``nondeterminism``,
    ``poison``, ``not_registered``, ``cancelled``."""

    kind: str
    error_type: str
    message: str

    def __str__(self) -> str:
        return f"{self.error_type}: {self.message}" if self.error_type else self.message

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "error_type": self.error_type, "message": self.message}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ErrorDetails:
        return cls(
            kind=str(data.get("kind", "application")),
            error_type=str(data.get("error_type", "")),
            message=str(data.get("message", "")),
        )


def message_of(exc: BaseException) -> str:
    """``str(exc)`` for recording a failure; an exception whose ``str()`` itself fails
    is described by its type, so that recording the failure cannot fail too."""
    try:
        return str(exc)
    except Exception as e:
        return f"<{type(exc).__qualname__}: str() failed with {type(e).__qualname__}>"

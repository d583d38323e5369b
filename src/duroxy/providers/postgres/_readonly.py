"""The read-only flag of PostgresProvider and the refusal of writes it brings."""

from __future__ import annotations

from ..base import read_only_refusal

__all__ = ["ReadOnlyGuard"]


class ReadOnlyGuard:
    """Mixed into PostgresProvider (before ``Provider``, whose ``read_only`` it answers).
    Every write operation calls :meth:`_writable` first, so a read-only provider refuses
    it before anything is sent; its sessions are read-only as well (see
    ``session_setup``), so a write that slipped through would fail in the server."""

    _read_only: bool
    _schema: str

    @property
    def read_only(self) -> bool:
        return self._read_only

    def _writable(self, operation: str) -> None:
        if self._read_only:
            raise read_only_refusal(f"the PostgreSQL store in schema {self._schema!r}",
                                    operation)

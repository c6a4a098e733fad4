"""The store's refusals; the service maps each to a status (rpc/status.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hashmatch.server.store.records import ApplyOutcome

from hashmatch.server import errors


class StoreError(Exception):
    """Base of the store's refusals; the service maps each to a status code."""


class ListNotFound(StoreError):
    pass


class ListExists(StoreError):
    pass


class TenantExists(StoreError):
    pass


class TenantNotFound(StoreError):
    pass


class StaleVersion(StoreError):
    def __init__(self, current: int) -> None:
        super().__init__(f"the list is at version {current}")
        self.current = current


class BatchIdReused(StoreError):
    pass


class StoreFull(StoreError, errors.StoreFull):
    """The disk or the map is full. Nothing of the failed write was kept."""

    def __init__(self, message: str) -> None:
        errors.StoreFull.__init__(self, message)


class BatchRefused(StoreError):
    """A batch of a group was refused (`cause`); the batches before it were committed and
    `applied` holds their outcomes, in order."""

    def __init__(self, applied: list[ApplyOutcome], cause: StoreError) -> None:
        super().__init__(str(cause))
        self.applied = applied
        self.cause = cause

"""Refusals as the domain raises them: what went wrong, never how it travels.

Nothing here knows gRPC. Each refusal is a class; `rpc/status.py` holds the one table that
turns a class into a status code and an `ErrorReason`. A refusal's message names the field
or the rule, never list data or a submitted hash.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Violation:
    field: str
    description: str


# A batch of 100,000 bad entries must not produce an error larger than the batch.
MAX_VIOLATIONS = 100


class Refusal(Exception):
    """A request the service will not carry out; subclasses say why."""

    def __init__(
        self,
        message: str,
        violations: Sequence[Violation] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.violations = tuple(violations[:MAX_VIOLATIONS])
        # Seconds after which the same request may succeed (RESOURCE_EXHAUSTED kinds).
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message


class InvalidArgument(Refusal):
    """A field breaks a rule; `violations` names each field."""


class Unauthenticated(Refusal):
    pass


class WrongRole(Refusal):
    pass


class NotListOwner(Refusal):
    pass


class ListNotFound(Refusal):
    pass


class ReferenceNotFound(Refusal):
    pass


class ListExists(Refusal):
    pass


class NameUnavailable(Refusal):
    """CreateList of a name another tenant's list has: told without saying whose, or
    that it is a list (see ListServicer.CreateList)."""


class StaleVersion(Refusal):
    def __init__(self, current: int, message: str | None = None) -> None:
        super().__init__(
            message or f"the list is at version {current}",
            (Violation("expected_version", f"the list is at version {current}"),),
        )
        self.current = current


class BatchIdReused(Refusal):
    pass


class ReadOnlyReplica(Refusal):
    pass


class RateLimited(Refusal):
    pass


class ProbeThrottled(Refusal):
    """PDQ queries of a tenant are paused after it walked a listed hash's threshold."""


class Overloaded(Refusal):
    """The process, or the tenant's share of it, has no room for another call now."""


class StoreFull(Refusal):
    """The store is out of space; what it already held is intact and still served."""


class DeadlineExceeded(Refusal):
    pass


class StreamIdle(Refusal):
    """A stream sent nothing for longer than the idle limit."""


class Unimplemented(Refusal):
    pass


def invalid(violations: Sequence[Violation], message: str | None = None) -> InvalidArgument:
    first = violations[0]
    text = message or (
        f"invalid field {first.field}: {first.description}"
        + (f" (and {len(violations) - 1} more)" if len(violations) > 1 else "")
    )
    return InvalidArgument(text, violations)


def deadline_exceeded() -> DeadlineExceeded:
    return DeadlineExceeded("the call's deadline passed before it was answered")

"""Refusals as the service raises them, and their one mapping to gRPC statuses.

Handlers raise ServiceError; the handler wrapper in `handlers.py` turns it into a
google.rpc.Status with ErrorInfo (a reason from hashmatch.v1.ErrorReason) and, for bad
fields, BadRequest field violations. Messages never echo list data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from hashmatch.v1 import hashes_pb2

DOMAIN = "hashmatch.v1"


@dataclass(frozen=True)
class Violation:
    field: str
    description: str


@dataclass
class ServiceError(Exception):
    code: grpc.StatusCode
    message: str
    reason: int = hashes_pb2.ERROR_REASON_UNSPECIFIED
    violations: Sequence[Violation] = field(default_factory=tuple)
    retry_after: float | None = None

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    def to_status(self) -> status_pb2.Status:
        details = []
        info = error_details_pb2.ErrorInfo(
            reason=hashes_pb2.ErrorReason.Name(self.reason), domain=DOMAIN
        )
        details.append(_pack(info))
        if self.violations:
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in self.violations
                ]
            )
            details.append(_pack(bad))
        if self.retry_after is not None:
            delay = duration_pb2.Duration()
            delay.FromMilliseconds(int(self.retry_after * 1000))
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=details)


# A batch of 100,000 bad entries must not produce an error larger than the batch.
MAX_VIOLATIONS = 100


def invalid(violations: Sequence[Violation], message: str | None = None) -> ServiceError:
    first = violations[0]
    text = message or (
        f"invalid field {first.field}: {first.description}"
        + (f" (and {len(violations) - 1} more)" if len(violations) > 1 else "")
    )
    return ServiceError(
        grpc.StatusCode.INVALID_ARGUMENT,
        text,
        hashes_pb2.ERROR_REASON_INVALID_FIELD,
        tuple(violations[:MAX_VIOLATIONS]),
    )


def _pack(msg: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)  # type: ignore[arg-type]
    return packed


def store_full(exc: Exception) -> ServiceError:
    """The store is out of space; what it already held is intact and still served."""
    return ServiceError(
        grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), hashes_pb2.ERROR_REASON_STORE_FULL
    )

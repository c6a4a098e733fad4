"""The one table from domain refusals to gRPC status codes and `ErrorReason`s.

A refusal becomes a google.rpc.Status with ErrorInfo (reason, domain), BadRequest field
violations when it names fields, and RetryInfo when it says when to retry. Anything that
is not a refusal is INTERNAL and logged by the pipeline; its text never reaches the client.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from hashmatch.server import errors
from hashmatch.v1 import hashes_pb2

DOMAIN = "hashmatch.v1"

_R = hashes_pb2
TABLE: dict[type[errors.Refusal], tuple[grpc.StatusCode, int]] = {
    errors.InvalidArgument: (grpc.StatusCode.INVALID_ARGUMENT, _R.ERROR_REASON_INVALID_FIELD),
    errors.Unauthenticated: (grpc.StatusCode.UNAUTHENTICATED, _R.ERROR_REASON_UNAUTHENTICATED),
    errors.WrongRole: (grpc.StatusCode.PERMISSION_DENIED, _R.ERROR_REASON_WRONG_ROLE),
    errors.NotListOwner: (grpc.StatusCode.PERMISSION_DENIED, _R.ERROR_REASON_NOT_LIST_OWNER),
    errors.ListNotFound: (grpc.StatusCode.NOT_FOUND, _R.ERROR_REASON_LIST_NOT_FOUND),
    errors.ReferenceNotFound: (grpc.StatusCode.NOT_FOUND, _R.ERROR_REASON_LIST_NOT_FOUND),
    errors.ListExists: (grpc.StatusCode.ALREADY_EXISTS, _R.ERROR_REASON_LIST_EXISTS),
    # Not LIST_EXISTS: that would tell another tenant's list has the name.
    errors.NameUnavailable: (grpc.StatusCode.FAILED_PRECONDITION, _R.ERROR_REASON_UNSPECIFIED),
    errors.StaleVersion: (grpc.StatusCode.FAILED_PRECONDITION, _R.ERROR_REASON_STALE_VERSION),
    errors.BatchIdReused: (grpc.StatusCode.FAILED_PRECONDITION, _R.ERROR_REASON_BATCH_ID_REUSED),
    errors.ReadOnlyReplica: (
        grpc.StatusCode.FAILED_PRECONDITION,
        _R.ERROR_REASON_READ_ONLY_REPLICA,
    ),
    errors.RateLimited: (grpc.StatusCode.RESOURCE_EXHAUSTED, _R.ERROR_REASON_RATE_LIMITED),
    errors.ProbeThrottled: (grpc.StatusCode.RESOURCE_EXHAUSTED, _R.ERROR_REASON_RATE_LIMITED),
    errors.Overloaded: (grpc.StatusCode.RESOURCE_EXHAUSTED, _R.ERROR_REASON_OVERLOADED),
    errors.StoreFull: (grpc.StatusCode.RESOURCE_EXHAUSTED, _R.ERROR_REASON_STORE_FULL),
    errors.DeadlineExceeded: (grpc.StatusCode.DEADLINE_EXCEEDED, _R.ERROR_REASON_UNSPECIFIED),
    errors.StreamIdle: (grpc.StatusCode.DEADLINE_EXCEEDED, _R.ERROR_REASON_STREAM_IDLE),
    errors.Unimplemented: (grpc.StatusCode.UNIMPLEMENTED, _R.ERROR_REASON_UNSPECIFIED),
}


def code_and_reason(refusal: errors.Refusal) -> tuple[grpc.StatusCode, int]:
    for cls in type(refusal).__mro__:
        row = TABLE.get(cls)  # type: ignore[arg-type]
        if row is not None:
            return row
    raise LookupError(f"no status for {type(refusal).__name__}; add it to rpc/status.py")


def _pack(msg: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed


def to_status(refusal: errors.Refusal) -> status_pb2.Status:
    code, reason = code_and_reason(refusal)
    details = [
        _pack(
            error_details_pb2.ErrorInfo(reason=hashes_pb2.ErrorReason.Name(reason), domain=DOMAIN)
        )
    ]
    if refusal.violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in refusal.violations
            ]
        )
        details.append(_pack(bad))
    if refusal.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(refusal.retry_after * 1000))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status_pb2.Status(code=code.value[0], message=refusal.message, details=details)

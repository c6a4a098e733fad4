"""Typed exceptions for failed calls, carrying the server's error details."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class FieldViolation:
    """One refused field: its path in the request (e.g. "upserts[3].hash.value") and why."""

    field: str
    description: str


class HashmatchError(Exception):
    """A call the server refused or could not answer."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        violations: tuple[FieldViolation, ...] = (),
        retry_delay: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.reason = reason
        self.violations = violations
        self.retry_delay = retry_delay

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        for v in self.violations:
            text += f"\n  {v.field}: {v.description}"
        return text


class InvalidArgument(HashmatchError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class Unauthenticated(HashmatchError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(HashmatchError):
    code = grpc.StatusCode.PERMISSION_DENIED


class NotFound(HashmatchError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(HashmatchError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(HashmatchError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(HashmatchError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(HashmatchError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(HashmatchError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unimplemented(HashmatchError):
    code = grpc.StatusCode.UNIMPLEMENTED


_BY_CODE: dict[grpc.StatusCode, type[HashmatchError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        Unauthenticated,
        PermissionDenied,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Unimplemented,
    )
}


def from_status(status: status_pb2.Status) -> HashmatchError:
    """Builds the typed exception for a google.rpc.Status (as MatchBatch results carry)."""
    code = _status_code(status.code)
    reason = ""
    violations: list[FieldViolation] = []
    retry_delay: float | None = None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_delay = retry.retry_delay.ToTimedelta().total_seconds()
    cls = _BY_CODE.get(code, HashmatchError)
    return cls(
        status.message,
        code=code,
        reason=reason,
        violations=tuple(violations),
        retry_delay=retry_delay,
    )


def from_rpc_error(error: grpc.RpcError) -> HashmatchError:
    """Builds the typed exception for a failed call, keeping any rich details."""
    # Works for both grpc.Call errors and grpc.aio.AioRpcError (not a grpc.Call, same methods).
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except (AttributeError, TypeError, ValueError):
        status = None  # no trailing metadata, or rich details inconsistent with the status
    if status is not None:
        return from_status(status)
    code_of = getattr(error, "code", None)
    details_of = getattr(error, "details", None)
    code = code_of() if callable(code_of) else grpc.StatusCode.UNKNOWN
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    message = details_of() if callable(details_of) else str(error)
    cls = _BY_CODE.get(code, HashmatchError)
    return cls(message or code.name, code=code)


def _status_code(value: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN

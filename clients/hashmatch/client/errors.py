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


def from_rpc_error(
    error: grpc.RpcError, *, tls: bool | None = None, client_cert: bool = False
) -> HashmatchError:
    """Builds the typed exception for a failed call, keeping any rich details.

    A connection that failed because of TLS gets a message saying what is likely wrong;
    ``tls`` (whether the channel used TLS; None: not known) and ``client_cert`` (whether it
    presented one) tell apart the cases grpc reports alike ("Socket closed").
    """
    typed = _from_rpc_error(error)
    if typed.code == grpc.StatusCode.UNAVAILABLE:
        hint = tls_hint(typed.message, tls=tls, client_cert=client_cert)
        if hint:
            return type(typed)(
                f"{hint} [gRPC: {typed.message}]",
                code=typed.code,
                reason=typed.reason,
                violations=typed.violations,
                retry_delay=typed.retry_delay,
            )
    return typed


def tls_hint(message: str, *, tls: bool | None = None, client_cert: bool = False) -> str:
    """What a failed connection's gRPC message likely means for TLS, in words ("" if none).

    grpc core reports TLS mistakes as handshake errors, and a server that ends the
    handshake (a plaintext client at a TLS server, a missing or refused client
    certificate) only as "Socket closed": the client's own set-up tells which is likely.
    """
    if "WRONG_VERSION_NUMBER" in message:
        return (
            "the server does not speak TLS (it serves plaintext): connect without "
            "--ca-file/--cert-file/--key-file (tls=None)"
        )
    if "CERTIFICATE_VERIFY_FAILED" in message:
        reason = message.split("CERTIFICATE_VERIFY_FAILED", 1)[1].lstrip(": ").split(":")[0]
        if "expired" in reason or "not yet valid" in reason:
            return f"certificate verify failed: the server's certificate {reason.strip()}"
        return (
            "certificate verify failed: the server's certificate is not signed by the CA "
            "given (--ca-file; without it, the system's CAs)"
        )
    if "Hostname Verification Check failed" in message or "No match found for server" in message:
        return (
            "the server's certificate is not issued to the address dialled: connect by a name "
            "it lists, or set TlsConfig(server_name=...)"
        )
    alert = any(
        a in message
        for a in (
            "CERTIFICATE_REQUIRED",
            "PEER_DID_NOT_RETURN_A_CERTIFICATE",
            "ALERT_BAD_CERTIFICATE",
            "ALERT_UNKNOWN_CA",
            "ALERT_HANDSHAKE_FAILURE",
        )
    )
    closed = "Socket closed" in message or "Connection reset by peer" in message
    if not (alert or closed):
        return ""
    if tls is False:
        return (
            "the server closed the connection at once: it likely requires TLS: pass --ca-file "
            "CA.pem (TlsConfig(ca_file=...)), and for mTLS --cert-file and --key-file"
        )
    if tls and not client_cert:
        return (
            "the server ended the TLS handshake: it likely requires a client certificate "
            "(mTLS): pass --cert-file and --key-file"
        )
    if tls:
        return (
            "the server ended the TLS handshake: it likely refused the client certificate "
            "(mTLS): is it signed by the CA the server trusts (--tls-client-ca), and valid?"
        )
    if alert:
        return (
            "the server refused the TLS handshake: it likely requires a client certificate (mTLS)"
        )
    return (
        "the server closed the connection at once: if it serves TLS, pass --ca-file; "
        "if mTLS, also --cert-file and --key-file"
    )


def _from_rpc_error(error: grpc.RpcError) -> HashmatchError:
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

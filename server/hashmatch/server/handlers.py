"""Builds the gRPC method handlers of a service from its descriptor.

Every method goes through one wrapper, in this order: authenticate the bearer token, refuse
an undecodable request naming its field, run the servicer method, and map a ServiceError
(or an unexpected failure) to a status with rich details. A servicer method that does not
exist answers UNIMPLEMENTED, never a fake result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from grpc_status import rpc_status

from hashmatch.server.errors import ServiceError, Violation, invalid
from hashmatch.server.store import Role, Tenant
from hashmatch.server.wire import Undecodable, lenient_deserializer
from hashmatch.v1 import hashes_pb2

log = logging.getLogger(__name__)

Authenticator = Callable[[str], Tenant | None]


def authenticate(context: grpc.ServicerContext, lookup: Authenticator) -> Tenant:
    header = ""
    for key, value in context.invocation_metadata():
        if key == "authorization":
            header = value if isinstance(value, str) else value.decode("latin-1")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ServiceError(
            grpc.StatusCode.UNAUTHENTICATED,
            "missing bearer token (metadata 'authorization: Bearer <token>')",
            hashes_pb2.ERROR_REASON_UNAUTHENTICATED,
        )
    tenant = lookup(token.strip())
    if tenant is None:
        raise ServiceError(
            grpc.StatusCode.UNAUTHENTICATED,
            "unknown or revoked token",
            hashes_pb2.ERROR_REASON_UNAUTHENTICATED,
        )
    return tenant


def _checked(request: Message | Undecodable) -> Message:
    if isinstance(request, Undecodable):
        raise invalid([Violation(request.field or "(request)", request.description)])
    return request


def _checked_stream(requests: Iterator[Message | Undecodable]) -> Iterator[Message]:
    for request in requests:
        yield _checked(request)


def _abort(context: grpc.ServicerContext, method: str, exc: BaseException) -> None:
    if isinstance(exc, ServiceError):
        context.abort_with_status(rpc_status.to_status(exc.to_status()))
    log.exception("unexpected failure in %s", method)
    context.abort(grpc.StatusCode.INTERNAL, "internal error")


def service_handler(
    service: ServiceDescriptor, servicer: object, lookup: Authenticator
) -> grpc.GenericRpcHandler:
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        request_cls = message_factory.GetMessageClass(method.input_type)
        impl = getattr(servicer, method.name, None)
        full_name = f"/{service.full_name}/{method.name}"
        handlers[method.name] = _method_handler(
            full_name,
            impl,
            lookup,
            lenient_deserializer(request_cls),
            method.client_streaming,
            method.server_streaming,
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def _method_handler(
    name: str,
    impl: Callable[..., Any] | None,
    lookup: Authenticator,
    deserialize: Callable[[bytes], Any],
    client_streaming: bool,
    server_streaming: bool,
) -> grpc.RpcMethodHandler:
    def prepare(request: Any, context: grpc.ServicerContext) -> tuple[Any, Tenant]:
        tenant = authenticate(context, lookup)
        if impl is None:
            raise ServiceError(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not implemented yet")
        checked = _checked_stream(request) if client_streaming else _checked(request)
        return checked, tenant

    serialize = _serialize
    if server_streaming:

        def streaming(request: Any, context: grpc.ServicerContext) -> Iterator[Message]:
            try:
                checked, tenant = prepare(request, context)
                assert impl is not None
                yield from impl(checked, context, tenant)
            except Exception as exc:
                _abort(context, name, exc)

        factory = (
            grpc.stream_stream_rpc_method_handler
            if client_streaming
            else grpc.unary_stream_rpc_method_handler
        )
        return factory(streaming, request_deserializer=deserialize, response_serializer=serialize)

    def unary(request: Any, context: grpc.ServicerContext) -> Message:
        try:
            checked, tenant = prepare(request, context)
            assert impl is not None
            return impl(checked, context, tenant)
        except Exception as exc:
            _abort(context, name, exc)
            raise  # abort raises; this keeps type checkers aware

    factory = (
        grpc.stream_unary_rpc_method_handler
        if client_streaming
        else grpc.unary_unary_rpc_method_handler
    )
    return factory(unary, request_deserializer=deserialize, response_serializer=serialize)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def require_role(tenant: Tenant, *roles: Role) -> None:
    if tenant.role not in roles:
        allowed = " or ".join(r.value for r in roles)
        raise ServiceError(
            grpc.StatusCode.PERMISSION_DENIED,
            f"this call needs the {allowed} role; the caller is a {tenant.role.value}",
            hashes_pb2.ERROR_REASON_WRONG_ROLE,
        )

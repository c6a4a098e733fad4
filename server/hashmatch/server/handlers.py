"""Builds the gRPC method handlers of a service from its descriptor.

Every call goes through the same layers, outermost first, one concern each:

1. **observe** — after the handler returns or fails (in `finally`), every observer gets
   the finished `Call` record: the RPC log line and the metrics (`observers.py`). The
   record holds method, code, duration, tenant, item count and peer, never a request.
2. **status** — a ServiceError becomes a google.rpc.Status with rich details, anything
   unexpected INTERNAL (logged with its traceback, never the request).
3. **deadline** — a call whose deadline already passed is refused with DEADLINE_EXCEEDED
   before any work; calls without a deadline get the server's cap (the reaper cancels a
   call still running past it). WatchChanges, a follow-forever stream, is exempt.
4. **authenticate** — the bearer token names the tenant, or UNAUTHENTICATED.
5. **admit** — counts the call's match items and charges them to the tenant's token
   bucket (RESOURCE_EXHAUSTED with RetryInfo when empty); a streamed request is counted and
   charged message by message.
6. **decode** — a request that did not parse is refused naming its field; then the
   servicer method runs. A method the servicer lacks answers UNIMPLEMENTED.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from grpc_status import rpc_status

from hashmatch.server.errors import ServiceError, Violation, invalid
from hashmatch.server.limits import DeadlineReaper, RateLimiter
from hashmatch.server.store import Role, Tenant
from hashmatch.server.wire import Undecodable, lenient_deserializer
from hashmatch.v1 import hashes_pb2, match_pb2

log = logging.getLogger(__name__)

Authenticator = Callable[[str], Tenant | None]

# Streams that follow a list for as long as the client wants get no server-side cap.
UNCAPPED = frozenset({"/hashmatch.v1.ListService/WatchChanges"})
# Streams that answer an undecodable message with a per-item error instead of ending.
PER_ITEM_ERRORS = frozenset({"/hashmatch.v1.MatchService/MatchStream"})


@dataclass
class Call:
    """What is known of one RPC; all that observers (logs, metrics) ever see."""

    method: str
    started: float
    peer: str = ""
    tenant: str = ""
    items: int = 0
    code: grpc.StatusCode = grpc.StatusCode.OK
    duration: float = 0.0


Observer = Callable[[Call], None]


@dataclass
class Pipeline:
    """The layers every call passes through, with what they need, passed explicitly."""

    authenticate: Authenticator
    limiter: RateLimiter | None = None
    reaper: DeadlineReaper | None = None
    deadline_cap: float = 30.0
    stream_deadline_cap: float = 3600.0
    observers: Sequence[Observer] = field(default_factory=tuple)


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


def match_items(request: Any) -> int:
    """Match items (uploads) in one request message; 0 for anything but matching."""
    if isinstance(request, match_pb2.MatchRequest):
        return 1
    if isinstance(request, match_pb2.MatchBatchRequest):
        return len(request.items)
    return 0


def _no_items(_request: Any) -> int:
    return 0


def _one_item(request: Any) -> int:
    return 0 if isinstance(request, Undecodable) else 1


def _batch_items(request: Any) -> int:
    return 0 if isinstance(request, Undecodable) else len(request.items)


# Match items per request message, by request type (see `match_items`).
_ITEM_COUNTERS: dict[str, Callable[[Any], int]] = {
    match_pb2.MatchRequest.DESCRIPTOR.full_name: _one_item,
    match_pb2.MatchBatchRequest.DESCRIPTOR.full_name: _batch_items,
}


def _checked(request: Message | Undecodable) -> Message:
    if isinstance(request, Undecodable):
        raise invalid([Violation(request.field or "(request)", request.description)])
    return request


def deadline_exceeded() -> ServiceError:
    return ServiceError(
        grpc.StatusCode.DEADLINE_EXCEEDED, "the call's deadline passed before it was answered"
    )


def service_handler(
    service: ServiceDescriptor, servicer: object, pipeline: Pipeline | Authenticator
) -> grpc.GenericRpcHandler:
    if not isinstance(pipeline, Pipeline):
        pipeline = Pipeline(pipeline)
    handlers = {
        method.name: _Method(service, method, servicer, pipeline).handler()
        for method in service.methods
    }
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


class _Method:
    """The layers applied to one method of one service."""

    def __init__(
        self,
        service: ServiceDescriptor,
        method: MethodDescriptor,
        servicer: object,
        pipeline: Pipeline,
    ) -> None:
        self.name = f"/{service.full_name}/{method.name}"
        # Short label for logs and metrics: "MatchService/Match".
        self.label = f"{service.name}/{method.name}"
        self.impl: Callable[..., Any] | None = getattr(servicer, method.name, None)
        self.p = pipeline
        self.per_item_errors = self.name in PER_ITEM_ERRORS
        self.client_streaming = method.client_streaming
        self.server_streaming = method.server_streaming
        self.deserialize = lenient_deserializer(message_factory.GetMessageClass(method.input_type))
        self.count_items = _ITEM_COUNTERS.get(method.input_type.full_name, _no_items)
        if self.name in UNCAPPED:
            self.cap: float | None = None
        elif self.client_streaming or self.server_streaming:
            self.cap = pipeline.stream_deadline_cap
        else:
            self.cap = pipeline.deadline_cap

    def handler(self) -> grpc.RpcMethodHandler:
        kw: dict[str, Any] = {
            "request_deserializer": self.deserialize,
            "response_serializer": _serialize,
        }
        if self.server_streaming:
            factory = (
                grpc.stream_stream_rpc_method_handler
                if self.client_streaming
                else grpc.unary_stream_rpc_method_handler
            )
            return factory(self.streaming, **kw)
        factory = (
            grpc.stream_unary_rpc_method_handler
            if self.client_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        return factory(self.unary, **kw)

    # -- 1. observe ----------------------------------------------------------------------

    def unary(self, request: Any, context: grpc.ServicerContext) -> Message:
        # Layers 1-3 inlined for the unary path (the per-call cost of a frame each shows
        # in profiles); `status_stream`/`deadline` are the same steps for streams.
        call = Call(self.label, time.perf_counter(), context.peer())
        try:
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                raise deadline_exceeded()
            cap = self.cap
            reaper = self.p.reaper
            if cap is None or reaper is None:
                return self.run(call, request, context, None)
            if remaining is not None and remaining <= cap:
                # grpc itself ends the call at the client's deadline: nothing to reap.
                return self.run(call, request, context, time.monotonic() + remaining)
            # A call without a deadline (or a longer one) ends at the cap.
            limit = time.monotonic() + cap
            ticket = reaper.register(limit, context)
            try:
                return self.run(call, request, context, limit)
            finally:
                reaper.done(ticket)
        except Exception as exc:
            self.abort(call, context, exc)
            raise  # abort raises; this keeps type checkers aware
        finally:
            self.observe(call)

    def streaming(self, request: Any, context: grpc.ServicerContext) -> Iterator[Message]:
        call = Call(self.label, time.perf_counter(), context.peer())
        try:
            yield from self.status_stream(call, request, context)
        except GeneratorExit:  # the client went away mid-stream
            call.code = grpc.StatusCode.CANCELLED
            raise
        finally:
            self.observe(call)

    def observe(self, call: Call) -> None:
        call.duration = time.perf_counter() - call.started
        for observer in self.p.observers:
            try:
                observer(call)
            except Exception:
                log.exception("observer failed for %s", call.method)

    # -- 2. status -----------------------------------------------------------------------

    def status_stream(
        self, call: Call, request: Any, context: grpc.ServicerContext
    ) -> Iterator[Message]:
        try:
            yield from self.deadline(call, request, context)
        except Exception as exc:
            self.abort(call, context, exc)

    def abort(self, call: Call, context: grpc.ServicerContext, exc: BaseException) -> None:
        if isinstance(exc, ServiceError):
            call.code = exc.code
            context.abort_with_status(rpc_status.to_status(exc.to_status()))
        call.code = grpc.StatusCode.INTERNAL
        log.error(
            "unexpected failure in %s: %s",
            call.method,
            type(exc).__name__,
            exc_info=exc,
        )
        context.abort(grpc.StatusCode.INTERNAL, "internal error")

    # -- 3. deadline ---------------------------------------------------------------------

    def deadline(self, call: Call, request: Any, context: grpc.ServicerContext) -> Any:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise deadline_exceeded()
        if self.cap is None or self.p.reaper is None:
            return self.run(call, request, context, None)
        if remaining is not None and remaining <= self.cap:
            # grpc itself ends the call at the client's deadline: nothing to reap.
            return self.run(call, request, context, time.monotonic() + remaining)
        # A call without a deadline (or a longer one) ends at the cap.
        limit = time.monotonic() + self.cap
        ticket = self.p.reaper.register(limit, context)
        if not self.server_streaming:
            try:
                return self.run(call, request, context, limit)
            finally:
                self.p.reaper.done(ticket)
        return self._reaped(ticket, self.run(call, request, context, limit))

    def _reaped(self, ticket: int, responses: Iterator[Message]) -> Iterator[Message]:
        assert self.p.reaper is not None
        try:
            yield from responses
        finally:
            self.p.reaper.done(ticket)

    # -- 4. authenticate, 5. admit, 6. decode and run -----------------------------------

    def run(
        self, call: Call, request: Any, context: grpc.ServicerContext, limit: float | None
    ) -> Any:
        tenant = authenticate(context, self.p.authenticate)
        call.tenant = tenant.name
        if self.impl is None:
            raise ServiceError(grpc.StatusCode.UNIMPLEMENTED, f"{self.name} is not implemented yet")
        if self.client_streaming:
            checked: Any = self._admit_stream(call, tenant, request, limit)
        else:
            call.items = self.count_items(request)
            if self.p.limiter is not None:
                self.p.limiter.acquire(tenant.name, max(call.items, 1))
            checked = _checked(request)
        return self.impl(checked, context, tenant)

    def _admit_stream(
        self, call: Call, tenant: Tenant, requests: Iterator[Any], limit: float | None
    ) -> Iterator[Message | Undecodable]:
        limiter = self.p.limiter
        for index, request in enumerate(requests):
            if isinstance(request, Undecodable) and not self.per_item_errors:
                # Name the message as well as the field: "messages[3].upserts[7].reference_id".
                field = f"messages[{index}]" + (f".{request.field}" if request.field else "")
                raise invalid([Violation(field, request.description)])
            items = self.count_items(request) or (1 if self.per_item_errors else 0)
            call.items += items
            if limit is not None and time.monotonic() > limit:
                raise deadline_exceeded()
            if limiter is not None:
                limiter.acquire(tenant.name, max(items, 1))
            yield request


def _serialize(message: Message | bytes) -> bytes:
    # A servicer may answer with the message already encoded (see match_service).
    if type(message) is bytes:
        return message
    return message.SerializeToString()  # type: ignore[union-attr]


def require_role(tenant: Tenant, *roles: Role) -> None:
    if tenant.role not in roles:
        allowed = " or ".join(r.value for r in roles)
        raise ServiceError(
            grpc.StatusCode.PERMISSION_DENIED,
            f"this call needs the {allowed} role; the caller is a {tenant.role.value}",
            hashes_pb2.ERROR_REASON_WRONG_ROLE,
        )

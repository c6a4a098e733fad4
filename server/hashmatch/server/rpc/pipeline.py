"""One call pipeline for every method of every service, on the asyncio gRPC server.

Every call goes through the same steps, outermost first, one concern each:

1. **observe** — when the call ends, every observer gets its `Call` record: the RPC log
   line and the metrics (`observers.py`). The record holds method, code, duration, tenant,
   item count and peer, never a request.
2. **status** — a domain refusal becomes a google.rpc.Status through `status.py`'s table;
   anything unexpected is INTERNAL (logged with its traceback, never the request).
3. **deadline** — a call whose deadline already passed is refused before any work; calls
   without a deadline (or a longer one) end at the server's cap. Follow-forever streams
   (WatchChanges, Follow) are exempt; client streams also end after `stream_idle_timeout`
   seconds without a message.
4. **authenticate** — the bearer token names the tenant, or UNAUTHENTICATED; a peer whose
   tokens keep failing is refused without a lookup for a while.
5. **admit** — while the event loop falls behind, the heaviest tenants' calls are shed
   (`LoadShedder`); then the tenant's share of calls or streams in progress (`Admission`),
   then its token bucket (`RateLimiter`, charged with match items); all refuse at once with
   RESOURCE_EXHAUSTED and RetryInfo.
6. **decode and run** — a request that did not parse is refused naming its field; then the
   servicer method runs: on the event loop when the servicer lists it as cheap (`INLINE`)
   or it is a coroutine, otherwise on the process's thread pool. Methods in the servicer's
   `RAW` set receive the request bytes and a meter to charge the items they read.

Nothing waits on a thread for a client: streams are coroutines, so an idle or slow stream
costs memory, not a handler thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from grpc_status import rpc_status

from hashmatch.server.errors import (
    Refusal,
    StreamIdle,
    Unauthenticated,
    Unimplemented,
    Violation,
    deadline_exceeded,
    invalid,
)
from hashmatch.server.rpc.auth import BadTokenThrottle, bearer_token, peer_host
from hashmatch.server.rpc.decode import Undecodable, lenient_deserializer
from hashmatch.server.rpc.limits import Admission, LoadShedder, RateLimiter
from hashmatch.server.rpc.status import code_and_reason, to_status
from hashmatch.server.store import Tenant

log = logging.getLogger(__name__)


class Authenticator(Protocol):
    def __call__(self, token: str, *, cached_only: bool = False) -> Tenant | None: ...


# Streams that follow for as long as the client wants get no server-side cap.
UNCAPPED = frozenset(
    {"/hashmatch.v1.ListService/WatchChanges", "/hashmatch.v1.ReplicationService/Follow"}
)
# Raw requests up to this size run on the event loop when their method is INLINE; larger
# ones (a big batch) go to the thread pool, where the core releases the GIL.
INLINE_MAX_BYTES = 16 * 1024
# How long a refused client stream's messages already on their way are read and dropped
# before the refusal is sent: ending a call the client is still writing to makes grpc
# report INTERNAL to it instead of the refusal.
DRAIN_SECONDS = 0.2
# Seconds a peer whose tokens keep failing is told to wait.
BAD_TOKEN_RETRY_AFTER = 1.0


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
    # Refused before any lookup (a peer throttled for failed tokens): counted, not logged.
    quiet: bool = False


Observer = Callable[[Call], None]


@dataclass
class Pipeline:
    """The steps every call passes through, with what they need, passed explicitly."""

    authenticate: Authenticator
    limiter: RateLimiter | None = None
    admission: Admission | None = None
    shedder: LoadShedder | None = None
    bad_tokens: BadTokenThrottle | None = None
    deadline_cap: float = 30.0
    stream_deadline_cap: float = 3600.0
    stream_idle_timeout: float = 60.0
    observers: Sequence[Observer] = field(default_factory=tuple)


def _checked(request: Message | Undecodable, prefix: str = "") -> Message:
    if isinstance(request, Undecodable):
        field = prefix + request.field if request.field else (prefix.rstrip(".") or "(request)")
        raise invalid([Violation(field, request.description)])
    return request


async def _drain(requests: AsyncIterator[Any]) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(DRAIN_SECONDS):
            async for _ in requests:
                pass


def service_handler(
    service: ServiceDescriptor, servicer: object, pipeline: Pipeline
) -> grpc.GenericRpcHandler:
    handlers = {
        method.name: _Method(service, method, servicer, pipeline).handler()
        for method in service.methods
    }
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def _serialize(message: Message | bytes) -> bytes:
    # A servicer may answer with the message already encoded (the match path does).
    if type(message) is bytes:
        return message
    return message.SerializeToString()  # type: ignore[union-attr]


class _Method:
    """The steps applied to one method of one service."""

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
        self.raw = method.name in getattr(servicer, "RAW", ())
        self.inline = method.name in getattr(servicer, "INLINE", ())
        self.is_coroutine = self.impl is not None and inspect.iscoroutinefunction(self.impl)
        self.client_streaming = method.client_streaming
        self.server_streaming = method.server_streaming
        self.streaming = self.client_streaming or self.server_streaming
        self.deserialize = (
            None
            if self.raw
            else lenient_deserializer(message_factory.GetMessageClass(method.input_type))
        )
        self.output_class = message_factory.GetMessageClass(method.output_type)
        self.error_field = "error" if "error" in method.output_type.fields_by_name else None
        if self.name in UNCAPPED:
            self.cap: float | None = None
        elif self.streaming:
            self.cap = pipeline.stream_deadline_cap
        else:
            self.cap = pipeline.deadline_cap

    def handler(self) -> grpc.RpcMethodHandler:
        kw: dict[str, Any] = {
            "request_deserializer": self.deserialize,
            "response_serializer": _serialize,
        }
        if self.client_streaming and self.server_streaming:
            return grpc.stream_stream_rpc_method_handler(self.run, **kw)
        if self.client_streaming:
            return grpc.stream_unary_rpc_method_handler(self.run, **kw)
        if self.server_streaming:
            return grpc.unary_stream_rpc_method_handler(self.run, **kw)
        return grpc.unary_unary_rpc_method_handler(self.run, **kw)

    # -- 1. observe, 2. status --------------------------------------------------------

    async def run(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        call = Call(self.label, time.perf_counter(), context.peer())
        # Observed before the answer leaves, so a log line exists once the client has it.
        try:
            result = await self.guarded(call, request, context)
        except Refusal as exc:
            call.code = code_and_reason(exc)[0]
            self.observe(call)
            if self.client_streaming:
                await _drain(request)
            await context.abort_with_status(rpc_status.to_status(to_status(exc)))
        except asyncio.CancelledError:  # the client went away, or the server is stopping
            call.code = grpc.StatusCode.CANCELLED
            self.observe(call)
            raise
        except Exception as exc:
            call.code = grpc.StatusCode.INTERNAL
            log.error("unexpected failure in %s: %s", call.method, type(exc).__name__, exc_info=exc)
            self.observe(call)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        self.observe(call)
        return result

    def observe(self, call: Call) -> None:
        call.duration = time.perf_counter() - call.started
        for observer in self.p.observers:
            try:
                observer(call)
            except Exception:
                log.exception("observer failed for %s", call.method)

    # -- 3. deadline ------------------------------------------------------------------

    async def guarded(self, call: Call, request: Any, context: grpc.aio.ServicerContext) -> Any:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise deadline_exceeded()
        if (
            self.cap is None
            or (remaining is not None and remaining <= self.cap)
            or self.answers_inline(request)
        ):
            # grpc itself ends the call at the client's deadline, or the answer is computed
            # without yielding the loop: there is nothing to time out.
            return await self.admitted(call, request, context)
        try:
            async with asyncio.timeout(self.cap):
                return await self.admitted(call, request, context)
        except TimeoutError:
            raise deadline_exceeded() from None

    # -- 4. authenticate, 5. admit ----------------------------------------------------

    def authenticate(self, call: Call, context: grpc.aio.ServicerContext) -> Tenant:
        throttle = self.p.bad_tokens
        host = peer_host(call.peer)
        blocked = throttle is not None and throttle.blocked(host)
        try:
            token = bearer_token(context.invocation_metadata() or ())
            if blocked:
                tenant = self.p.authenticate(token, cached_only=True)
                if tenant is None:
                    call.quiet = True
                    raise Unauthenticated(
                        "too many failed authentications from this address; retry later",
                        retry_after=BAD_TOKEN_RETRY_AFTER,
                    )
            else:
                tenant = self.p.authenticate(token)
            if tenant is None:
                raise Unauthenticated("unknown or revoked token")
        except Unauthenticated:
            if throttle is not None and not call.quiet:
                throttle.failed(host)
            raise
        call.tenant = tenant.name
        return tenant

    async def admitted(self, call: Call, request: Any, context: grpc.aio.ServicerContext) -> Any:
        tenant = self.authenticate(call, context)
        if self.impl is None:
            raise Unimplemented(f"{self.name} is not implemented")
        if self.p.shedder is not None:
            self.p.shedder.admit(tenant.name)
        admission = self.p.admission
        if admission is None:
            return await self.invoke(call, request, context, tenant)
        admission.enter(tenant.name, self.streaming)
        try:
            return await self.invoke(call, request, context, tenant)
        finally:
            admission.leave(tenant.name, self.streaming)

    # -- 6. decode and run ------------------------------------------------------------

    async def invoke(
        self, call: Call, request: Any, context: grpc.aio.ServicerContext, tenant: Tenant
    ) -> Any:
        assert self.impl is not None
        limiter = self.p.limiter
        if self.client_streaming:
            request = self.incoming(call, tenant, request)
        elif self.raw:
            if limiter is not None:
                limiter.acquire(tenant.name, 1)
        else:
            # Match items arrive only in raw methods (charged by their meter): any other call
            # costs one token.
            if limiter is not None:
                limiter.acquire(tenant.name, 1)
            request = _checked(request)
        args: tuple[Any, ...] = (request, tenant)
        if self.raw:
            args = (request, tenant, self.meter(call, tenant))
        if self.server_streaming:
            async for response in self.impl(*args):
                if isinstance(response, Refusal):
                    response = self.carried(response)
                try:
                    await context.write(response)
                except grpc.aio.InternalError:
                    # The call ended under us (the client cancelled, or its deadline
                    # passed): grpc refuses the write. Nobody is left to answer.
                    raise asyncio.CancelledError from None
            return None
        if self.is_coroutine:
            return await self.impl(*args)
        if self.answers_inline(request):
            return self.impl(*args)
        return await asyncio.get_running_loop().run_in_executor(None, self.impl, *args)

    def carried(self, refusal: Refusal) -> Message:
        """A refusal of one stream message, sent as that message's answer in the response
        type's `error` field (when it has none, the refusal ends the call)."""
        if self.error_field is None:
            raise refusal
        return self.output_class(**{self.error_field: to_status(refusal)})

    def answers_inline(self, request: Any) -> bool:
        """A unary call answered on the event loop: cheap by the servicer's word, and
        small enough."""
        return (
            self.inline
            and not self.streaming
            and not self.is_coroutine
            and (not self.raw or len(request) <= INLINE_MAX_BYTES)
        )

    def meter(self, call: Call, tenant: Tenant) -> Callable[[int], None]:
        """Charges the match items of one raw request once read (one was charged when
        the call, or the stream message, was admitted)."""
        limiter = self.p.limiter

        def charge(items: int) -> None:
            call.items += items
            if limiter is not None and items > 1:
                limiter.debit(tenant.name, items - 1)

        return charge

    async def incoming(
        self, call: Call, tenant: Tenant, requests: AsyncIterator[Any]
    ) -> AsyncIterator[Any]:
        """A client stream's messages, checked, charged, and ended when it goes idle."""
        limiter = self.p.limiter
        idle = self.p.stream_idle_timeout
        iterator = requests.__aiter__()
        index = 0
        while True:
            try:
                async with asyncio.timeout(idle):
                    request = await iterator.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise StreamIdle(
                    f"the stream sent no message for {idle:g} s; open a new one when there "
                    f"is more to send"
                ) from None
            if not self.raw:
                # Name the message as well as the field: "messages[3].upserts[7].reference_id".
                request = _checked(request, f"messages[{index}].")
            if limiter is not None:
                limiter.acquire(tenant.name, 1)
            index += 1
            yield request

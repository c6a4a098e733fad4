"""rpc/pipeline.py, the steps every call passes through, on a real asyncio gRPC server over
a real store: a small servicer of the service's own descriptors stands behind it, so each
step (decode, authenticate, throttle, admit, charge, time out, drain, carry a refusal,
observe) is seen on its own, with the exact status a client gets (written for the mutants
the end-to-end tests let live; benchmarks/mutation)."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from hashmatch.server import errors
from hashmatch.server.rpc import pipeline as pipeline_module
from hashmatch.server.rpc.auth import BadTokenThrottle, TenantCache
from hashmatch.server.rpc.limits import Admission, LoadShedder, RateLimiter
from hashmatch.server.rpc.pipeline import Call, Pipeline, service_handler
from hashmatch.server.settings import TenantLimit
from hashmatch.server.store import Role, Store, Tenant
from hashmatch.v1 import lists_pb2, match_pb2

MATCH = match_pb2.DESCRIPTOR.services_by_name["MatchService"]
LISTS = lists_pb2.DESCRIPTOR.services_by_name["ListService"]


class MatchSide:
    """MatchService behind the pipeline: Match parsed and cheap, MatchBatch raw (its items
    charged by the meter), MatchStream a coroutine stream, MatchBatchStream missing."""

    RAW = frozenset({"MatchBatch"})
    INLINE = frozenset({"Match", "MatchBatch"})

    def __init__(self) -> None:
        self.threads: list[str] = []

    def Match(self, request: match_pb2.MatchRequest, tenant: Tenant) -> match_pb2.MatchResponse:
        self.threads.append(threading.current_thread().name)
        if request.item_id == "boom":
            raise RuntimeError("a secret that must not reach the client")
        return match_pb2.MatchResponse(item_id=f"{tenant.name}:{request.item_id}")

    def MatchBatch(self, raw: bytes, tenant: Tenant, meter: Any) -> bytes:
        self.threads.append(threading.current_thread().name)
        items = raw.count(b"\x0a")  # one byte per item in these tests
        meter(items)
        return match_pb2.MatchBatchResponse(
            results=[match_pb2.MatchResponse(item_id=str(items))]
        ).SerializeToString()

    async def MatchStream(
        self, requests: AsyncIterator[match_pb2.MatchRequest], tenant: Tenant
    ) -> AsyncIterator[match_pb2.MatchResponse | errors.Refusal]:
        async for request in requests:
            if request.item_id.startswith("refuse"):
                yield errors.InvalidArgument(f"refused {request.item_id}")
            else:
                yield match_pb2.MatchResponse(item_id=request.item_id)


class ListSide:
    """ListService behind the pipeline: UploadChanges a parsed client stream, GetList a
    coroutine that takes its time, WatchChanges a follow-forever stream whose refusals
    end the call (its messages have no `error` field)."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.watching = threading.Event()

    async def UploadChanges(
        self, requests: AsyncIterator[lists_pb2.ApplyChangesRequest], tenant: Tenant
    ) -> lists_pb2.UploadChangesResponse:
        ids = [r.batch_id async for r in requests]
        return lists_pb2.UploadChangesResponse(
            batches_applied=len(ids), last_batch_id=",".join(ids)
        )

    async def GetList(self, request: lists_pb2.GetListRequest, tenant: Tenant) -> Any:
        await asyncio.sleep(self.delay)
        return lists_pb2.GetListResponse()

    async def WatchChanges(
        self, request: lists_pb2.WatchChangesRequest, tenant: Tenant
    ) -> AsyncIterator[Any]:
        self.watching.set()
        await asyncio.sleep(self.delay)
        yield lists_pb2.ChangeBatch(list=request.list, version=1)
        yield errors.ListNotFound(f"no list {request.list}")


class Harness:
    """The pipeline serving both sides on an event loop thread of its own."""

    def __init__(self, tmp_path: Path, **steps: Any) -> None:
        self.store = Store(tmp_path)
        self.tokens = {
            "acme": self.store.add_tenant("acme", Role.PLATFORM),
            "iwf": self.store.add_tenant("iwf", Role.HOTLINE),
        }
        self.calls: list[Call] = []
        self.match = MatchSide()
        self.lists = ListSide()
        self.pipeline = Pipeline(
            authenticate=TenantCache(self.store), observers=(self.calls.append,), **steps
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="serving-loop")
        self.thread.start()
        self.server, port = self.run(self._start())
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")

    async def _start(self) -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            [
                service_handler(MATCH, self.match, self.pipeline),
                service_handler(LISTS, self.lists, self.pipeline),
            ]
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.channel.close()
        self.run(self.server.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()
        self.store.close()

    def auth(self, tenant: str = "acme") -> tuple[tuple[str, str], ...]:
        token = self.tokens.get(tenant, tenant)
        return (("authorization", f"Bearer {token}"),)

    def unary(self, method: str, raw: bytes, tenant: str = "acme", **kw: Any) -> bytes:
        call = self.channel.unary_unary(method)
        return call(raw, metadata=self.auth(tenant), timeout=kw.pop("timeout", 10), **kw)  # type: ignore[no-any-return]

    def logged(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]


@pytest.fixture
def harness(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Harness]:
    h = Harness(tmp_path, **getattr(request, "param", {}))
    yield h
    h.close()


def refusal(error: grpc.RpcError) -> tuple[grpc.StatusCode, str, list[object]]:
    """Code, message and the details (ErrorInfo, BadRequest, RetryInfo) of a refusal."""
    found = rpc_status.from_call(error)  # type: ignore[arg-type]
    details: list[object] = []
    if found is not None:
        for detail in found.details:
            for cls in (
                error_details_pb2.ErrorInfo,
                error_details_pb2.BadRequest,
                error_details_pb2.RetryInfo,
            ):
                msg = cls()
                if detail.Unpack(msg):
                    details.append(msg)
    return error.code(), error.details() or "", details


def violations(details: list[object]) -> list[tuple[str, str]]:
    return [
        (v.field, v.description)
        for d in details
        if isinstance(d, error_details_pb2.BadRequest)
        for v in d.field_violations
    ]


def retry_ms(details: list[object]) -> list[int]:
    return [
        d.retry_delay.ToMilliseconds()
        for d in details
        if isinstance(d, error_details_pb2.RetryInfo)
    ]


def reasons(details: list[object]) -> list[str]:
    return [d.reason for d in details if isinstance(d, error_details_pb2.ErrorInfo)]


MATCH_PATH = "/hashmatch.v1.MatchService/Match"
BATCH_PATH = "/hashmatch.v1.MatchService/MatchBatch"


def match_bytes(item_id: str) -> bytes:
    return match_pb2.MatchRequest(item_id=item_id).SerializeToString()


# --- answers, serialisation, where a method runs --------------------------------------------


def test_a_parsed_call_is_answered_and_observed(harness: Harness) -> None:
    before = time.perf_counter()
    raw = harness.unary(MATCH_PATH, match_bytes("x"))
    took = time.perf_counter() - before
    assert match_pb2.MatchResponse.FromString(raw).item_id == "acme:x"
    (call,) = harness.logged("MatchService/Match")
    assert (call.code, call.tenant, call.items, call.quiet) == (
        grpc.StatusCode.OK,
        "acme",
        0,
        False,
    )
    assert call.peer.startswith("ipv4:127.0.0.1:")
    assert 0.0 < call.duration <= took  # measured inside the call the client timed
    # Cheap by the servicer's word: answered on the event loop.
    assert harness.match.threads == ["serving-loop"]


def test_a_raw_call_gets_its_bytes_and_a_meter_and_answers_bytes(harness: Harness) -> None:
    raw = harness.unary(BATCH_PATH, b"\x0a" * 5)
    assert match_pb2.MatchBatchResponse.FromString(raw).results[0].item_id == "5"
    (call,) = harness.logged("MatchService/MatchBatch")
    assert (call.code, call.items) == (grpc.StatusCode.OK, 5)


def test_a_raw_cheap_call_runs_on_the_loop_up_to_the_size_limit(harness: Harness) -> None:
    limit = pipeline_module.INLINE_MAX_BYTES
    assert limit == 16 * 1024
    harness.unary(BATCH_PATH, b"\x00" * limit)
    harness.unary(BATCH_PATH, b"\x00" * (limit + 1))
    first, second = harness.match.threads
    assert first == "serving-loop"
    assert second != "serving-loop"  # a large request goes to the thread pool


# --- decoding -------------------------------------------------------------------------------


def test_a_request_that_does_not_parse_is_refused_naming_its_field(harness: Harness) -> None:
    with pytest.raises(grpc.RpcError) as info:
        harness.unary(MATCH_PATH, b"\x0a\x02\xff\xfe")  # item_id, not UTF-8
    code, message, details = refusal(info.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(details) == [("item_id", "is not valid UTF-8")]
    assert message == "invalid field item_id: is not valid UTF-8"
    with pytest.raises(grpc.RpcError) as info:
        harness.unary(MATCH_PATH, b"\x0a\x05ab")  # truncated
    code, message, details = refusal(info.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(details) == [("(request)", "the request is not a valid protobuf message")]
    assert harness.match.threads == []
    assert [c.code for c in harness.logged("MatchService/Match")] == [
        grpc.StatusCode.INVALID_ARGUMENT
    ] * 2


UPLOAD_PATH = "/hashmatch.v1.ListService/UploadChanges"


def upload(harness: Harness, messages: list[bytes], tenant: str = "iwf") -> bytes:
    call = harness.channel.stream_unary(UPLOAD_PATH)
    return call(iter(messages), metadata=harness.auth(tenant), timeout=10)  # type: ignore[no-any-return]


def batch(batch_id: str) -> bytes:
    return lists_pb2.ApplyChangesRequest(list="l", batch_id=batch_id).SerializeToString()


def test_a_client_streams_messages_are_checked_and_named_by_index(harness: Harness) -> None:
    answer = lists_pb2.UploadChangesResponse.FromString(upload(harness, [batch("a"), batch("b")]))
    assert (answer.batches_applied, answer.last_batch_id) == (2, "a,b")
    bad = b"\x12\x01\xff"  # a batch_id that is not UTF-8
    for index, messages in [(1, [batch("a"), bad]), (2, [batch("a"), batch("b"), bad])]:
        with pytest.raises(grpc.RpcError) as info:
            upload(harness, messages)
        code, _, details = refusal(info.value)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert violations(details) == [(f"messages[{index}].batch_id", "is not valid UTF-8")]
    with pytest.raises(grpc.RpcError) as info:
        upload(harness, [b"\x12\x05ab"])  # the first does not parse at all
    code, _, details = refusal(info.value)
    assert violations(details) == [("messages[0]", "the request is not a valid protobuf message")]


# --- authentication and the failed-token throttle -------------------------------------------


def test_an_unknown_token_is_refused_and_observed_without_a_tenant(harness: Harness) -> None:
    with pytest.raises(grpc.RpcError) as info:
        harness.unary(MATCH_PATH, match_bytes("x"), tenant="hm_unknown")
    code, message, details = refusal(info.value)
    assert (code, message) == (grpc.StatusCode.UNAUTHENTICATED, "unknown or revoked token")
    assert retry_ms(details) == []
    (call,) = harness.calls
    assert (call.code, call.tenant, call.quiet) == (grpc.StatusCode.UNAUTHENTICATED, "", False)


@pytest.mark.parametrize(
    "harness", [{"bad_tokens": BadTokenThrottle(rate=0.001, burst=2.0)}], indirect=True
)
def test_a_peer_out_of_failures_is_refused_quietly_but_known_tokens_work(
    harness: Harness,
) -> None:
    throttle = harness.pipeline.bad_tokens
    assert throttle is not None
    harness.unary(MATCH_PATH, match_bytes("k"))  # acme's token is known from now on
    for i in range(2):
        with pytest.raises(grpc.RpcError) as info:
            harness.unary(MATCH_PATH, match_bytes("x"), tenant=f"hm_guess_{i}")
        assert refusal(info.value)[1] == "unknown or revoked token"
    assert throttle.blocked("127.0.0.1")
    with pytest.raises(grpc.RpcError) as info:
        harness.unary(MATCH_PATH, match_bytes("x"), tenant="hm_guess_2")
    code, message, details = refusal(info.value)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert message == "too many failed authentications from this address; retry later"
    assert retry_ms(details) == [1000]
    assert harness.calls[-1].quiet
    # A quiet refusal costs the peer nothing more: the bucket stays where it was.
    tokens_before = throttle._peers["127.0.0.1"][0]
    with pytest.raises(grpc.RpcError):
        harness.unary(MATCH_PATH, match_bytes("x"), tenant="hm_guess_3")
    assert throttle._peers["127.0.0.1"][0] == tokens_before
    # A token that authenticated before is still served; one that never did is not, even
    # a valid one (it costs no store read).
    assert match_pb2.MatchResponse.FromString(harness.unary(MATCH_PATH, match_bytes("y"))).item_id
    with pytest.raises(grpc.RpcError) as info:
        harness.unary(MATCH_PATH, match_bytes("x"), tenant="iwf")
    assert refusal(info.value)[1] == (
        "too many failed authentications from this address; retry later"
    )
    assert [c.quiet for c in harness.calls] == [False, False, False, True, True, False, True]


@pytest.mark.parametrize(
    "harness", [{"bad_tokens": BadTokenThrottle(rate=0.001, burst=5.0)}], indirect=True
)
def test_only_failed_authentications_draw_on_the_throttle(harness: Harness) -> None:
    throttle = harness.pipeline.bad_tokens
    assert throttle is not None
    for _ in range(3):
        harness.unary(MATCH_PATH, match_bytes("x"))
    assert "127.0.0.1" not in throttle._peers
    with pytest.raises(grpc.RpcError):
        harness.unary(MATCH_PATH, match_bytes("x"), tenant="hm_guess")
    assert throttle._peers["127.0.0.1"][0] == pytest.approx(4.0, abs=0.01)
    # A call without a token at all is a failure too.
    with pytest.raises(grpc.RpcError) as info:
        harness.channel.unary_unary(MATCH_PATH)(match_bytes("x"), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert throttle._peers["127.0.0.1"][0] == pytest.approx(3.0, abs=0.01)


# --- unimplemented, unexpected failures, observers ------------------------------------------


def test_a_method_the_servicer_lacks_is_unimplemented(harness: Harness) -> None:
    call = harness.channel.stream_stream("/hashmatch.v1.MatchService/MatchBatchStream")
    with pytest.raises(grpc.RpcError) as info:
        list(call(iter([b""]), metadata=harness.auth(), timeout=10))
    code, message, _ = refusal(info.value)
    assert code == grpc.StatusCode.UNIMPLEMENTED
    assert message == "/hashmatch.v1.MatchService/MatchBatchStream is not implemented"
    (observed,) = harness.calls
    assert (observed.method, observed.tenant) == ("MatchService/MatchBatchStream", "acme")


def test_an_unexpected_failure_is_internal_and_logged_without_its_text(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.ERROR, logger="hashmatch.server.rpc.pipeline"),
        pytest.raises(grpc.RpcError) as info,
    ):
        harness.unary(MATCH_PATH, match_bytes("boom"))
    assert (info.value.code(), info.value.details()) == (
        grpc.StatusCode.INTERNAL,
        "internal error",
    )
    (record,) = [r for r in caplog.records if r.name == "hashmatch.server.rpc.pipeline"]
    assert record.getMessage() == "unexpected failure in MatchService/Match: RuntimeError"
    assert record.exc_info is not None
    assert harness.calls[-1].code == grpc.StatusCode.INTERNAL


def test_a_failing_observer_is_logged_and_the_others_still_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    harness = Harness(tmp_path)
    seen: list[str] = []

    def broken(call: Call) -> None:
        raise ValueError("observer bug")

    harness.pipeline.observers = (broken, lambda call: seen.append(call.method))
    try:
        with caplog.at_level(logging.ERROR, logger="hashmatch.server.rpc.pipeline"):
            raw = harness.unary(MATCH_PATH, match_bytes("x"))
        assert match_pb2.MatchResponse.FromString(raw).item_id == "acme:x"
        assert seen == ["MatchService/Match"]
        messages = [r.getMessage() for r in caplog.records]
        assert messages == ["observer failed for MatchService/Match"]
    finally:
        harness.close()


# --- streams: carried refusals, draining, idling, caps --------------------------------------


def test_a_refused_stream_message_is_answered_in_its_error_field(harness: Harness) -> None:
    call = harness.channel.stream_stream("/hashmatch.v1.MatchService/MatchStream")
    answers = [
        match_pb2.MatchResponse.FromString(raw)
        for raw in call(
            iter([match_bytes("a"), match_bytes("refuse-b"), match_bytes("c")]),
            metadata=harness.auth(),
            timeout=10,
        )
    ]
    assert [a.item_id for a in answers] == ["a", "", "c"]
    error = answers[1].error
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert error.message == "refused refuse-b"
    assert [c.code for c in harness.calls] == [grpc.StatusCode.OK]


def test_a_refusal_of_a_stream_without_an_error_field_ends_it(harness: Harness) -> None:
    call = harness.channel.unary_stream("/hashmatch.v1.ListService/WatchChanges")
    got: list[lists_pb2.ChangeBatch] = []
    with pytest.raises(grpc.RpcError) as info:
        for raw in call(
            lists_pb2.WatchChangesRequest(list="l").SerializeToString(),
            metadata=harness.auth("iwf"),
            timeout=10,
        ):
            got.append(lists_pb2.ChangeBatch.FromString(raw))
    assert [(b.list, b.version) for b in got] == [("l", 1)]
    assert (info.value.code(), info.value.details()) == (grpc.StatusCode.NOT_FOUND, "no list l")
    assert harness.calls[-1].code == grpc.StatusCode.NOT_FOUND


class Held:
    """A client stream that sends its messages, then nothing until released."""

    def __init__(self, *messages: bytes) -> None:
        self.messages = messages
        self.gate: queue.Queue[None] = queue.Queue()

    def __iter__(self) -> Iterator[bytes]:
        yield from self.messages
        self.gate.get()

    def release(self) -> None:
        self.gate.put(None)


def test_a_refused_client_stream_still_open_gets_its_refusal(harness: Harness) -> None:
    held = Held(batch("a"))
    try:
        call = harness.channel.stream_unary(UPLOAD_PATH)
        with pytest.raises(grpc.RpcError) as info:
            # Refused before the first message is read, while the client keeps writing.
            call(iter(held), metadata=harness.auth("hm_unknown"), timeout=10)
    finally:
        held.release()
    assert (info.value.code(), info.value.details()) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "unknown or revoked token",
    )


def test_a_call_the_client_cancels_is_observed_as_cancelled(harness: Harness) -> None:
    harness.lists.delay = 30.0
    call = harness.channel.unary_stream("/hashmatch.v1.ListService/WatchChanges")
    stream = call(
        lists_pb2.WatchChangesRequest(list="l").SerializeToString(), metadata=harness.auth("iwf")
    )
    assert harness.lists.watching.wait(10)  # the call is in the servicer
    stream.cancel()
    for _ in range(200):  # observed once the server has seen the cancellation
        if harness.calls:
            break
        harness.run(asyncio.sleep(0.05))
    (observed,) = harness.calls
    assert (observed.method, observed.code, observed.tenant) == (
        "ListService/WatchChanges",
        grpc.StatusCode.CANCELLED,
        "iwf",
    )


@pytest.mark.parametrize("harness", [{"stream_idle_timeout": 0.2}], indirect=True)
def test_a_client_stream_that_goes_quiet_is_ended(harness: Harness) -> None:
    held = Held(batch("a"))
    try:
        call = harness.channel.stream_unary(UPLOAD_PATH)
        with pytest.raises(grpc.RpcError) as info:
            call(iter(held), metadata=harness.auth("iwf"), timeout=10)
    finally:
        held.release()
    code, message, details = refusal(info.value)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert message == (
        "the stream sent no message for 0.2 s; open a new one when there is more to send"
    )
    assert reasons(details) == ["ERROR_REASON_STREAM_IDLE"]


@pytest.mark.parametrize("harness", [{"deadline_cap": 0.2}], indirect=True)
def test_a_unary_call_without_a_deadline_ends_at_the_cap(harness: Harness) -> None:
    harness.lists.delay = 5.0
    path = "/hashmatch.v1.ListService/GetList"
    request = lists_pb2.GetListRequest(name="l").SerializeToString()
    call = harness.channel.unary_unary(path)
    for timeout in (None, 30.0):  # none, or one longer than the cap
        with pytest.raises(grpc.RpcError) as info:
            call(request, metadata=harness.auth("iwf"), timeout=timeout)
        code, message, details = refusal(info.value)
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert message == "the call's deadline passed before it was answered"
        assert reasons(details) == ["ERROR_REASON_UNSPECIFIED"]  # the server's refusal
    # A deadline within the cap is the client's own: grpc ends the call, no server refusal.
    with pytest.raises(grpc.RpcError) as info:
        call(request, metadata=harness.auth("iwf"), timeout=0.1)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert refusal(info.value)[2] == []


@pytest.mark.parametrize(
    "harness", [{"deadline_cap": 0.1, "stream_deadline_cap": 0.1}], indirect=True
)
def test_a_follow_forever_stream_has_no_cap(harness: Harness) -> None:
    harness.lists.delay = 0.5
    call = harness.channel.unary_stream("/hashmatch.v1.ListService/WatchChanges")
    stream = call(
        lists_pb2.WatchChangesRequest(list="l").SerializeToString(), metadata=harness.auth("iwf")
    )
    assert lists_pb2.ChangeBatch.FromString(next(stream)).version == 1
    stream.cancel()


class Context:
    """What `guarded` asks of a call's context: its deadline and its metadata."""

    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", "Bearer t"),)


@pytest.mark.parametrize("remaining", [0.0, -1.0])
def test_a_call_whose_deadline_has_passed_is_refused_before_any_work(remaining: float) -> None:
    asked: list[str] = []

    def authenticate(token: str, *, cached_only: bool = False) -> Tenant | None:
        asked.append(token)
        return Tenant("acme", Role.PLATFORM, 0.0)

    side = MatchSide()
    method = pipeline_module._Method(
        MATCH, MATCH.methods_by_name["Match"], side, Pipeline(authenticate=authenticate)
    )
    call = Call("MatchService/Match", 0.0)
    request = match_pb2.MatchRequest(item_id="x")
    with pytest.raises(errors.DeadlineExceeded) as info:
        asyncio.run(method.guarded(call, request, Context(remaining)))  # type: ignore[arg-type]
    assert info.value.message == "the call's deadline passed before it was answered"
    assert asked == [] and side.threads == []
    answer = asyncio.run(method.guarded(call, request, Context(5.0)))  # type: ignore[arg-type]
    assert answer.item_id == "acme:x" and asked == ["t"]


def test_the_caps_of_each_method() -> None:
    def nobody(token: str, *, cached_only: bool = False) -> Tenant | None:
        return None

    pipe = Pipeline(authenticate=nobody)
    methods = {m.name: pipeline_module._Method(MATCH, m, MatchSide(), pipe) for m in MATCH.methods}
    assert methods["Match"].cap == 30.0
    assert methods["MatchStream"].cap == 3600.0
    lists = {m.name: pipeline_module._Method(LISTS, m, ListSide(), pipe) for m in LISTS.methods}
    assert lists["WatchChanges"].cap is None
    assert lists["UploadChanges"].cap == 3600.0
    assert lists["GetList"].cap == 30.0
    assert lists["WatchChanges"].error_field is None
    assert methods["MatchStream"].error_field == "error"
    assert {
        "/hashmatch.v1.ListService/WatchChanges",
        "/hashmatch.v1.ReplicationService/Follow",
    } == pipeline_module.UNCAPPED
    assert (pipeline_module.DRAIN_SECONDS, pipeline_module.BAD_TOKEN_RETRY_AFTER) == (0.2, 1.0)


# --- admission, shedding and the token bucket -----------------------------------------------


@pytest.mark.parametrize(
    "harness",
    [{"admission": Admission(max_calls=4, tenant_share=0.5, max_streams=2, max_tenant_streams=1)}],
    indirect=True,
)
def test_calls_and_streams_take_their_slots_and_give_them_back(harness: Harness) -> None:
    admission = harness.pipeline.admission
    assert admission is not None
    for _ in range(3):
        harness.unary(MATCH_PATH, match_bytes("x"))
    held = Held(batch("a"))
    call = harness.channel.stream_unary(UPLOAD_PATH)
    future = call.future(iter(held), metadata=harness.auth("iwf"), timeout=10)
    try:
        while admission.streams == 0 and not future.done():
            pass
        assert (admission.calls, admission.streams) == (0, 1)
        with pytest.raises(grpc.RpcError) as info:
            upload(harness, [batch("b")])  # iwf's one stream is taken
        code, message, _ = refusal(info.value)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert message.startswith("tenant iwf already has 1 streams")
        harness.unary(MATCH_PATH, match_bytes("x"))  # calls are counted apart
    finally:
        held.release()
    future.result()
    assert (admission.calls, admission.streams) == (0, 0)
    assert admission._calls == {} and admission._streams == {}


def test_a_shed_tenant_is_refused_before_its_call_runs(tmp_path: Path) -> None:
    shedder = LoadShedder()
    harness = Harness(tmp_path, shedder=shedder)
    try:
        harness.unary(MATCH_PATH, match_bytes("x"))
        assert shedder._calls == {"acme": 1}
        shedder._calls, shedder._total = {"acme": 10_000}, 10_000
        shedder.until = shedder.clock() + 60.0
        with pytest.raises(grpc.RpcError) as info:
            harness.unary(MATCH_PATH, match_bytes("x"))
        code, message, details = refusal(info.value)
        assert (code, message) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "the server is overloaded; retry shortly",
        )
        assert retry_ms(details) == [100]
        assert harness.match.threads == ["serving-loop"]  # only the first call ran
    finally:
        harness.close()


class Frozen:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def bucket(rate: float, burst: float) -> RateLimiter:
    return RateLimiter(lambda _: TenantLimit(rate=rate, burst=burst), clock=Frozen())


@pytest.mark.parametrize("harness", [{"limiter": bucket(rate=1.0, burst=10.0)}], indirect=True)
def test_each_call_costs_one_token_and_a_raw_call_its_items(harness: Harness) -> None:
    limiter = harness.pipeline.limiter
    assert limiter is not None
    harness.unary(MATCH_PATH, match_bytes("x"))  # 1
    harness.unary(BATCH_PATH, b"\x0a" * 4)  # 1 when admitted, 3 more once read
    harness.unary(BATCH_PATH, b"")  # no items: the 1 it was admitted with
    harness.unary(BATCH_PATH, b"\x0a")  # 1 item: nothing more
    harness.unary(BATCH_PATH, b"\x0a" * 2)  # 2 items: 1 more
    # 9 of 10 taken: 1 left.
    assert limiter.try_acquire("acme", 1) is None
    assert limiter.try_acquire("acme", 1) == 1.0


@pytest.mark.parametrize("harness", [{"limiter": bucket(rate=1.0, burst=3.0)}], indirect=True)
def test_each_message_of_a_client_stream_costs_one_token(harness: Harness) -> None:
    upload(harness, [batch("a"), batch("b")])  # 2 of iwf's 3
    with pytest.raises(grpc.RpcError) as info:
        upload(harness, [batch("c"), batch("d")])  # the second message finds none
    code, message, details = refusal(info.value)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert message == "rate limit of tenant iwf exceeded; retry after 1.000 s"
    assert retry_ms(details) == [1000]
    harness.unary(MATCH_PATH, match_bytes("x"))  # acme's bucket is its own


def test_undecodable_requests_cost_their_token_too(tmp_path: Path) -> None:
    limiter = bucket(rate=1.0, burst=2.0)
    harness = Harness(tmp_path, limiter=limiter)
    try:
        with pytest.raises(grpc.RpcError):
            harness.unary(MATCH_PATH, b"\x0a\x05ab")
        assert limiter.try_acquire("acme", 1) is None
        assert limiter.try_acquire("acme", 1) == 1.0
    finally:
        harness.close()


def test_the_status_of_a_refusal_is_the_tables(harness: Harness) -> None:
    # What the client gets is exactly status.to_status of the refusal, details and all.
    with pytest.raises(grpc.RpcError) as info:
        harness.unary(MATCH_PATH, b"\x0a\x02\xff\xfe")
    found = rpc_status.from_call(info.value)  # type: ignore[arg-type]
    assert isinstance(found, status_pb2.Status)
    assert [d.type_url.rsplit("/", 1)[1] for d in found.details] == [
        "google.rpc.ErrorInfo",
        "google.rpc.BadRequest",
    ]

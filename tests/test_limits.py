"""Limits and backpressure: message size, batch size, concurrency, deadline cap, rate limits."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from hashmatch.client import MD5, make_hash
from hashmatch.server.app import Service, build
from hashmatch.server.rpc.limits import RateLimiter
from hashmatch.server.settings import Settings, TenantLimit
from hashmatch.server.store import Role
from hashmatch.v1 import hashes_pb2, match_pb2, match_pb2_grpc


class Limited:
    def __init__(self, tmp_path: Path, **overrides: object) -> None:
        settings = Settings(data_dir=tmp_path, listen="127.0.0.1:0", poll_interval=0.01)
        self.service: Service = build(replace(settings, **overrides))  # type: ignore[arg-type]
        self.token = self.service.store.add_tenant("platform", Role.PLATFORM)
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{self.service.port}",
            options=[("grpc.max_send_message_length", 64 * 1024 * 1024)],
        )
        self.stub = match_pb2_grpc.MatchServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {self.token}"),)

    def close(self) -> None:
        self.channel.close()
        self.service.stop(grace=0)


@pytest.fixture
def limited(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Limited]:
    server = Limited(tmp_path, **getattr(request, "param", {}))
    yield server
    server.close()


def item(i: int = 0) -> match_pb2.MatchRequest:
    return match_pb2.MatchRequest(item_id=f"i{i}", hashes=[make_hash(MD5, bytes(16))])


def details(error: grpc.RpcError) -> list[object]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    out: list[object] = []
    for detail in status.details:
        for cls in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo):
            msg = cls()
            if detail.Unpack(msg):
                out.append(msg)
    return out


@pytest.mark.parametrize("limited", [{"max_message_bytes": 64 * 1024}], indirect=True)
def test_oversize_message_is_refused(limited: Limited) -> None:
    big = match_pb2.MatchBatchRequest(items=[item(i) for i in range(5000)])
    assert big.ByteSize() > 64 * 1024
    with pytest.raises(grpc.RpcError) as info:
        limited.stub.MatchBatch(big, metadata=limited.metadata, timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The server is fine afterwards.
    assert limited.stub.Match(item(), metadata=limited.metadata, timeout=10).verdict


def test_oversize_batch_is_refused_naming_the_field(limited: Limited) -> None:
    n = 10_000 + 1  # the contract's limit per MatchBatch
    with pytest.raises(grpc.RpcError) as info:
        limited.stub.MatchBatch(
            match_pb2.MatchBatchRequest(items=[item(i) for i in range(n)]),
            metadata=limited.metadata,
            timeout=10,
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "items" in (info.value.details() or "")
    ok = limited.stub.MatchBatch(
        match_pb2.MatchBatchRequest(items=[item(i) for i in range(n - 1)]),
        metadata=limited.metadata,
        timeout=10,
    )
    assert len(ok.results) == n - 1


@pytest.mark.parametrize(
    "limited", [{"tenants": {"platform": TenantLimit(rate=0.01, burst=3)}}], indirect=True
)
def test_rate_limit_answers_resource_exhausted_with_retry_info(limited: Limited) -> None:
    for _ in range(3):
        limited.stub.Match(item(), metadata=limited.metadata, timeout=10)
    with pytest.raises(grpc.RpcError) as info:
        limited.stub.Match(item(), metadata=limited.metadata, timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    found = details(info.value)
    reasons = [d.reason for d in found if isinstance(d, error_details_pb2.ErrorInfo)]
    assert reasons == [hashes_pb2.ErrorReason.Name(hashes_pb2.ERROR_REASON_RATE_LIMITED)]
    retry = [d for d in found if isinstance(d, error_details_pb2.RetryInfo)]
    assert len(retry) == 1 and retry[0].retry_delay.ToMilliseconds() > 0


@pytest.mark.parametrize(
    "limited", [{"tenants": {"platform": TenantLimit(rate=0.01, burst=2)}}], indirect=True
)
def test_rate_limit_ends_a_stream_after_answering_what_it_admitted(limited: Limited) -> None:
    responses = limited.stub.MatchStream(
        iter([item(0), item(1), item(2), item(3)]), metadata=limited.metadata
    )
    answered = []
    with pytest.raises(grpc.RpcError) as info:
        for response in responses:
            answered.append(response.item_id)
    assert answered == ["i0", "i1"]
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert any(isinstance(d, error_details_pb2.RetryInfo) for d in details(info.value))


def test_batch_costs_its_items() -> None:
    limiter = RateLimiter(lambda _: TenantLimit(rate=1.0, burst=100.0), clock=lambda: 0.0)
    assert limiter.try_acquire("t", 60) is None
    wait = limiter.try_acquire("t", 60)
    assert wait is not None and wait == pytest.approx(20.0)
    # Larger than the bucket: admitted from a full bucket, never refused forever.
    big = RateLimiter(lambda _: TenantLimit(rate=1.0, burst=10.0), clock=lambda: 0.0)
    assert big.try_acquire("t", 1000) is None
    assert big.try_acquire("t", 1) is not None


def test_unlimited_tenant() -> None:
    settings = Settings(rate_limit=0)
    assert settings.limit_for("anyone") is None
    assert RateLimiter.from_settings(settings).try_acquire("anyone", 10**9) is None


@pytest.mark.parametrize("limited", [{"max_tenant_streams": 1}], indirect=True)
def test_streams_beyond_the_tenants_share_are_refused_at_once(limited: Limited) -> None:
    outbox: queue.Queue[match_pb2.MatchRequest | None] = queue.Queue()

    def requests() -> Iterator[match_pb2.MatchRequest]:
        while (r := outbox.get()) is not None:
            yield r

    stream = limited.stub.MatchStream(requests(), metadata=limited.metadata)
    outbox.put(item())
    next(stream)  # the stream holds the tenant's only stream slot
    try:
        second = limited.stub.MatchStream(iter([item()]), metadata=limited.metadata, timeout=10)
        with pytest.raises(grpc.RpcError) as info:
            list(second)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info_detail, retry = details(info.value)
        assert info_detail.reason == "ERROR_REASON_OVERLOADED"  # type: ignore[attr-defined]
        assert retry.retry_delay.ToMilliseconds() > 0  # type: ignore[attr-defined]
        # Unary calls are counted apart: the open stream does not take their room.
        assert limited.stub.Match(item(), metadata=limited.metadata, timeout=10).verdict
    finally:
        outbox.put(None)
        list(stream)
    assert list(limited.stub.MatchStream(iter([item()]), metadata=limited.metadata, timeout=10))


@pytest.mark.parametrize("limited", [{"stream_deadline_cap": 0.3}], indirect=True)
def test_a_stream_without_deadline_ends_at_the_server_cap(limited: Limited) -> None:
    outbox: queue.Queue[match_pb2.MatchRequest | None] = queue.Queue()

    def requests() -> Iterator[match_pb2.MatchRequest]:
        while (r := outbox.get()) is not None:
            yield r

    stream = limited.stub.MatchStream(requests(), metadata=limited.metadata)
    try:
        with pytest.raises(grpc.RpcError) as info:
            next(stream)  # nothing sent: the server ends the idle stream
        assert info.value.code() in (
            grpc.StatusCode.CANCELLED,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )
    finally:
        outbox.put(None)

"""MatchService from one client on loopback: one call's round trip, or a fixed batch.

Queries: one hash per item, MD5/SHA-1/SHA-256/PDQ in turn, one in 100 listed (PDQ hits
are near-duplicates), from `hashmatch.server.bench.corpus`, so runs are comparable.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from conftest import Served
from hashmatch.client.algorithms import MD5, PDQ, make_hash
from hashmatch.server.bench.corpus import batch_request, match_request, query_hashes
from hashmatch.server.bench.load import open_channel
from hashmatch.v1 import match_pb2, match_pb2_grpc

BATCH = 1_000


@pytest.fixture(scope="module")
def stub(served: Served) -> Iterator[tuple[match_pb2_grpc.MatchServiceStub, tuple]]:
    channel = open_channel(served.address)
    metadata = (("authorization", f"Bearer {served.tokens['platform']}"),)
    yield match_pb2_grpc.MatchServiceStub(channel), metadata
    channel.close()


@pytest.fixture(scope="module")
def queries(served: Served) -> list:
    return query_hashes(11, 4_096, served.synthetic.sample)


def _one(queries: list, algorithm: int, listed: bool, served: Served) -> match_pb2.MatchRequest:
    """A listed boundary entry (a hit) or a random query hash (a miss) of `algorithm`."""
    if listed:
        entry = next(e for e in served.synthetic.special if e.algorithm == algorithm)
        quality = 100 if algorithm == PDQ else None
        return match_request("bench", make_hash(algorithm, entry.value, quality))
    return match_request("bench", next(q for q in queries if q.algorithm == algorithm))


@pytest.mark.parametrize(
    "algorithm,listed",
    [(MD5, False), (MD5, True), (PDQ, False), (PDQ, True)],
    ids=["md5-miss", "md5-hit", "pdq-miss", "pdq-hit"],
)
def test_match_unary(benchmark, stub, queries, served, algorithm, listed) -> None:  # type: ignore[no-untyped-def]
    call, metadata = stub
    request = _one(queries, algorithm, listed, served)
    expected = match_pb2.VERDICT_MATCH if listed else match_pb2.VERDICT_NO_MATCH
    response = benchmark(call.Match, request, metadata=metadata, timeout=10)
    assert response.verdict == expected


def test_match_batch_1000(benchmark, stub, queries) -> None:  # type: ignore[no-untyped-def]
    call, metadata = stub
    request = batch_request(queries, 0, BATCH)
    response = benchmark(call.MatchBatch, request, metadata=metadata, timeout=30)
    assert len(response.results) == BATCH
    benchmark.extra_info["hashes_per_call"] = BATCH


def test_match_stream_1000(benchmark, stub, queries) -> None:  # type: ignore[no-untyped-def]
    call, metadata = stub
    requests = [match_request(str(k), queries[k]) for k in range(BATCH)]

    def stream() -> int:
        n = 0
        for _ in call.MatchStream(iter(requests), metadata=metadata, timeout=30):
            n += 1
        return n

    assert benchmark(stream) == BATCH
    benchmark.extra_info["hashes_per_call"] = BATCH


def test_health_check(benchmark, served) -> None:  # type: ignore[no-untyped-def]
    """The floor: a gRPC round trip that does no matching and needs no token."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channel = open_channel(served.address)
    try:
        check = health_pb2_grpc.HealthStub(channel).Check
        benchmark(check, health_pb2.HealthCheckRequest(), timeout=10)
    except grpc.RpcError as exc:  # pragma: no cover - a broken server fails the run
        pytest.fail(str(exc))
    finally:
        channel.close()

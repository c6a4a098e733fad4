"""Probe detection reads items, not calls: a batch or a stream of one-bit neighbours of a
matched PDQ hash is stopped within the single-call budget, the budget is one per tenant
however many workers serve it, and the memory of matches cannot be flushed."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from test_workers import Server, own_channel, start_server

from conftest import Running
from hashmatch.client import MD5, PDQ, ListClient, make_hash, make_video_hash
from hashmatch.client.connection import Connection, RetryPolicy
from hashmatch.server.matching.probes import ProbeDetector, ProbePolicy
from hashmatch.v1 import match_pb2, match_pb2_grpc
from helpers import eventually, flip_bits, random_pdq, upsert

BUDGET = ProbePolicy().flag_after
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]


def hamming(a: bytes, b: bytes) -> int:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def flip(value: bytes, bit: int) -> bytes:
    return (int.from_bytes(value, "big") ^ (1 << bit)).to_bytes(32, "big")


def at_the_edge(listed: bytes, rng: random.Random) -> bytes:
    """A hash exactly 31 bits from `listed`: it matches, and each of its one-bit
    neighbours answers MATCH or NO_MATCH by one bit of the listed hash."""
    return flip_bits(listed, 31, rng)


def item(value: bytes, i: int) -> match_pb2.MatchRequest:
    return match_pb2.MatchRequest(item_id=f"n{i}", hashes=[make_hash(PDQ, value, 100)])


@pytest.fixture
def listed(running: Running) -> bytes:
    value = random_pdq(random.Random(3))
    running.lists().create_list("iwf")
    running.lists().apply_changes("iwf", "b1", [upsert(PDQ, value, "P")])
    return value


def stub(running: Running) -> tuple[match_pb2_grpc.MatchServiceStub, tuple[tuple[str, str]]]:
    token = running.tokens["platform"]
    return running.matcher()._stub, (("authorization", f"Bearer {token}"),)


def learned(results: list[match_pb2.MatchResponse]) -> int:
    """Neighbours answered with a verdict: each one is a bit of the listed hash."""
    return sum(1 for r in results if r.verdict != match_pb2.VERDICT_UNSPECIFIED)


@pytest.mark.parametrize("matched_first", [True, False])
def test_a_batch_of_neighbours_is_stopped_within_the_budget(
    running: Running, listed: bytes, matched_first: bool
) -> None:
    edge = at_the_edge(listed, random.Random(4))
    match, metadata = stub(running)
    neighbours = [item(flip(edge, bit), bit) for bit in range(256)]
    items = [item(edge, 999), *neighbours] if matched_first else [*neighbours, item(edge, 999)]
    answer = match.MatchBatch(match_pb2.MatchBatchRequest(items=items), metadata=metadata)
    results = list(answer.results)
    edge_result = results[0] if matched_first else results[-1]
    neighbour_results = results[1:] if matched_first else results[:-1]
    misses = [r for r in neighbour_results if r.verdict == match_pb2.VERDICT_NO_MATCH]
    assert len(misses) == BUDGET  # the item that fills the budget is the last answered
    # Every neighbour after that carries the pause as its own error, not a verdict.
    refused = [r for r in neighbour_results if r.HasField("error")]
    assert refused and all(r.error.code == RESOURCE_EXHAUSTED for r in refused)
    assert learned(neighbour_results) <= 2 * BUDGET
    assert learned(neighbour_results) + len(refused) == 256
    if matched_first:
        assert edge_result.verdict == match_pb2.VERDICT_MATCH
    # The pause holds for later calls too, while exact hashes keep working.
    with pytest.raises(grpc.RpcError) as info:
        match.Match(item(edge, 0), metadata=metadata)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    md5 = match_pb2.MatchRequest(hashes=[make_hash(MD5, bytes(16))])
    assert match.Match(md5, metadata=metadata).verdict == match_pb2.VERDICT_NO_MATCH
    audit = running.service.store.audit_log(20)
    assert any(r["action"] == "throttle" and r["tenant"] == "platform" for r in audit)


def test_a_stream_of_neighbours_is_stopped_within_the_budget(
    running: Running, listed: bytes
) -> None:
    edge = at_the_edge(listed, random.Random(5))
    match, metadata = stub(running)

    def requests() -> Iterator[match_pb2.MatchRequest]:
        yield item(edge, 999)
        for bit in range(256):
            yield item(flip(edge, bit), bit)

    results = list(match.MatchStream(requests(), metadata=metadata, timeout=30))
    assert len(results) == 257 and results[0].verdict == match_pb2.VERDICT_MATCH
    neighbours = results[1:]
    assert sum(r.verdict == match_pb2.VERDICT_NO_MATCH for r in neighbours) == BUDGET
    assert learned(neighbours) <= 2 * BUDGET
    assert all(r.error.code == RESOURCE_EXHAUSTED for r in neighbours if r.HasField("error"))


def video_item(frames: list[bytes], i: int) -> match_pb2.MatchRequest:
    return match_pb2.MatchRequest(
        item_id=str(i), hashes=[make_video_hash((f, 90, k * 1000) for k, f in enumerate(frames))]
    )


def test_a_walk_made_of_one_frame_videos_is_stopped_within_the_budget(
    running: Running, listed: bytes
) -> None:
    """A listed image is found in video frames too: one-frame "videos" around it would read
    its bits as images do, unless each video counts as an attempt."""
    edge = at_the_edge(listed, random.Random(8))
    match, metadata = stub(running)
    items = [video_item([edge], 999), *(video_item([flip(edge, bit)], bit) for bit in range(256))]
    answer = match.MatchBatch(match_pb2.MatchBatchRequest(items=items), metadata=metadata)
    results = list(answer.results)
    assert results[0].verdict == match_pb2.VERDICT_MATCH
    neighbours = results[1:]
    assert sum(r.verdict == match_pb2.VERDICT_NO_MATCH for r in neighbours) == BUDGET
    refused = [r for r in neighbours if r.HasField("error")]
    assert refused and all(r.error.code == RESOURCE_EXHAUSTED for r in refused)
    assert learned(neighbours) <= 2 * BUDGET


def test_a_video_that_does_not_match_is_one_attempt(running: Running, listed: bytes) -> None:
    """A matched video, then other edits near it that do not match: each such video is at
    most one near-miss, however many of its frames are near, so a platform's uploads of
    one scene do not pause it."""
    rng = random.Random(9)
    edge = at_the_edge(listed, rng)
    match, metadata = stub(running)
    first = match.Match(video_item([edge], 0), metadata=metadata)
    assert first.verdict == match_pb2.VERDICT_MATCH
    far = [flip_bits(listed, 40 + k % 5, rng) for k in range(5)]

    def edit(i: int) -> match_pb2.MatchRequest:
        # Frames within 8 bits of the matched one, none within 31 of the listed hash.
        near = [flip_bits(edge, 8, rng) for _ in range(30)]
        return video_item([f for f in near if hamming(f, listed) > 31] + far, i)

    for i in range(BUDGET - 1):
        assert match.Match(edit(i + 1), metadata=metadata).verdict == match_pb2.VERDICT_NO_MATCH
    # Still answered: BUDGET - 1 near-misses do not flag.
    again = match.Match(video_item([edge], 99), metadata=metadata)
    assert again.verdict == match_pb2.VERDICT_MATCH
    # One more such video fills the budget (it is still answered); the next call is paused.
    assert match.Match(edit(100), metadata=metadata).verdict == match_pb2.VERDICT_NO_MATCH
    with pytest.raises(grpc.RpcError) as info:
        match.Match(video_item([edge], 101), metadata=metadata)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_the_same_image_in_a_batch_is_no_probe(running: Running, listed: bytes) -> None:
    near = flip_bits(listed, 5, random.Random(6))
    match, metadata = stub(running)
    batch = [item(near, i) for i in range(50)]
    answer = match.MatchBatch(match_pb2.MatchBatchRequest(items=batch), metadata=metadata)
    assert all(r.verdict == match_pb2.VERDICT_MATCH for r in answer.results)


def test_remembered_matches_cannot_be_flushed_by_other_matches() -> None:
    rng = random.Random(7)
    detector = ProbeDetector(ProbePolicy(remembered=16, flag_after=4))
    walked = random_pdq(rng)
    detector.observe("p", [walked], [])
    assert detector.observe("p", [], [flip(walked, 0)]) is False  # a first near-miss
    # Matching other hashes to push the walked one out of memory, so that its next
    # neighbours read as unrelated: pushing out what is still inside the window counts as
    # near-misses itself, so the flush trips the flag instead of hiding the walk.
    flushes = [detector.observe("p", [random_pdq(rng) for _ in range(16)], []) for _ in range(2)]
    assert any(flushes)
    assert detector.throttled_for("p") > 0


def test_benign_matches_within_capacity_flag_nothing() -> None:
    rng = random.Random(8)
    detector = ProbeDetector(ProbePolicy(remembered=64, flag_after=4))
    for _ in range(60):
        detector.observe("p", [random_pdq(rng)], [random_pdq(rng)])
    assert detector.flags == 0


@pytest.fixture
def two_workers_with_a_list(tmp_path: Path) -> Iterator[tuple[Server, bytes]]:
    server = start_server(tmp_path / "data", "--listen", "127.0.0.1:0", "--workers", "2")
    try:
        value = random_pdq(random.Random(9))
        connection = Connection(
            server=server.address, token=server.tokens["hotline"], retry=RetryPolicy(1)
        )
        with ListClient(connection) as lists:
            lists.create_list("iwf")
            lists.apply_changes("iwf", "b1", [upsert(PDQ, value, "P")])
        eventually(lambda: len(server.rpc_lines()) == 2, "the hotline's two calls logged")
        server.rpc_seen = 2
        yield server, value
    finally:
        assert server.stop() == 0


def test_workers_share_one_budget_per_tenant(two_workers_with_a_list: tuple[Server, bytes]) -> None:
    server, listed = two_workers_with_a_list
    metadata = (("authorization", f"Bearer {server.tokens['platform']}"),)
    edge = at_the_edge(listed, random.Random(10))
    pids: set[int] = set()
    answered_misses = 0
    refused = 0

    def ask(request: match_pb2.MatchRequest) -> match_pb2.MatchResponse | None:
        # A connection of its own each time: the kernel spreads them over both workers.
        with own_channel(server.address) as channel:
            stub = match_pb2_grpc.MatchServiceStub(channel)
            try:
                return stub.Match(request, metadata=metadata, timeout=10)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                return None
            finally:
                pids.add(int(server.next_rpc_line()["pid"]))  # type: ignore[call-overload]

    # Both workers serve the list once they have followed the change log.
    for _ in range(200):
        first = ask(item(edge, 999))
        if first is not None and first.verdict == match_pb2.VERDICT_MATCH and len(pids) == 2:
            break
    pids.clear()
    for _ in range(20):  # the same matched image again, on both workers: no near-miss
        answer = ask(item(edge, 999))
        assert answer is not None and answer.verdict == match_pb2.VERDICT_MATCH
    for bit in range(64):
        answer = ask(item(flip(edge, bit), bit))
        if answer is None:
            refused += 1
        elif answer.verdict == match_pb2.VERDICT_NO_MATCH:
            answered_misses += 1
    assert len(pids) == 2, "the calls never reached the second worker"
    # One budget for the tenant on this host: two workers do not give twice as much.
    assert answered_misses == BUDGET
    assert refused > 0

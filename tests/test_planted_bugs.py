"""One test per planted bug that used to pass every test: each fails on its bug."""

from __future__ import annotations

import io
import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from conftest import Running, start
from hashmatch.client import MD5, PDQ, InvalidArgument, NotFound, make_hash
from hashmatch.server.logs import JsonFormatter
from hashmatch.server.store.changelog import QUARANTINE
from hashmatch.v1 import match_pb2, match_pb2_grpc
from helpers import eventually, flip_bits, hashes, random_digest, random_pdq, upsert


def matched(r: Running, alg: int, value: bytes, quality: int | None = None) -> bool:
    return r.matcher().match([make_hash(alg, value, quality)]).matched


def fields(err: InvalidArgument) -> set[str]:
    return {v.field for v in err.violations}


# --- quarantine survives a restart -------------------------------------------------------


def test_quarantine_survives_a_restart_and_release_restores(tmp_path: Path) -> None:
    rng = random.Random(101)
    value = random_digest(rng, MD5)
    first = start(tmp_path)
    try:
        first.lists().create_list("iwf")
        first.lists().apply_changes("iwf", "b1", [upsert(MD5, value, "R-1")])
        assert matched(first, MD5, value)
        first.service.store.apply_event("iwf", QUARANTINE, ["R-1"], actor="test")
        first.service.follower.catch_up()
        eventually(lambda: not matched(first, MD5, value), "the quarantine is honoured")
    finally:
        first.service.stop(grace=0)
    second = start(tmp_path, first.tokens)
    try:
        # The new process loads the quarantine with the list.
        assert not matched(second, MD5, value)
        assert second.lists().release("iwf", ["R-1"]) == 1
        assert matched(second, MD5, value)
    finally:
        second.service.stop(grace=0)


# --- ReleaseQuarantine checks the owner --------------------------------------------------


def test_release_of_another_hotlines_list_is_not_found(running: Running) -> None:
    value = random_digest(random.Random(102), MD5)
    running.lists("hotline-a").create_list("iwf")
    running.lists("hotline-a").apply_changes("iwf", "b1", [upsert(MD5, value, "R-1")])
    running.service.store.apply_event("iwf", QUARANTINE, ["R-1"], actor="test")
    running.service.follower.catch_up()
    eventually(lambda: not matched(running, MD5, value), "the quarantine is honoured")

    with pytest.raises(NotFound):
        running.lists("hotline-b").release("iwf", ["R-1"])
    # Still quarantined: nothing was released.
    assert [q.reference_id for q in running.lists("hotline-a").quarantine("iwf")] == ["R-1"]
    assert not matched(running, MD5, value)
    # The owner can.
    assert running.lists("hotline-a").release("iwf", ["R-1"]) == 1
    assert matched(running, MD5, value)


# --- degenerate PDQ queries are dropped --------------------------------------------------


def test_degenerate_pdq_query_is_not_matched_even_within_threshold(running: Running) -> None:
    rng = random.Random(103)
    bits = rng.sample(range(256), 20)  # 20 set bits: above the 16-bit degenerate limit
    listed = sum(1 << b for b in bits).to_bytes(32, "big")
    zeros = bytes(32)
    assert bin(int.from_bytes(listed, "big")).count("1") == 20
    distance = bin(int.from_bytes(listed, "big") ^ int.from_bytes(zeros, "big")).count("1")
    assert distance == 20 <= 31  # the threshold would cover the all-zeros query

    lists = running.lists()
    lists.create_list("iwf")  # default threshold 31, min quality 50
    lists.apply_changes("iwf", "b1", [upsert(PDQ, listed, "R-1", quality=100)])
    assert lists.get_list("iwf").version == 1  # accepted, not refused as degenerate
    assert matched(running, PDQ, listed, 100)  # the entry is served
    assert matched(running, PDQ, flip_bits(listed, 5, rng), 100)

    # All zeros (0 set bits) is degenerate: dropped, whatever its distance.
    assert not matched(running, PDQ, zeros, 100)
    assert not matched(running, PDQ, zeros)
    # All ones too (256 set bits); it is 236 bits away anyway, so only a sanity check.
    assert not matched(running, PDQ, b"\xff" * 32, 100)


# --- the item limits ---------------------------------------------------------------------


def test_item_limits_name_their_field(running: Running) -> None:
    rng = random.Random(104)
    match = running.matcher()
    ok = hashes((MD5, random_digest(rng, MD5)))

    sixteen = hashes(*[(MD5, random_digest(rng, MD5)) for _ in range(16)])
    assert not match.match(sixteen).matched  # 16 is allowed
    with pytest.raises(InvalidArgument) as err:
        match.match(sixteen + hashes((MD5, random_digest(rng, MD5))))
    assert fields(err.value) == {"hashes"}

    assert not match.match(ok, item_id="x" * 256).matched  # 256 bytes is allowed
    with pytest.raises(InvalidArgument) as err:
        match.match(ok, item_id="x" * 257)
    assert fields(err.value) == {"item_id"}
    with pytest.raises(InvalidArgument) as err:
        match.match(ok, item_id="é" * 128 + "x")  # 257 bytes in 129 characters
    assert fields(err.value) == {"item_id"}

    for control in ("\x00", "\n", "\x1f", "\x7f"):
        with pytest.raises(InvalidArgument) as err:
            match.match(ok, item_id=f"upload{control}1")
        assert fields(err.value) == {"item_id"}


# --- a refused MatchStream item's item_id is not logged ----------------------------------


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Every record any logger writes, at every level, as the server's JSON lines."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)


def test_refused_stream_item_id_is_not_logged(
    running: Running, captured: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rng = random.Random(105)
    secret = f"upload-secret-{rng.getrandbits(64):016x}"
    good_id = f"upload-fine-{rng.getrandbits(64):016x}"
    too_many = hashes(*[(MD5, random_digest(rng, MD5)) for _ in range(17)])
    items = [
        match_pb2.MatchRequest(item_id=good_id, hashes=hashes((MD5, random_digest(rng, MD5)))),
        match_pb2.MatchRequest(item_id=secret, hashes=too_many),
        match_pb2.MatchRequest(item_id=secret + "-2", hashes=[make_hash(MD5, bytes(3))]),
    ]
    metadata = (("authorization", f"Bearer {running.tokens['platform']}"),)
    with grpc.insecure_channel(running.address) as channel:
        stub = match_pb2_grpc.MatchServiceStub(channel)
        responses = list(stub.MatchStream(iter(items), metadata=metadata, timeout=10))
    assert len(responses) == 3
    assert not responses[0].HasField("error")
    assert responses[1].HasField("error") and responses[2].HasField("error")

    def rpc_lines() -> list[dict[str, object]]:
        text = captured.getvalue()
        return [json.loads(line) for line in text.splitlines() if '"msg":"rpc"' in line]

    eventually(
        lambda: any(r.get("method") == "MatchService/MatchStream" for r in rpc_lines()),
        "the MatchStream call is logged",
    )
    text = captured.getvalue() + "\n".join(
        f"{r.getMessage()} {r.args!r} {vars(r)!r}" for r in caplog.records
    )
    for item_id in (secret, good_id):
        assert item_id not in text
    assert "upload-secret" not in text


# --- the PDQ threshold is inclusive in the multi-index search ----------------------------

# The core's bit positions (hashcore/src/pdq.rs): position s is bit s % 8 of byte s // 8.
# Eleven substrings: ten secondaries over positions 0-231, the primary over 232-255.
SECONDARIES = [(0, 24), (24, 48), (48, 71), (71, 94), (94, 117)]
SECONDARIES += [(117, 140), (140, 163), (163, 186), (186, 209), (209, 232)]
PRIMARY = (232, 256)
# Large enough that the core builds multi-index tables and plans to use them at t=31
# (a linear scan is chosen below roughly 50,000 PDQ hashes).
INDEXED = 80_000


def flip_positions(value: bytes, positions: list[int]) -> bytes:
    out = bytearray(value)
    assert len(set(positions)) == len(positions)
    for s in positions:
        out[s // 8] ^= 1 << (s % 8)
    return bytes(out)


def distance(a: bytes, b: bytes) -> int:
    return bin(int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).count("1")


def test_pdq_threshold_is_inclusive_in_the_multi_index_search(running: Running) -> None:
    rng = random.Random(106)
    targets = [random_pdq(rng) for _ in range(2)]
    entries = [upsert(PDQ, t, f"T-{i}", quality=100) for i, t in enumerate(targets)]
    entries += [
        upsert(PDQ, rng.getrandbits(256).to_bytes(32, "big"), f"N-{i}", quality=100)
        for i in range(INDEXED)
    ]
    lists = running.lists()
    lists.create_list("big")  # default threshold 31
    lists.apply_changes("big", "all", entries)
    assert lists.get_list("big").pdq_threshold == 31

    # Found only through a secondary table (3 flips in the primary's top bits, none in the
    # first secondary): the candidate verification decides.
    via_secondary = [255, 254, 253, *rng.sample(range(24, 232), 28)]
    # Found only through the primary bucket (one flip there, 3 in every secondary).
    via_primary = [240, *(s for lo, hi in SECONDARIES for s in rng.sample(range(lo, hi), 3))]
    for target, positions, spare in (
        (targets[0], via_secondary, 0),
        (targets[1], via_primary, 241),
    ):
        assert len(positions) == 31
        at_31 = flip_positions(target, positions)
        free = [s for s in range(256) if s not in positions and s != spare]
        at_32 = flip_positions(at_31, [rng.choice(free)])
        assert distance(target, at_31) == 31 and distance(target, at_32) == 32
        assert matched(running, PDQ, at_31, 100)
        assert not matched(running, PDQ, at_32, 100)

    # The same boundary with flip_bits' random positions.
    for target in targets:
        at_31 = flip_bits(target, 31, rng)
        assert matched(running, PDQ, at_31, 100)
        assert not matched(running, PDQ, flip_bits(target, 32, rng), 100)


# --- the PDQ quality minimum is inclusive ------------------------------------------------


def expected_match(query_quality: int, min_quality: int) -> bool:
    """The rule, independently: a query of quality at least the list's minimum is matched."""
    return query_quality >= min_quality


def test_pdq_query_quality_at_the_minimum_matches(running: Running) -> None:
    rng = random.Random(107)
    listed = random_pdq(rng)
    lists = running.lists()
    lists.create_list("iwf", pdq_min_quality=50)
    lists.apply_changes("iwf", "b1", [upsert(PDQ, listed, "R-1", quality=100)])
    near = flip_bits(listed, 3, rng)
    for quality in (0, 48, 49, 50, 51, 100):
        expected = expected_match(quality, 50)
        assert matched(running, PDQ, near, quality) is expected, quality
    assert matched(running, PDQ, near, 50)
    assert not matched(running, PDQ, near, 49)

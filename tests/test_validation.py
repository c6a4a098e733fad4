"""Bad input gets INVALID_ARGUMENT naming the field, and nothing is half-applied."""

from __future__ import annotations

import random

import grpc
import pytest

from conftest import Running
from hashmatch.client import (
    MD5,
    PDQ,
    SHA1,
    FailedPrecondition,
    InvalidArgument,
    make_hash,
)
from hashmatch.v1 import hashes_pb2, match_pb2
from helpers import hashes, random_digest, random_pdq, upsert


def fields(err: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in err.value.violations]


def test_wrong_digest_length(running: Running) -> None:
    with pytest.raises(InvalidArgument) as err:
        running.matcher().match([make_hash(MD5, bytes(16)), make_hash(SHA1, bytes(16))])
    assert fields(err) == ["hashes[1].value"]
    assert err.value.reason == "ERROR_REASON_INVALID_FIELD"


def test_unknown_algorithm(running: Running) -> None:
    bad = hashes_pb2.Hash(value=bytes(16))
    bad.algorithm = 9  # type: ignore[assignment]
    with pytest.raises(InvalidArgument) as err:
        running.matcher().match([bad])
    assert fields(err) == ["hashes[0].algorithm"]
    with pytest.raises(InvalidArgument) as err:
        running.matcher().match([hashes_pb2.Hash(value=bytes(16))])
    assert fields(err) == ["hashes[0].algorithm"]


def test_empty_requests(running: Running) -> None:
    with pytest.raises(InvalidArgument) as err:
        running.matcher().match([])
    assert fields(err) == ["hashes"]
    with pytest.raises(InvalidArgument) as err:
        running.matcher().match_batch([])
    assert fields(err) == ["items"]
    running.lists().create_list("iwf")
    with pytest.raises(InvalidArgument) as err:
        running.lists().apply_changes("iwf", "b1", [])
    assert fields(err) == ["upserts"]


def test_batch_item_errors_are_per_item(running: Running) -> None:
    results = running.matcher().match_batch(
        [("ok", hashes((MD5, bytes(16)))), ("bad", [make_hash(MD5, bytes(3))])]
    )
    assert results[0].error is None and not results[0].matched
    assert isinstance(results[1].error, InvalidArgument)
    assert [v.field for v in results[1].error.violations] == ["items[1].hashes[0].value"]


def test_malformed_utf8_names_the_field(running: Running) -> None:
    good = match_pb2.MatchRequest(item_id="ok", hashes=hashes((MD5, bytes(16))))
    raw = bytearray(good.SerializeToString())
    # item_id is field 1, length 2: replace "ok" with an invalid UTF-8 sequence.
    at = raw.index(b"ok")
    raw[at : at + 2] = b"\xff\xfe"
    batch = match_pb2.MatchBatchRequest(items=[good, good]).SerializeToString()
    bad_batch = batch[: len(batch) // 2] + batch[len(batch) // 2 :].replace(b"ok", b"\xc3\x28")
    token = running.tokens["platform"]
    metadata = (("authorization", f"Bearer {token}"),)
    with grpc.insecure_channel(running.address) as channel:
        call = channel.unary_unary("/hashmatch.v1.MatchService/Match")
        with pytest.raises(grpc.RpcError) as err:
            call(bytes(raw), metadata=metadata, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "item_id" in err.value.details()
        # In a batch the item is refused on its own; the others are answered.
        call = channel.unary_unary("/hashmatch.v1.MatchService/MatchBatch")
        answer = match_pb2.MatchBatchResponse.FromString(call(bad_batch, metadata=metadata))
        ok, bad = answer.results
        assert ok.verdict == match_pb2.VERDICT_NO_MATCH and not ok.HasField("error")
        assert bad.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert "items[1].item_id" in bad.error.message


def test_bad_entry_refuses_the_whole_batch(running: Running) -> None:
    rng = random.Random(1)
    good = random_digest(rng, MD5)
    lists = running.lists()
    lists.create_list("iwf")
    changes = [upsert(MD5, good, "OK-1"), upsert(SHA1, bytes(19), "BAD"), upsert(MD5, good, "")]
    with pytest.raises(InvalidArgument) as err:
        lists.apply_changes("iwf", "b1", changes)
    assert fields(err) == [
        "upserts[1].hash.value",
        "upserts[2].reference_id",
        "upserts[2].hash",  # repeats upserts[0]: a hash may appear once per batch
    ]
    assert lists.get_list("iwf").version == 0
    assert not running.matcher().match(hashes((MD5, good))).matched
    # The same batch_id is still free: nothing was recorded for the refused batch.
    assert lists.apply_changes("iwf", "b1", [upsert(MD5, good, "OK-1")]).version == 1


def test_degenerate_and_low_quality_pdq_entries_are_refused(running: Running) -> None:
    lists = running.lists()
    lists.create_list("iwf")
    with pytest.raises(InvalidArgument) as err:
        lists.apply_changes(
            "iwf",
            "b1",
            [
                upsert(PDQ, bytes(32), "ZEROS"),
                upsert(PDQ, b"\xff" * 32, "ONES"),
                upsert(PDQ, random_pdq(random.Random(2)), "LOWQ", quality=49),
            ],
        )
    assert fields(err) == [
        "upserts[0].hash.value",
        "upserts[1].hash.value",
        "upserts[2].hash.quality",
    ]


def test_degenerate_query_never_matches(running: Running) -> None:
    assert not running.matcher().match(hashes((PDQ, bytes(32)))).matched


def test_bad_list_fields(running: Running) -> None:
    lists = running.lists()
    with pytest.raises(InvalidArgument) as err:
        lists.create_list("Bad Name!")
    assert fields(err) == ["name"]
    with pytest.raises(InvalidArgument) as err:
        lists.create_list("ok", pdq_threshold=64, pdq_min_quality=101)
    assert fields(err) == ["pdq_threshold", "pdq_min_quality"]
    lists.create_list("ok")
    with pytest.raises(InvalidArgument) as err:
        lists.apply_changes("ok", "x" * 129, [upsert(MD5, bytes(16), "R")])
    assert fields(err) == ["batch_id"]


def test_resent_batch_id_is_a_noop(running: Running) -> None:
    rng = random.Random(3)
    a, b = random_digest(rng, MD5), random_digest(rng, MD5)
    lists = running.lists()
    lists.create_list("iwf")
    first = lists.apply_changes("iwf", "b1", [upsert(MD5, a, "R-1")])
    lists.apply_changes("iwf", "b2", [upsert(MD5, b, "R-2")])
    again = lists.apply_changes("iwf", "b1", [upsert(MD5, a, "R-1")])
    assert again.already_applied and again.version == first.version == 1
    info = lists.get_list("iwf")
    assert info.version == 2 and info.counts["md5"] == 2
    with pytest.raises(FailedPrecondition) as err:
        lists.apply_changes("iwf", "b1", [upsert(MD5, a, "DIFFERENT")])
    assert err.value.reason == "ERROR_REASON_BATCH_ID_REUSED"


def test_expected_version_rejects_a_stale_writer(running: Running) -> None:
    lists = running.lists()
    lists.create_list("iwf")
    lists.apply_changes("iwf", "b1", [upsert(MD5, bytes(16), "R")], expected_version=0)
    with pytest.raises(FailedPrecondition) as err:
        lists.apply_changes("iwf", "b2", [upsert(MD5, b"\x01" * 16, "R")], expected_version=0)
    assert err.value.reason == "ERROR_REASON_STALE_VERSION"
    assert lists.get_list("iwf").version == 1

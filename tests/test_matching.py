"""A hotline pushes a list, a platform gets a verdict: end to end through the real server."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from conftest import Running
from hashmatch.client import MD5, PDQ, SHA1, SHA256, make_hash
from helpers import flip_bits, hashes, random_digest, random_pdq, retire, upsert


@pytest.mark.parametrize("alg", [MD5, SHA1, SHA256])
def test_exact_digest_matches_and_near_miss_does_not(running: Running, alg: int) -> None:
    rng = random.Random(alg)
    listed = random_digest(rng, alg)
    running.lists().create_list("iwf")
    running.lists().apply_changes("iwf", "b1", [upsert(alg, listed, "IWF-1")])
    client = running.matcher()

    hit = client.match(hashes((alg, listed)), item_id="upload-1")
    assert hit.matched and hit.item_id == "upload-1"
    assert [(r.list, r.reference_id, r.list_version) for r in hit.references] == [
        ("iwf", "IWF-1", 1)
    ]
    other = bytes([listed[0] ^ 1]) + listed[1:]
    miss = client.match(hashes((alg, other)), item_id="upload-2")
    assert not miss.matched and miss.references == ()


def test_pdq_matches_at_distance_31_not_32(running: Running) -> None:
    rng = random.Random(7)
    listed = random_pdq(rng)
    running.lists().create_list("iwf")
    running.lists().apply_changes("iwf", "b1", [upsert(PDQ, listed, "P-1")])
    client = running.matcher()
    for distance in (0, 1, 30, 31):
        assert client.match(hashes((PDQ, flip_bits(listed, distance, rng)))).matched, distance
    for distance in (32, 33, 64, 128):
        assert not client.match(hashes((PDQ, flip_bits(listed, distance, rng)))).matched, distance


def test_list_threshold_and_quality_apply(running: Running) -> None:
    rng = random.Random(8)
    listed = random_pdq(rng)
    lists = running.lists()
    lists.create_list("strict", pdq_threshold=10, pdq_min_quality=80)
    lists.apply_changes("strict", "b1", [upsert(PDQ, listed, "S-1")])
    client = running.matcher()
    assert client.match(hashes((PDQ, flip_bits(listed, 10, rng)))).matched
    assert not client.match(hashes((PDQ, flip_bits(listed, 11, rng)))).matched
    assert client.match([make_hash(PDQ, listed, 80)]).matched
    assert not client.match([make_hash(PDQ, listed, 79)]).matched


def test_hash_in_two_lists_returns_both_references(running: Running) -> None:
    value = random_digest(random.Random(1), SHA256)
    a, b = running.lists("hotline-a"), running.lists("hotline-b")
    a.create_list("list-a")
    b.create_list("list-b")
    a.apply_changes("list-a", "a1", [upsert(SHA256, value, "A-REF")])
    b.apply_changes("list-b", "b1", [upsert(SHA256, value, "B-REF")])
    result = running.matcher().match(hashes((SHA256, value), (MD5, bytes(16))))
    assert result.matched
    assert sorted((r.list, r.reference_id) for r in result.references) == [
        ("list-a", "A-REF"),
        ("list-b", "B-REF"),
    ]


def test_several_hashes_of_one_item_report_each_reference_once(running: Running) -> None:
    rng = random.Random(2)
    md5, pdq = random_digest(rng, MD5), random_pdq(rng)
    running.lists().create_list("iwf")
    running.lists().apply_changes("iwf", "b1", [upsert(MD5, md5, "R-1"), upsert(PDQ, pdq, "R-1")])
    result = running.matcher().match(hashes((MD5, md5), (PDQ, pdq), (PDQ, flip_bits(pdq, 3, rng))))
    assert [(r.list, r.reference_id) for r in result.references] == [("iwf", "R-1")]


def test_retraction_stops_the_match(running: Running) -> None:
    rng = random.Random(3)
    md5, pdq = random_digest(rng, MD5), random_pdq(rng)
    lists, client = running.lists(), running.matcher()
    lists.create_list("iwf")
    lists.apply_changes("iwf", "b1", [upsert(MD5, md5, "R-1"), upsert(PDQ, pdq, "R-2")])
    assert client.match(hashes((MD5, md5))).matched
    near = flip_bits(pdq, 5, rng)
    assert client.match(hashes((PDQ, near))).matched

    result = lists.apply_changes("iwf", "b2", [retire(MD5, md5), retire(PDQ, pdq)])
    assert result.retired == 2 and result.version == 2
    assert not client.match(hashes((MD5, md5))).matched
    assert not client.match(hashes((PDQ, near))).matched
    info = lists.get_list("iwf")
    assert info.counts == {"md5": 0, "sha1": 0, "sha256": 0, "pdq": 0, "vpdq": 0}


def test_upsert_of_listed_hash_changes_its_reference(running: Running) -> None:
    md5 = random_digest(random.Random(4), MD5)
    lists = running.lists()
    lists.create_list("iwf")
    lists.apply_changes("iwf", "b1", [upsert(MD5, md5, "OLD")])
    lists.apply_changes("iwf", "b2", [upsert(MD5, md5, "NEW")])
    refs = running.matcher().match(hashes((MD5, md5))).references
    assert [r.reference_id for r in refs] == ["NEW"]
    assert lists.get_list("iwf").counts["md5"] == 1


def test_match_batch_answers_in_order(running: Running) -> None:
    rng = random.Random(5)
    listed = [random_digest(rng, SHA1) for _ in range(20)]
    running.lists().create_list("iwf")
    running.lists().apply_changes(
        "iwf", "b1", [upsert(SHA1, v, f"R-{i}") for i, v in enumerate(listed)]
    )
    items = []
    for i in range(100):
        value = listed[i // 5] if i % 5 == 0 else random_digest(rng, SHA1)
        items.append((f"item-{i}", hashes((SHA1, value))))
    results = running.matcher().match_batch(items)
    assert [r.item_id for r in results] == [f"item-{i}" for i in range(100)]
    assert [r.matched for r in results] == [i % 5 == 0 for i in range(100)]
    assert results[10].references[0].reference_id == "R-2"


def test_needles_and_haystack_regression(running: Running, shared_pdq: Path) -> None:
    vectors = shared_pdq / "vectors"
    needles = (vectors / "needles.txt").read_text().split()
    haystack = (vectors / "haystack.txt").read_text().split()
    expected: set[tuple[int, int]] = set()
    with (vectors / "needles-haystack-pairs.csv").open() as f:
        for row in csv.DictReader(f):
            if int(row["distance"]) <= 31:
                expected.add((int(row["needle_index"]), int(row["haystack_index"])))

    lists = running.lists()
    # The reference vectors include low-entropy hashes; quality is unknown, so the list
    # accepts every hash here and this test checks the distance logic alone.
    lists.create_list("haystack", pdq_min_quality=0)
    seen: dict[str, int] = {}
    changes = []
    for i, hex_hash in enumerate(haystack):
        if hex_hash in seen:
            continue
        seen[hex_hash] = i
        changes.append(upsert(PDQ, bytes.fromhex(hex_hash), str(i)))
    lists.apply_changes("haystack", "all", changes)
    # Duplicate hay hashes share one entry; map each back to every index holding it.
    same: dict[int, list[int]] = {}
    for i, hex_hash in enumerate(haystack):
        same.setdefault(seen[hex_hash], []).append(i)

    results = running.matcher().match_batch(
        (str(n), hashes((PDQ, bytes.fromhex(h)))) for n, h in enumerate(needles)
    )
    found = {
        (int(r.item_id), hay)
        for r in results
        for ref in r.references
        for hay in same[int(ref.reference_id)]
    }
    assert found == expected

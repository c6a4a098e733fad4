"""Tests of the compiled core through its Python binding (``hashmatch.server._hashcore``)."""

from __future__ import annotations

import random
import struct
import threading
from collections.abc import Sequence

import pytest

from hashmatch.server._hashcore import Index

MD5, SHA1, SHA256, PDQ = 1, 2, 3, 4
DIGEST_LEN = {MD5: 16, SHA1: 20, SHA256: 32, PDQ: 32}
UNKNOWN = 255


def slot(alg: int, digest: bytes) -> bytes:
    assert len(digest) == DIGEST_LEN[alg]
    return digest.ljust(32, b"\0")


def add(
    index: Index,
    list_id: int,
    entries: list[tuple[int, bytes, int]],
    deletions: Sequence[tuple[int, bytes]] = (),
) -> None:
    index.apply(
        list_id,
        bytes(a for a, _, _ in entries),
        b"".join(slot(a, d) for a, d, _ in entries),
        b"".join(struct.pack("<Q", i) for _, _, i in entries),
        bytes(a for a, _ in deletions),
        b"".join(slot(a, d) for a, d in deletions),
    )


def match(
    index: Index,
    queries: list[tuple[int, bytes]],
    qualities: list[int] | None = None,
    max_distances: list[int] | None = None,
) -> list[tuple[int, int, int]]:
    n = len(queries)
    return index.match_batch(
        bytes(a for a, _ in queries),
        b"".join(slot(a, d) for a, d in queries),
        bytes(qualities if qualities is not None else [UNKNOWN] * n),
        bytes(max_distances if max_distances is not None else [UNKNOWN] * n),
    )


def flip_bits(digest: bytes, n: int, rng: random.Random) -> bytes:
    value = int.from_bytes(digest, "big")
    for bit in rng.sample(range(256), n):
        value ^= 1 << bit
    return value.to_bytes(32, "big")


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)


@pytest.fixture
def index() -> Index:
    idx = Index()
    idx.configure_list(1, 31, 50)
    return idx


@pytest.mark.parametrize("alg", [MD5, SHA1, SHA256])
def test_exact_hit_per_algorithm(index: Index, rng: random.Random, alg: int) -> None:
    digest = rng.randbytes(DIGEST_LEN[alg])
    other = rng.randbytes(DIGEST_LEN[alg])
    add(index, 1, [(alg, digest, 42)])
    assert match(index, [(alg, digest), (alg, other)]) == [(0, 1, 42)]
    counts = [0, 0, 0, 0, 0]
    counts[alg - 1] = 1
    assert index.counts(1) == tuple(counts)


def test_same_digest_under_another_algorithm_does_not_match(index: Index) -> None:
    digest = bytes(range(32))
    add(index, 1, [(SHA256, digest, 1)])
    assert match(index, [(PDQ, digest)]) == []


def test_pdq_threshold_boundary(index: Index, rng: random.Random) -> None:
    entry = rng.randbytes(32)
    add(index, 1, [(PDQ, entry, 7)])
    at_31 = flip_bits(entry, 31, rng)
    at_32 = flip_bits(entry, 32, rng)
    assert match(index, [(PDQ, at_31), (PDQ, at_32), (PDQ, entry)]) == [(0, 1, 7), (2, 1, 7)]


def test_max_distance_only_tightens(index: Index, rng: random.Random) -> None:
    entry = rng.randbytes(32)
    add(index, 1, [(PDQ, entry, 7)])
    at_20 = flip_bits(entry, 20, rng)
    assert match(index, [(PDQ, at_20)], max_distances=[20]) == [(0, 1, 7)]
    assert match(index, [(PDQ, at_20)], max_distances=[19]) == []
    at_40 = flip_bits(entry, 40, rng)
    assert match(index, [(PDQ, at_40)], max_distances=[63]) == []


def test_quality_filter(index: Index, rng: random.Random) -> None:
    entry = rng.randbytes(32)
    add(index, 1, [(PDQ, entry, 7)])
    assert match(index, [(PDQ, entry)] * 4, qualities=[49, 50, 100, UNKNOWN]) == [
        (1, 1, 7),
        (2, 1, 7),
        (3, 1, 7),
    ]


def test_two_lists_sorted_results(index: Index, rng: random.Random) -> None:
    index.configure_list(2, 10, 0)
    md5 = rng.randbytes(16)
    pdq = rng.randbytes(32)
    add(index, 2, [(MD5, md5, 9), (PDQ, pdq, 3)])
    add(index, 1, [(MD5, md5, 8), (PDQ, pdq, 5), (PDQ, flip_bits(pdq, 1, rng), 4)])
    near = flip_bits(pdq, 15, rng)  # within list 1 (31), beyond list 2 (10)
    assert match(index, [(PDQ, pdq), (MD5, md5), (PDQ, near)]) == [
        (0, 1, 4),
        (0, 1, 5),
        (0, 2, 3),
        (1, 1, 8),
        (1, 2, 9),
        (2, 1, 4),
        (2, 1, 5),
    ]


def test_delete_then_no_match_and_readd(index: Index, rng: random.Random) -> None:
    md5 = rng.randbytes(16)
    pdq = rng.randbytes(32)
    add(index, 1, [(MD5, md5, 1), (PDQ, pdq, 2)])
    add(index, 1, [], deletions=[(MD5, md5), (PDQ, pdq), (SHA1, rng.randbytes(20))])
    assert match(index, [(MD5, md5), (PDQ, pdq)]) == []
    assert index.counts(1) == (0, 0, 0, 0, 0)
    # Deletions come before additions within one batch.
    add(index, 1, [(PDQ, pdq, 3)], deletions=[(PDQ, pdq)])
    assert match(index, [(PDQ, pdq)]) == [(0, 1, 3)]


def test_adding_existing_digest_replaces_its_id(index: Index, rng: random.Random) -> None:
    md5 = rng.randbytes(16)
    add(index, 1, [(MD5, md5, 1)])
    add(index, 1, [(MD5, md5, 2)])
    assert match(index, [(MD5, md5)]) == [(0, 1, 2)]
    assert index.counts(1) == (1, 0, 0, 0, 0)


def test_drop_list(index: Index, rng: random.Random) -> None:
    md5 = rng.randbytes(16)
    add(index, 1, [(MD5, md5, 1)])
    index.drop_list(1)
    index.drop_list(1)
    assert match(index, [(MD5, md5)]) == []
    with pytest.raises(ValueError):
        index.counts(1)


def test_memory_bytes_grows(index: Index, rng: random.Random) -> None:
    before = index.memory_bytes()
    add(index, 1, [(PDQ, rng.randbytes(32), i) for i in range(1000)])
    assert index.memory_bytes() > before


@pytest.mark.parametrize(("threshold", "quality"), [(-1, 50), (64, 50), (31, -1), (31, 101)])
def test_configure_rejects_out_of_range(index: Index, threshold: int, quality: int) -> None:
    with pytest.raises(ValueError):
        index.configure_list(1, threshold, quality)


def test_apply_rejects_bad_input_and_applies_nothing(index: Index) -> None:
    good = slot(MD5, b"\1" * 16)
    ident = struct.pack("<Q", 1)
    bad_calls = [
        (2, b"\1", good, ident, b"", b""),  # unknown list
        (1, b"\x09", good, ident, b"", b""),  # unknown algorithm
        (1, b"\1\1", good + good, ident, b"", b""),  # ids too short
        (1, b"\1", good[:31], ident, b"", b""),  # slot too short
        (1, b"\1", good[:16] + b"\1" + good[17:], ident, b"", b""),  # padding
        (1, b"\1", good, ident, b"\1", b""),  # deletion slot missing
        (-1, b"\1", good, ident, b"", b""),  # negative list id
    ]
    for call in bad_calls:
        with pytest.raises(ValueError):
            index.apply(*call)
    assert index.counts(1) == (0, 0, 0, 0, 0)


def test_match_rejects_bad_input(index: Index) -> None:
    good = slot(PDQ, b"\1" * 32)
    bad_calls = [
        (b"\6", good, b"\xff", b"\xff"),
        (b"\4", good[:-1], b"\xff", b"\xff"),
        (b"\4", good, b"", b"\xff"),
        (b"\4", good, b"\xff", b""),
        (b"\4", good, bytes([101]), b"\xff"),
        (b"\1", b"\1" * 32, b"\xff", b"\xff"),  # MD5 with non-zero padding
    ]
    for call in bad_calls:
        with pytest.raises(ValueError):
            index.match_batch(*call)
    with pytest.raises(TypeError):
        index.match_batch("x", good, b"\xff", b"\xff")  # type: ignore[arg-type]


def test_empty_batches(index: Index) -> None:
    assert index.match_batch(b"", b"", b"", b"") == []
    index.apply(1, b"", b"", b"", b"", b"")


def test_concurrent_readers_see_whole_batches(index: Index, rng: random.Random) -> None:
    digests = [rng.randbytes(16) for _ in range(200)]
    stop = threading.Event()
    seen: list[int] = []
    errors: list[str] = []

    n = len(digests)
    query = (
        bytes([MD5]) * n,
        b"".join(slot(MD5, d) for d in digests),
        bytes([UNKNOWN]) * n,
        bytes([UNKNOWN]) * n,
    )

    def reader() -> None:
        # Readers spend their time in the core (GIL released), as a server does.
        while not stop.is_set():
            n = len(index.match_batch(*query))
            if n not in (0, len(digests)):
                errors.append(f"partial batch visible: {n}")
            seen.append(n)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for _ in range(20):
        add(index, 1, [(MD5, d, i) for i, d in enumerate(digests)])
        add(index, 1, [], deletions=[(MD5, d) for d in digests])
    stop.set()
    for t in threads:
        t.join()
    assert not errors


def test_pdq_groups_match_like_single_queries(index: Index, rng: random.Random) -> None:
    entries = [rng.randbytes(32) for _ in range(50)]
    add(index, 1, [(PDQ, e, i) for i, e in enumerate(entries)])
    groups = [
        [flip_bits(entries[3], 10, rng), rng.randbytes(32)],
        [rng.randbytes(32) for _ in range(8)],
        [flip_bits(entries[7], 31, rng), flip_bits(entries[9], 5, rng), entries[7]],
    ]
    got = index.match_pdq_groups(
        b"".join(h for g in groups for h in g),
        bytes(len(g) for g in groups),
        bytes([UNKNOWN] * len(groups)),
        bytes([UNKNOWN] * len(groups)),
    )
    assert got == [(0, 1, 3), (2, 1, 7), (2, 1, 9)]
    singles = {
        (gi, lid, eid)
        for gi, g in enumerate(groups)
        for _, lid, eid in match(index, [(PDQ, h) for h in g])
    }
    assert set(got) == singles
    with pytest.raises(ValueError):
        index.match_pdq_groups(bytes(32 * 9), bytes([9]), b"\xff", b"\xff")
    with pytest.raises(ValueError):
        index.match_pdq_groups(bytes(32), bytes([2]), b"\xff", b"\xff")


def test_many_batches_then_compact(index: Index, rng: random.Random) -> None:
    entries = [rng.randbytes(32) for _ in range(3000)]
    for start in range(0, len(entries), 100):
        add(index, 1, [(PDQ, e, start + i) for i, e in enumerate(entries[start : start + 100])])
    add(index, 1, [], deletions=[(PDQ, e) for e in entries[:500]])
    index.compact()
    assert index.counts(1) == (0, 0, 0, 2500, 0)
    assert 1 <= index.segments(1)[3] <= 4
    probes = [entries[10], entries[600], flip_bits(entries[2999], 30, rng)]
    assert match(index, [(PDQ, p) for p in probes]) == [(1, 1, 600), (2, 1, 2999)]


def test_packed_matches_equal_tuples(index: Index, rng: random.Random) -> None:
    index.configure_list(2, 31, 0)
    md5 = [rng.randbytes(16) for _ in range(20)]
    add(index, 1, [(MD5, d, i) for i, d in enumerate(md5)])
    add(index, 2, [(MD5, d, 100 + i) for i, d in enumerate(md5[::2])])
    queries = [(MD5, d) for d in md5] + [(MD5, rng.randbytes(16))]
    n = len(queries)
    args = (
        bytes(a for a, _ in queries),
        b"".join(slot(a, d) for a, d in queries),
        bytes([UNKNOWN] * n),
        bytes([UNKNOWN] * n),
    )
    packed = index.match_batch_packed(*args)
    assert list(struct.iter_unpack("<IIQ", packed)) == index.match_batch(*args)
    assert len(packed) == 16 * 30

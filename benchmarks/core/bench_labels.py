"""What labels cost: reading a 100,000-entry batch, and answering matches with labels shown.

    .venv/bin/python -m pytest benchmarks/core/bench_labels.py -p no:cacheprovider \
        --benchmark-columns=min,median,ops

`parse_changes` of one ApplyChangesRequest of 100,000 MD5 upserts, without labels and with a
category and a classification on every entry; `match_request` + `encode` of a
MatchBatchRequest of 1,000 items that all match, against a list of 100,000 labelled entries
showing no label keys, then all of them.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from hashmatch.client import MD5, make_hash
from hashmatch.server import _hashcore
from hashmatch.v1 import lists_pb2, match_pb2

ENTRIES = 100_000
ITEMS = 1_000
LABELS = {"category": "A", "classification": "A1"}


def _digests(n: int) -> list[bytes]:
    rng = random.Random(1)
    return [rng.randbytes(16) for _ in range(n)]


@pytest.mark.parametrize("labelled", [False, True], ids=["plain", "labelled"])
def test_parse_changes(benchmark: Any, labelled: bool) -> None:
    request = lists_pb2.ApplyChangesRequest(list="l", batch_id="b")
    for i, value in enumerate(_digests(ENTRIES)):
        request.upserts.append(
            lists_pb2.Entry(
                hash=make_hash(MD5, value), reference_id=f"R-{i}", labels=LABELS if labelled else {}
            )
        )
    raw = request.SerializeToString()
    changes = benchmark(_hashcore.parse_changes, raw, 50)
    assert changes.violations == []


@pytest.mark.parametrize("exposed", [(), tuple(_hashcore.label_keys())], ids=["none", "all"])
def test_match_request(benchmark: Any, exposed: tuple[str, ...]) -> None:
    digests = _digests(ENTRIES)
    index = _hashcore.Index()
    index.configure_list(1, 31, 0, "l", exposed)
    refs = [f"R-{i}\0category=A\0classification=A1".encode() for i in range(ENTRIES)]
    ends = bytearray()
    total = 0
    for r in refs:
        total += len(r)
        ends += total.to_bytes(4, "little")
    slots = b"".join(d + bytes(16) for d in digests)
    ids = b"".join(i.to_bytes(8, "little") for i in range(ENTRIES))
    index.apply(1, b"\x01" * ENTRIES, slots, ids, b"", b"", bytes(ends), b"".join(refs))
    raw = match_pb2.MatchBatchRequest(
        items=[
            match_pb2.MatchRequest(item_id=str(i), hashes=[make_hash(MD5, digests[i])])
            for i in range(ITEMS)
        ]
    ).SerializeToString()

    def run() -> bytes:
        return index.match_request(raw, True, "platform").encode()

    out = match_pb2.MatchBatchResponse.FromString(benchmark(run))
    assert len(out.results) == ITEMS
    assert len(out.results[0].references[0].labels) == (2 if exposed else 0)

"""The core builds `entries` and `refs` keys for bulk loads itself: its layout is pinned to
the store's one definition (store/keys.py)."""

from __future__ import annotations

import random

from hashmatch.client import MD5, PDQ, SHA1, SHA256
from hashmatch.server.core import entry_pairs, parse_changes
from hashmatch.server.store import keys
from hashmatch.v1 import lists_pb2
from helpers import random_digest, random_pdq, upsert


def test_core_keys_equal_the_stores_layout() -> None:
    rng = random.Random(1)
    values = [(alg, random_digest(rng, alg)) for alg in (MD5, SHA1, SHA256)]
    values.append((PDQ, random_pdq(rng)))
    request = lists_pb2.ApplyChangesRequest(
        list="iwf",
        batch_id="b1",
        upserts=[
            lists_pb2.Entry(hash=upsert(alg, v, f"R-{i}").hash, reference_id=f"R-{i}")
            for i, (alg, v) in enumerate(values)
        ],
    )
    changes = parse_changes(request.SerializeToString(), 0)
    list_id, first_id = 7, 1000
    prefix = keys.list_prefix(list_id)
    entry_rows = dict(entry_pairs([changes], prefix, first_id))
    expected = {keys.entry_key(list_id, alg, v) for alg, v in values}
    assert set(entry_rows) == expected
    assert set(changes.upsert_keys(prefix)) == expected
    ids = sorted(int.from_bytes(raw, "little") for raw in entry_rows.values())
    assert ids == list(range(first_id, first_id + len(values)))
    ref_rows = changes.ref_pairs(list_id, first_id)
    assert [k for k, _ in ref_rows] == [keys.ref_key(list_id, first_id + i) for i in range(4)]
    assert [v for _, v in ref_rows] == [f"R-{i}".encode() for i in range(4)]
    for raw in entry_rows.values():
        entry_id = int.from_bytes(raw, "little")
        assert keys.ref_key_raw(list_id, raw) == keys.ref_key(list_id, entry_id)


def test_a_groups_entry_rows_come_in_key_order_numbered_in_batch_order() -> None:
    """Rows of several batches: ids follow the batches' order, rows the keys' (LMDB's)
    order, across algorithms of different digest lengths."""
    rng = random.Random(2)
    batches, expected = [], []
    next_id = 500
    for b in range(3):
        values = [(alg, random_digest(rng, alg)) for alg in (MD5, SHA1, SHA256, PDQ) * 5]
        request = lists_pb2.ApplyChangesRequest(
            list="iwf",
            batch_id=f"b{b}",
            upserts=[
                lists_pb2.Entry(hash=upsert(alg, v, f"R-{b}-{i}").hash, reference_id=f"R-{i}")
                for i, (alg, v) in enumerate(values)
            ],
        )
        batches.append(parse_changes(request.SerializeToString(), 0))
        for alg, v in values:
            expected.append((keys.entry_key(3, alg, v), next_id.to_bytes(8, "little")))
            next_id += 1
    pairs = entry_pairs(batches, keys.list_prefix(3), 500)
    assert len(pairs) == len(expected)
    assert list(pairs) == sorted(expected)
    assert list(pairs) == []  # an iterator: taken once

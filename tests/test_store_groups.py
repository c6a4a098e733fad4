"""A group of batches committed together (a bulk load's UploadChanges) leaves the store
exactly as the same batches applied one at a time: the same entries under the same ids,
references, change records, versions, digests, outcomes and refusals, whether or not the
group's new entries could be inserted in one pass."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from hashmatch.client import MD5, PDQ
from hashmatch.client.list_client import Change, build_batch
from hashmatch.server.core import Changes, parse_changes
from hashmatch.server.store import Role, Store, staging
from hashmatch.server.store.errors import BatchRefused, StoreError
from hashmatch.server.store.keys import list_prefix
from hashmatch.server.store.records import ApplyOutcome
from helpers import retire, upsert

LIST = "iwf"


def batch(batch_id: str, changes: list[Change], expected: int | None = None) -> Changes:
    return parse_changes(build_batch(LIST, batch_id, changes, expected).SerializeToString(), 0)


def new_store(path: Path) -> Store:
    store = Store(path)
    store.add_tenant("h", Role.HOTLINE)
    store.create_list(LIST, "h", pdq_threshold=31, pdq_min_quality=0)
    return store


@contextmanager
def twin_stores(tmp_path: Path, before: list[list[Change]]) -> Iterator[tuple[Store, Store]]:
    """Two stores holding the same list after the same earlier batches."""
    stores = (new_store(tmp_path / "one"), new_store(tmp_path / "two"))
    try:
        for store in stores:
            for i, changes in enumerate(before):
                store.apply_changes(LIST, batch(f"b{i}", changes), actor="h")
        yield stores
    finally:
        for store in stores:
            store.close()


def contents(store: Store) -> tuple[object, ...]:
    """Everything the list's batches wrote, but the times."""
    meta = store.get_list(LIST)
    assert meta is not None
    prefix = list_prefix(meta.id)
    with store.read() as txn:
        entries = [kv for kv in txn.cursor(db=store._db("entries")) if kv[0].startswith(prefix)]
        refs = [kv for kv in txn.cursor(db=store._db("refs")) if kv[0].startswith(prefix)]
        seen = [kv for kv in txn.cursor(db=store._db("batches")) if kv[0].startswith(prefix)]
    records = [replace(r, committed_at=0.0) for r in store.changes_since(meta.id, 0)]
    return entries, refs, seen, records, replace(meta, created_at=0.0, updated_at=0.0)


def one_by_one(store: Store, batches: list[Changes]) -> tuple[list[ApplyOutcome], str | None]:
    outcomes = []
    for changes in batches:
        try:
            outcomes.append(store.apply_changes(LIST, changes, actor="h"))
        except StoreError as exc:
            return outcomes, type(exc).__name__
    return outcomes, None


def together(store: Store, batches: list[Changes]) -> tuple[list[ApplyOutcome], str | None]:
    try:
        return store.apply_many(LIST, batches, actor="h"), None
    except BatchRefused as refused:
        return refused.applied, type(refused.cause).__name__


def values(rng: random.Random, n: int) -> list[Change]:
    return [
        upsert(PDQ, rng.randbytes(32), f"P-{i}")
        if i % 2
        else upsert(MD5, rng.randbytes(16), f"M-{i}")
        for i in range(n)
    ]


def cases() -> dict[str, tuple[list[list[Change]], list[tuple[str, list[Change], int | None]]]]:
    """Per case: batches applied before (one by one in both stores), then the group."""
    rng = random.Random(17)
    a, b, c, d = (values(rng, 40) for _ in range(4))
    return {
        "all new": ([], [("g1", a, None), ("g2", b, None), ("g3", c, None)]),
        "all new after earlier batches": ([d], [("g1", a, None), ("g2", b, None)]),
        "expected versions met": ([d], [("g1", a, 1), ("g2", b, 2), ("g3", c, None)]),
        "a hash in two batches": ([], [("g1", a, None), ("g2", b + a[3:4], None)]),
        "a hash listed already": ([d], [("g1", a, None), ("g2", b + d[5:6], None)]),
        "a hash listed twice in one batch": ([], [("g1", a + a[:1], None), ("g2", b, None)]),
        "another reference for a listed hash": (
            [d],
            [
                ("g1", a, None),
                ("g2", [upsert(MD5, bytes(16), "X"), Change(d[0].hash, "NEW")], None),
            ],
        ),
        "a stale expected version": ([d], [("g1", a, None), ("g2", b, 1), ("g3", c, None)]),
        "a batch sent before": ([d], [("b0", d, None), ("g2", b, None)]),
        "a batch_id used twice": ([], [("g1", a, None), ("g1", a, None), ("g3", b, None)]),
        "a batch_id used twice for other changes": ([], [("g1", a, None), ("g1", b, None)]),
        "a batch_id reused for other changes": ([d], [("b0", a, None), ("g2", b, None)]),
        "a retirement": ([d], [("g1", a, None), ("g2", [retire(MD5, bytes(16)), *b], None)]),
        "a hash retired and upserted in one batch": (
            [],
            [("g1", a, None), ("g2", [retire(MD5, bytes(16)), upsert(MD5, bytes(16), "R")], None)],
        ),
    }


@pytest.mark.parametrize("case", sorted(cases()))
def test_a_group_commits_what_its_batches_one_by_one_would(case: str, tmp_path: Path) -> None:
    before, group = cases()[case]
    with twin_stores(tmp_path, before) as stores:
        batches = [batch(bid, changes, expected) for bid, changes, expected in group]
        expected = one_by_one(stores[0], batches)
        got = together(stores[1], batches)
        assert got[0] == expected[0]
        assert got[1] == expected[1]
        assert contents(stores[1]) == contents(stores[0])


def test_a_large_group_of_new_entries_is_all_listed_under_consecutive_ids(tmp_path: Path) -> None:
    rng = random.Random(5)
    store = new_store(tmp_path / "s")
    try:
        batches = [batch(f"g{k}", values(rng, 500)) for k in range(8)]
        outcomes = store.apply_many(LIST, batches, actor="h")
        assert [(o.version, o.upserted, o.already_applied) for o in outcomes] == [
            (k + 1, 500, False) for k in range(8)
        ]
        meta = store.get_list(LIST)
        assert meta is not None
        assert (meta.version, meta.next_entry_id, sum(meta.counts)) == (8, 4001, 4000)
        with store.read() as txn:
            ids = sorted(
                int.from_bytes(v, "little") for _, v in txn.cursor(db=store._db("entries"))
            )
            assert ids == list(range(1, 4001))
            assert sum(1 for _ in txn.cursor(db=store._db("refs"))) == 4000
    finally:
        store.close()


@pytest.mark.parametrize("case", ["all new", "a hash in two batches", "a stale expected version"])
def test_a_published_file_commits_what_its_batches_one_by_one_would(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Groups of two or three messages: the staged messages are read on between groups,
    # each inserted in a child transaction of the publishing one.
    monkeypatch.setattr(staging, "PUBLISH_GROUP_ENTRIES", 50)
    before, group = cases()[case]
    with twin_stores(tmp_path, before) as stores:
        requests = [build_batch(LIST, bid, ch, exp) for bid, ch, exp in group * 2]
        for k, request in enumerate(requests):
            request.batch_id = f"{request.batch_id}-{k}"
        expected = one_by_one(
            stores[0], [parse_changes(r.SerializeToString(), 0) for r in requests]
        )
        base = contents(stores[1])
        stage = stores[1].open_stage(1, "h")
        stores[1].stage(stage, 0, [r.SerializeToString() for r in requests], [])
        try:
            published = stores[1].publish(stage, LIST, actor="h")
        except staging.StageRefused as refused:
            assert expected[1] == type(refused.cause).__name__
            assert refused.index == len(expected[0])
            assert contents(stores[1]) == base  # nothing of the file
            return
        assert expected[1] is None
        assert [o for _, o in published.outcomes] == expected[0]
        assert contents(stores[1]) == contents(stores[0])

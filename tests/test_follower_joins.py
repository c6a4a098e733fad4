"""The follower applies consecutive batches of upserts to the core as one: the index it
serves then answers every hash as when each batch is applied alone, with the same entry
ids, references (the list digest covers them) and version, whatever the batches do
between (retirements, new references, a quarantine)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from hashmatch.client import MD5, PDQ
from hashmatch.client.list_client import Change, build_batch
from hashmatch.server.core import Index, pack_hashes, parse_changes
from hashmatch.server.store import Role, Store
from hashmatch.server.store.changelog import QUARANTINE
from hashmatch.server.sync import follower as follower_module
from hashmatch.server.sync.follower import IndexFollower
from helpers import retire, upsert

LIST = "iwf"


def apply(store: Store, batch_id: str, changes: list[Change]) -> None:
    raw = build_batch(LIST, batch_id, changes).SerializeToString()
    store.apply_changes(LIST, parse_changes(raw, 0), actor="h")


def history(store: Store, rng: random.Random) -> list[tuple[int, bytes]]:
    """Commits a mixed history and returns every hash it named."""
    named: list[tuple[int, bytes]] = []
    for k in range(40):
        kind = rng.random()
        if kind < 0.2 and named:
            # Retire some hashes (listed or not), then list one of them again.
            gone = rng.sample(named, min(len(named), rng.randint(1, 6)))
            apply(store, f"r{k}", [retire(alg, v) for alg, v in gone])
            continue
        if kind < 0.3 and named:
            # New references for listed hashes, with new hashes among them.
            again = rng.sample(named, min(len(named), 5))
            fresh = [(MD5, rng.randbytes(16)) for _ in range(3)]
            named += fresh
            apply(
                store,
                f"n{k}",
                [upsert(a, v, f"NEW-{k}-{i}") for i, (a, v) in enumerate(again + fresh)],
            )
            continue
        if kind < 0.35:
            store.apply_event(LIST, QUARANTINE, [f"R-{k - 1}-0"], actor="h")
        size = rng.choice([1, 3, 20, 60])
        values = [
            (PDQ, rng.randbytes(32)) if i % 2 else (MD5, rng.randbytes(16)) for i in range(size)
        ]
        named += values
        apply(store, f"u{k}", [upsert(a, v, f"R-{k}-{i}") for i, (a, v) in enumerate(values)])
    return named


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_joined_batches_serve_what_one_by_one_serves(
    seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path / "data")
    store.add_tenant("h", Role.HOTLINE)
    store.add_tenant("p", Role.PLATFORM)
    list_id = store.create_list(LIST, "h", pdq_threshold=31, pdq_min_quality=0).id
    # Each follower loads the empty list first, so everything after comes from the log.
    followers = {join: IndexFollower(store, Index()) for join in (0, 25, 1_000_000)}
    for join, follower in followers.items():
        monkeypatch.setattr(follower_module, "JOIN_ENTRIES", join)
        follower.catch_up()
    named = history(store, random.Random(seed))
    meta = store.get_list(LIST)
    assert meta is not None
    answers = {}
    for join, follower in followers.items():
        monkeypatch.setattr(follower_module, "JOIN_ENTRIES", join)
        follower.catch_up()
        index = follower.index
        algs, slots = pack_hashes(named)
        n = len(named)
        snapshot = index.list_snapshot(list_id)
        answers[join] = (
            sorted(index.match_batch(algs, slots, bytes([255]) * n, bytes([0]) * n)),
            index.counts(list_id),
            snapshot.version,
            snapshot.digest(),
        )
        assert snapshot.version == meta.version
        assert snapshot.digest() == meta.digest
    assert answers[25] == answers[0]
    assert answers[1_000_000] == answers[0]

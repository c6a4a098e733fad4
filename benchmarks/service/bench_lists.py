"""ListService on loopback: atomic batches, bulk loads, retraction visibility, restarts."""

from __future__ import annotations

import itertools
import random
import time

from conftest import LIST, Served
from hashmatch.client import Change, make_hash
from hashmatch.client.algorithms import SHA256
from hashmatch.server.bench import corpus, local, probes

_counter = itertools.count()


def test_apply_changes_1000(benchmark, served: Served) -> None:  # type: ignore[no-untyped-def]
    """One ApplyChanges of 1,000 new SHA-256 entries (commit, change log, index update)."""
    rng = random.Random(3)
    client = probes.list_client(served.address, served.tokens["hotline"])

    def setup():  # type: ignore[no-untyped-def]
        k = next(_counter)
        changes = [Change(make_hash(SHA256, rng.randbytes(32)), f"A{k}-{i}") for i in range(1000)]
        return (LIST, f"bench-apply-{k}", changes), {}

    try:
        result = benchmark.pedantic(client.apply_changes, setup=setup, rounds=20, iterations=1)
    finally:
        client.close()
    assert result.upserted == 1000


def test_upload_changes_50k(benchmark, served: Served) -> None:  # type: ignore[no-untyped-def]
    """UploadChanges of a 50,000-entry synthetic list into a new list, 5 batches."""
    lists = (f"bench-upload-{k}" for k in itertools.count())
    synthetic = corpus.build(50_000, seed=5)

    def load() -> probes.LoadResult:
        return probes.load_list(served.address, served.tokens["hotline"], next(lists), synthetic)

    result = benchmark.pedantic(load, rounds=3, iterations=1)
    assert result.version == 5
    benchmark.extra_info["entries"] = 50_000


def test_retraction_visible(benchmark, served: Served) -> None:  # type: ignore[no-untyped-def]
    """Retire one listed entry, then poll Match until NO_MATCH (one worker)."""
    probes_left = iter(served.synthetic.retractable)

    def retract() -> float:
        result = probes.retraction_visibility(
            served.address,
            served.tokens["hotline"],
            served.tokens["platform"],
            LIST,
            [next(probes_left)],
            pollers=1,
            label=f"bench-retract-{next(_counter)}",
        )
        assert result.timeouts == 0
        return result.visible_ms[0]

    benchmark.pedantic(retract, rounds=30, iterations=1)


def test_server_start(benchmark, served: Served, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A second server on the loaded data folder: open LMDB, rebuild indexes, serve."""

    def start() -> float:
        t0 = time.perf_counter()
        server = local.LocalServer(served.data_dir, 1, log_path=tmp_path / "start.log").start()
        elapsed = time.perf_counter() - t0
        server.stop()
        return elapsed

    benchmark.pedantic(start, rounds=3, iterations=1)
    benchmark.extra_info["entries"] = served.synthetic.size

"""PDQ matching: hashcore against FAISS and threatexchange, side by side.

Run (see README.md in this folder):

    .venv/bin/python -m pytest benchmarks/core/bench_pdq.py -p no:cacheprovider \\
        --benchmark-json=/tmp/bench_pdq.json

Per corpus (random / clustered, each size in HASHCORE_BENCH_SIZES) and index: build time,
bytes per entry, µs/query for single queries (one thread), for one batched call (1 and 2
threads), recall and precision against a brute-force scan, and dihedral groups of 8.
Threshold 31 throughout. Timings go to pytest-benchmark; the derived figures are in each
benchmark's ``extra_info`` and in the summary table printed at the end.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hashcore_corpus import brute_force, clustered_corpus, make_queries, random_corpus
from peers import Hashcore, available

from conftest import PEERS, QUERIES, SIZES

THRESHOLD = 31
# Peers are slow; they answer a prefix of the queries (same queries, same order).
PEER_QUERIES = int(os.environ.get("HASHCORE_BENCH_PEER_QUERIES", "300"))
# threatexchange's PDQIndex builds from hex strings in Python: bounded by default.
TE_MAX = int(os.environ.get("HASHCORE_BENCH_TE_MAX", "1000000"))
IMPLS = available(PEERS)
WORLDS = [(kind, n) for n in SIZES for kind in ("random", "clustered")]


class World:
    """One corpus, its queries, the oracle and every index built on it."""

    def __init__(self, kind: str, n: int) -> None:
        self.kind, self.n = kind, n
        self.corpus = random_corpus(n) if kind == "random" else clustered_corpus(n)
        self.queries = make_queries(self.corpus, QUERIES)
        self.built: dict[str, Any] = {}
        self.rows: dict[str, dict[str, object]] = {}
        self._oracle: list[tuple[int, set[int]]] | None = None

    def row(self, impl: type, report: list[dict[str, object]]) -> dict[str, object]:
        if impl.name not in self.rows:
            row: dict[str, object] = {
                "corpus": self.kind,
                "n": len(self.corpus),
                "index": impl.name,
            }
            self.rows[impl.name] = row
            report.append(row)
        return self.rows[impl.name]

    def check(self, impl: type) -> None:
        """Skips (before any measurement starts) what this run leaves out."""
        if impl.name.startswith("threatexchange") and self.n > TE_MAX:
            pytest.skip(f"threatexchange limited to {TE_MAX} entries (HASHCORE_BENCH_TE_MAX)")

    def get(self, impl: type) -> Any:
        if impl.name not in self.built:
            self.check(impl)
            for other in list(self.built):
                if other != "hashcore":
                    del self.built[other]  # keep one peer in memory at a time
            gc.collect()
            start = time.perf_counter()
            self.built[impl.name] = impl(self.corpus, THRESHOLD)
            self.build_s = {impl.name: time.perf_counter() - start}
        return self.built[impl.name]

    def queries_for(self, impl: type) -> np.ndarray:
        return self.queries if impl is Hashcore else self.queries[:PEER_QUERIES]

    def oracle(self) -> list[tuple[int, set[int]]]:
        """Brute-force answers for a subset of the queries (every 33rd near-duplicate
        distance included, so the 31 / 32 boundary is always checked)."""
        if self._oracle is None:
            count = 66 if self.n <= 2_000_000 else 16
            picked = sorted(set(range(min(count, len(self.queries)))) | {62, 64})
            picked = [i for i in picked if i < len(self.queries)]
            self._oracle = [
                (i, set(brute_force(self.corpus, self.queries[i], THRESHOLD).tolist()))
                for i in picked
            ]
        return self._oracle


@pytest.fixture(scope="session", params=WORLDS, ids=[f"{k}-{n}" for k, n in WORLDS])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    w = World(*request.param)
    yield w
    w.built.clear()
    gc.collect()


@pytest.mark.parametrize("impl", IMPLS, ids=[i.name for i in IMPLS])
def test_build(benchmark: Any, world: World, impl: type, report: list) -> None:
    world.check(impl)
    world.built.pop(impl.name, None)
    index = benchmark.pedantic(lambda: world.get(impl), rounds=1, iterations=1)
    row = world.row(impl, report)
    row["build_s"] = world.build_s[impl.name]
    row["bytes/entry"] = index.memory / len(world.corpus)
    benchmark.extra_info.update(build_s=row["build_s"], bytes_per_entry=row["bytes/entry"])


@pytest.mark.parametrize("impl", IMPLS, ids=[i.name for i in IMPLS])
def test_recall_precision(world: World, impl: type, report: list) -> None:
    index = world.get(impl)
    oracle = [(i, want) for i, want in world.oracle() if i < len(world.queries_for(impl))]
    hit = got_total = want_total = 0
    for i, want in oracle:
        got = set(index.query_one(world.queries[i]))
        hit += len(got & want)
        got_total += len(got)
        want_total += len(want)
    recall = hit / want_total if want_total else 1.0
    precision = hit / got_total if got_total else 1.0
    row = world.row(impl, report)
    row["recall"], row["precision"] = recall, precision
    row["oracle_queries"] = len(oracle)
    if impl is Hashcore:
        assert (recall, precision) == (1.0, 1.0)


@pytest.mark.parametrize("impl", IMPLS, ids=[i.name for i in IMPLS])
def test_query_single(benchmark: Any, world: World, impl: type, report: list) -> None:
    index = world.get(impl)
    qs = world.queries_for(impl)
    impl.threads(1)
    # Each query's fastest round: on a shared machine preemption only adds time.
    best = [float("inf")] * len(qs)

    def run() -> int:
        found = 0
        for i, q in enumerate(qs):
            start = time.perf_counter()
            found += len(index.query_one(q))
            best[i] = min(best[i], time.perf_counter() - start)
        return found

    benchmark.pedantic(run, rounds=3 if impl is Hashcore else 1, iterations=1)
    us = benchmark.stats.stats.min / len(qs) * 1e6
    p50 = float(np.median(best)) * 1e6
    row = world.row(impl, report)
    row["us/query 1t"], row["p50 us 1t"] = us, p50
    benchmark.extra_info.update(us_per_query=us, p50_us=p50, queries=len(qs))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("impl", IMPLS, ids=[i.name for i in IMPLS])
def test_query_batched(
    benchmark: Any, world: World, impl: type, threads: int, report: list
) -> None:
    if impl.name.startswith("threatexchange"):
        pytest.skip("PDQIndex answers one hash per call")
    index = world.get(impl)
    qs = world.queries_for(impl)
    impl.threads(threads)
    try:
        benchmark.pedantic(lambda: index.query_batch(qs), rounds=3, iterations=1)
    finally:
        impl.threads(0 if impl is Hashcore else os.cpu_count() or 1)
    us = benchmark.stats.stats.min / len(qs) * 1e6
    world.row(impl, report)[f"us/query batch {threads}t"] = us
    benchmark.extra_info.update(us_per_query=us, queries=len(qs), threads=threads)


def test_dihedral_groups(benchmark: Any, world: World, report: list) -> None:
    """Groups of 8 hashes per item: one grouped call vs the same hashes as 8 queries."""
    index = world.get(Hashcore)
    Hashcore.threads(1)
    qs = world.queries[: (len(world.queries) // 8) * 8]
    groups = len(qs) // 8
    start = time.perf_counter()
    for g in range(groups):
        for q in qs[8 * g : 8 * g + 8]:
            index.query_one(q)
    single = (time.perf_counter() - start) / groups * 1e6

    def run() -> int:
        return sum(len(index.query_groups(qs[8 * g : 8 * g + 8], 8)) for g in range(groups))

    benchmark.pedantic(run, rounds=3, iterations=1)
    Hashcore.threads(0)
    grouped = benchmark.stats.stats.min / groups * 1e6
    row = world.row(Hashcore, report)
    row["us/group of 8"], row["us/8 singles"] = grouped, single
    benchmark.extra_info.update(us_per_group=grouped, us_per_8_singles=single)

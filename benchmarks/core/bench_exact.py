"""Exact sets (MD5 / SHA-256): batched lookups through the binding, 1 and 2 threads.

    .venv/bin/python -m pytest benchmarks/core/bench_exact.py -p no:cacheprovider

``HASHCORE_BENCH_EXACT_N`` entries per algorithm (default 10,000,000) in one list;
batches of 10,000 queries, half of them hits. Reports millions of lookups per second.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hashcore_corpus import exact_digests

from hashmatch.server import _hashcore

N = int(os.environ.get("HASHCORE_BENCH_EXACT_N", "10000000"))
BATCH = 10_000
BATCHES = 20
ALGS = {"md5": (1, 16), "sha256": (3, 32)}


class ExactWorld:
    def __init__(self, alg: str) -> None:
        code, length = ALGS[alg]
        self.code = code
        digests = exact_digests(N, length, seed=code)
        slots = np.zeros((N, 32), dtype=np.uint8)
        slots[:, :length] = digests
        self.index = _hashcore.Index()
        self.index.configure_list(1, 31, 50)
        start = time.perf_counter()
        chunk = 2_000_000
        for s in range(0, N, chunk):
            e = min(N, s + chunk)
            self.index.apply(
                1,
                bytes([code]) * (e - s),
                slots[s:e].tobytes(),
                np.arange(s, e, dtype="<u8").tobytes(),
                b"",
                b"",
            )
        self.index.compact()
        self.load_s = time.perf_counter() - start
        rng = np.random.default_rng(9)
        q = np.zeros((BATCH * BATCHES, 32), dtype=np.uint8)
        q[:, :length] = exact_digests(len(q), length, seed=100 + code)
        hits = rng.integers(0, N, size=len(q) // 2)
        q[::2, :length] = digests[hits]
        self.batches = [q[i * BATCH : (i + 1) * BATCH].tobytes() for i in range(BATCHES)]
        self.algs = bytes([code]) * BATCH
        self.ff = b"\xff" * BATCH


@pytest.fixture(scope="module", params=list(ALGS))
def exact_world(request: pytest.FixtureRequest) -> Iterator[ExactWorld]:
    yield ExactWorld(request.param)


@pytest.mark.parametrize("api", ["tuples", "packed"])
@pytest.mark.parametrize("threads", [1, 2])
def test_exact_lookups(
    benchmark: Any, exact_world: ExactWorld, threads: int, api: str, report: list
) -> None:
    """``match_batch`` (a list of tuples) or ``match_batch_packed`` (16-byte records)."""
    w = exact_world
    _hashcore.set_max_threads(threads)

    def run() -> int:
        if api == "packed":
            return sum(
                len(w.index.match_batch_packed(w.algs, b, w.ff, w.ff)) // 16 for b in w.batches
            )
        return sum(len(w.index.match_batch(w.algs, b, w.ff, w.ff)) for b in w.batches)

    try:
        found = benchmark.pedantic(run, rounds=3, iterations=1)
    finally:
        _hashcore.set_max_threads(0)
    assert found == BATCH * BATCHES // 2
    rate = BATCH * BATCHES / benchmark.stats.stats.min / 1e6
    alg = next(a for a, (c, _) in ALGS.items() if c == w.code)
    report.append(
        {
            "corpus": f"exact-{alg} ({api})",
            "n": N,
            "index": "hashcore",
            "build_s": w.load_s,
            "bytes/entry": w.index.memory_bytes() / N,
            f"M lookups/s {threads}t": rate,
        }
    )
    benchmark.extra_info.update(million_lookups_per_s=rate, threads=threads, api=api)

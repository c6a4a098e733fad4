"""Live updates: add 1 M PDQ entries to a loaded index while queries keep running.

    .venv/bin/python -m pytest benchmarks/core/bench_update.py -p no:cacheprovider

Base: the largest size in HASHCORE_BENCH_SIZES (random corpus). A reader thread issues
single queries the whole time; the writer applies 1,000,000 new entries in batches of
10,000 (``HASHCORE_BENCH_UPDATE_BATCH``). Reports the time until every batch is applied
(visible to readers), until background merges settle, and reader latency meanwhile.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np
from hashcore_corpus import make_queries, random_corpus

from conftest import SIZES
from hashmatch.server import _hashcore

ADD = 1_000_000
BATCH = int(os.environ.get("HASHCORE_BENCH_UPDATE_BATCH", "10000"))


def test_add_while_querying(benchmark: Any, report: list) -> None:
    n = max(SIZES)
    base = random_corpus(n, seed=11)
    extra = random_corpus(ADD, seed=12)
    index = _hashcore.Index()
    index.configure_list(1, 31, 0)
    chunk = 2_000_000
    start = time.perf_counter()
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        rows = base[s:e]
        index.apply(
            1, b"\x04" * len(rows), rows.tobytes(), np.arange(s, e, dtype="<u8").tobytes(), b"", b""
        )
    index.compact()
    load_s = time.perf_counter() - start
    queries = make_queries(base, 2000, seed=13)
    latencies: list[float] = []
    stop = threading.Event()

    def reader() -> None:
        i = 0
        while not stop.is_set():
            q = queries[i % len(queries)].tobytes()
            t0 = time.perf_counter()
            index.match_batch(b"\x04", q, b"\xff", b"\xff")
            latencies.append(time.perf_counter() - t0)
            i += 1

    result: dict[str, float] = {}

    def add_all() -> None:
        thread = threading.Thread(target=reader)
        thread.start()
        t0 = time.perf_counter()
        for s in range(0, ADD, BATCH):
            rows = extra[s : s + BATCH]
            ids = np.arange(n + s, n + s + len(rows), dtype="<u8").tobytes()
            index.apply(1, b"\x04" * len(rows), rows.tobytes(), ids, b"", b"")
        result["applied_s"] = time.perf_counter() - t0
        index.compact()
        result["merged_s"] = time.perf_counter() - t0
        stop.set()
        thread.join()

    benchmark.pedantic(add_all, rounds=1, iterations=1)
    assert index.counts(1)[3] == n + ADD
    lat = np.array(latencies) * 1e6
    row = {
        "corpus": "random+1M live",
        "n": n,
        "index": "hashcore",
        "build_s": load_s,
        "applied_s": result["applied_s"],
        "merged_s": result["merged_s"],
        "reader p50 us": float(np.percentile(lat, 50)) if len(lat) else 0.0,
        "reader p99 us": float(np.percentile(lat, 99)) if len(lat) else 0.0,
        "reader queries": len(lat),
        "segments": index.segments(1)[3],
    }
    report.append(row)
    benchmark.extra_info.update({k.replace(" ", "_"): v for k, v in row.items()})

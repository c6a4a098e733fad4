"""Exact sets (MD5 / SHA-256): batched lookups through the binding, 1 and 2 threads.

    .venv/bin/python -m pytest benchmarks/core/bench_exact.py -p no:cacheprovider

``HASHCORE_BENCH_EXACT_N`` entries per algorithm (default 10,000,000) in one list, each
with a reference ID (as the store loads them); batches of 10,000 queries, half of them
hits. Reports millions of lookups per second in the fastest of 100 calls (one batch
each, the 20 batches in turn) through three calls:

- ``request``: what the server runs for a ``MatchBatch`` call (see
  ``hashmatch.server.matching.matcher``): ``Index.match_request`` on the request's wire
  bytes (10,000 items of one hash each), then ``Verdicts.encode``, the response bytes.
  ``request, no hits`` is the same with every query a miss: the lookups alone, without
  answering hits (reference, verdict, match counts).
- ``packed``: ``match_batch_packed`` on packed hashes (16-byte records out);
- ``tuples``: ``match_batch`` (a list of tuples out).

``HASHCORE_BENCH_EXACT_THREADS`` (default ``1,2``): the thread counts measured.
``HASHCORE_BENCH_BASELINE`` (optional): the path of another build of the extension
(``_hashcore.abi3.so``, e.g. one copied from the main branch); every figure is then also
measured with it, in the same run, on the same data.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hashcore_corpus import exact_digests

from hashmatch.server import _hashcore
from hashmatch.v1 import match_pb2

N = int(os.environ.get("HASHCORE_BENCH_EXACT_N", "10000000"))
BASELINE = os.environ.get("HASHCORE_BENCH_BASELINE", "")
THREADS = [int(t) for t in os.environ.get("HASHCORE_BENCH_EXACT_THREADS", "1,2").split(",") if t]
BATCH = 10_000
BATCHES = 20
# Rounds of one batch each; the fastest counts (the machine may be shared).
ROUNDS = 100
ALGS = {"md5": (1, 16), "sha256": (3, 32)}
TENANT = "bench"


def _load_baseline(path: str) -> ModuleType:
    """Another build of the extension, imported beside the current one."""
    loader = importlib.machinery.ExtensionFileLoader("_hashcore", path)
    spec = importlib.util.spec_from_file_location("_hashcore", path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


BUILDS = {"current": _hashcore} | ({"baseline": _load_baseline(BASELINE)} if BASELINE else {})


def _varint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append(v & 0x7F | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _field(number: int, body: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(body)) + body


def _references(start: int, end: int) -> tuple[bytes, bytes]:
    """Reference IDs ``r`` + 8 decimal digits of the entry id: ``(ref_ends, refs)``."""
    ids = np.arange(start, end, dtype=np.int64)
    digits = (ids[:, None] // 10 ** np.arange(7, -1, -1)) % 10 + ord("0")
    text = np.concatenate([np.full((len(ids), 1), ord("r")), digits], axis=1).astype(np.uint8)
    ends = np.arange(1, len(ids) + 1, dtype="<u4") * 9
    return ends.tobytes(), text.tobytes()


class ExactWorld:
    def __init__(self, build: str, alg: str) -> None:
        code, length = ALGS[alg]
        self.build = build
        self.module = BUILDS[build]
        self.alg = alg
        self.code = code
        digests = exact_digests(N, length, seed=code)
        slots = np.zeros((N, 32), dtype=np.uint8)
        slots[:, :length] = digests
        self.index = self.module.Index()
        self.index.configure_list(1, 31, 50, name="bench-list")
        start = time.perf_counter()
        chunk = 2_000_000
        for s in range(0, N, chunk):
            e = min(N, s + chunk)
            ref_ends, refs = _references(s, e)
            self.index.apply(
                1,
                bytes([code]) * (e - s),
                slots[s:e].tobytes(),
                np.arange(s, e, dtype="<u8").tobytes(),
                b"",
                b"",
                ref_ends,
                refs,
            )
        self.index.compact()
        self.load_s = time.perf_counter() - start
        rng = np.random.default_rng(9)
        q = np.zeros((BATCH * BATCHES, 32), dtype=np.uint8)
        q[:, :length] = exact_digests(len(q), length, seed=100 + code)
        misses = q.copy()
        self.hit_ids = rng.integers(0, N, size=len(q) // 2)
        q[::2, :length] = digests[self.hit_ids]
        self.batches = [q[i * BATCH : (i + 1) * BATCH].tobytes() for i in range(BATCHES)]
        self.algs = bytes([code]) * BATCH
        self.ff = b"\xff" * BATCH
        self.requests = [self._request(q, i) for i in range(BATCHES)]
        self.miss_requests = [self._request(misses, i) for i in range(BATCHES)]

    def _request(self, q: np.ndarray, b: int) -> bytes:
        """``MatchBatchRequest`` bytes of batch ``b``: one item per query."""
        code, length = ALGS[self.alg]
        items = []
        for i in range(BATCH):
            digest = q[b * BATCH + i, :length].tobytes()
            value = _field(2, digest)
            item = _field(1, f"item-{b}-{i}".encode()) + _field(2, b"\x08" + bytes([code]) + value)
            items.append(_field(1, item))
        return b"".join(items)


@pytest.fixture(scope="module", params=[(b, a) for a in ALGS for b in BUILDS], ids=str)
def exact_world(request: pytest.FixtureRequest) -> Iterator[ExactWorld]:
    yield ExactWorld(*request.param)


def _check_request_answers(w: ExactWorld) -> None:
    """The server's path answers exactly the hits, each with its entry's reference."""
    verdicts = w.index.match_request(w.requests[0], True, TENANT)
    response = match_pb2.MatchBatchResponse.FromString(verdicts.encode())
    assert len(response.results) == BATCH
    for i, r in enumerate(response.results):
        if i % 2 == 0:
            assert r.verdict == match_pb2.VERDICT_MATCH
            assert [x.reference_id for x in r.references] == [f"r{w.hit_ids[i // 2]:08d}"]
        else:
            assert r.verdict == match_pb2.VERDICT_NO_MATCH
    w.index.take_counts()


@pytest.mark.parametrize("api", ["request", "request, no hits", "packed", "tuples"])
@pytest.mark.parametrize("threads", THREADS)
def test_exact_lookups(
    benchmark: Any, exact_world: ExactWorld, threads: int, api: str, report: list
) -> None:
    w = exact_world
    w.module.set_max_threads(threads)
    requests = w.miss_requests if api == "request, no hits" else w.requests
    rounds = iter(range(ROUNDS))

    def run() -> int:
        # One batch per round, the batches in turn.
        b = next(rounds) % BATCHES
        if api.startswith("request"):
            # What Matcher.answer does for a MatchBatch call without PDQ hashes.
            return len(w.index.match_request(requests[b], True, TENANT).encode())
        if api == "packed":
            return len(w.index.match_batch_packed(w.algs, w.batches[b], w.ff, w.ff)) // 16
        return len(w.index.match_batch(w.algs, w.batches[b], w.ff, w.ff))

    def flush() -> None:
        # Match counts are taken between rounds, as the server's flush does.
        w.index.take_counts()

    try:
        if api == "request":
            _check_request_answers(w)
        found = benchmark.pedantic(run, setup=flush, rounds=ROUNDS, iterations=1)
    finally:
        w.module.set_max_threads(0)
    if api in ("packed", "tuples"):
        assert found == BATCH // 2
    rate = BATCH / benchmark.stats.stats.min / 1e6
    report.append(
        {
            "corpus": f"exact-{w.alg} ({api})",
            "build": w.build,
            "n": N,
            "index": "hashcore",
            "build_s": w.load_s,
            "bytes/entry": w.index.memory_bytes() / N,
            f"M lookups/s {threads}t": rate,
        }
    )
    benchmark.extra_info.update(
        million_lookups_per_s=rate,
        threads=threads,
        api=api,
        build=w.build,
    )

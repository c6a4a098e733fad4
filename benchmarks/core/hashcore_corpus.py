"""Deterministic PDQ and exact-hash corpora for the hashcore benchmarks.

Every generator takes an explicit seed, so two runs (or two machines) measure the same
data. PDQ hashes are rows of 32 bytes (uint8 arrays); bit order does not matter for
Hamming distance as long as every index sees the same bytes.

- ``random_corpus``: uniform 256-bit hashes.
- ``clustered_corpus``: the shape of real collections — many near-duplicates of the same
  image. Cluster sizes are geometric (mean ~16, up to 64); members differ from their
  centre in 1-24 bits, so members of one cluster are within ~48 bits of each other.
- ``make_queries``: half near-duplicates of corpus entries at distances cycling through
  0..32 (so the boundary cases 31 and 32 occur every 33 queries), half random hashes.
"""

from __future__ import annotations

import numpy as np

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def random_corpus(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 32), dtype=np.uint8)


def _flip_rows(rows: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """XOR each row with `counts[i]` random bits (positions may repeat, rarely)."""
    out = rows.copy()
    max_k = int(counts.max(initial=0))
    if max_k == 0:
        return out
    pos = rng.integers(0, 256, size=(len(rows), max_k))
    use = np.arange(max_k)[None, :] < counts[:, None]
    r = np.repeat(np.arange(len(rows)), max_k)[use.ravel()]
    p = pos.ravel()[use.ravel()]
    np.bitwise_xor.at(out, (r, p // 8), (1 << (p % 8)).astype(np.uint8))
    return out


def clustered_corpus(n: int, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sizes = np.minimum(rng.geometric(1 / 16, size=n // 4 + 16), 64)
    sizes = sizes[: np.searchsorted(np.cumsum(sizes), n) + 1]
    sizes[-1] -= int(sizes.sum() - n)
    centres = rng.integers(0, 256, size=(len(sizes), 32), dtype=np.uint8)
    owner = np.repeat(np.arange(len(sizes)), sizes)
    out = np.empty((n, 32), dtype=np.uint8)
    chunk = 1 << 20
    for start in range(0, n, chunk):
        o = owner[start : start + chunk]
        k = rng.integers(1, 25, size=len(o))
        out[start : start + chunk] = _flip_rows(centres[o], k, rng)
    # Unique rows (an index keeps one entry per hash); keep the generated order.
    _, first = np.unique(out.view(np.dtype((np.void, 32))).ravel(), return_index=True)
    return out[np.sort(first)]


def make_queries(corpus: np.ndarray, count: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 256, size=(count, 32), dtype=np.uint8)
    near = np.arange(0, count, 2)
    picks = rng.integers(0, len(corpus), size=len(near))
    for j, (qi, src) in enumerate(zip(near, picks, strict=True)):
        row = corpus[src].copy()
        d = j % 33
        bits = rng.permutation(256)[:d]
        np.bitwise_xor.at(row, bits // 8, (1 << (bits % 8)).astype(np.uint8))
        q[qi] = row
    return q


def brute_force(corpus: np.ndarray, query: np.ndarray, threshold: int) -> np.ndarray:
    """Indexes of every corpus row within `threshold` of `query` (the oracle)."""
    dist = _POPCOUNT[np.bitwise_xor(corpus, query)].sum(axis=1, dtype=np.uint16)
    return np.flatnonzero(dist <= threshold)


def exact_digests(n: int, length: int, seed: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, length), dtype=np.uint8)

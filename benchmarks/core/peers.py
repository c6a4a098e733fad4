"""Adapters giving hashcore and its peers one interface: build, query one, query a batch.

Every adapter answers "which corpus rows are within `threshold` of each query" so recall
and precision are checked the same way for all of them. Peers are optional: FAISS
(``faiss-cpu``) and threatexchange's ``PDQIndex`` are used when importable.
"""

from __future__ import annotations

import contextlib
import importlib.util
from typing import Any

import numpy as np

from hashmatch.server import _hashcore

PDQ = 4
UNKNOWN = 255


def rss_bytes() -> int:
    """Resident bytes after returning freed heap to the OS (approximate memory probe)."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class Hashcore:
    name = "hashcore"

    def __init__(self, corpus: np.ndarray, threshold: int) -> None:
        n = len(corpus)
        self.index = _hashcore.Index()
        self.index.configure_list(1, threshold, 0)
        slots = corpus.tobytes()
        ids = np.arange(n, dtype="<u8").tobytes()
        self.index.apply(1, bytes([PDQ]) * n, slots, ids, b"", b"")
        self.index.compact()
        self.memory = self.index.memory_bytes()

    def query_one(self, q: np.ndarray) -> list[int]:
        got = self.index.match_batch(b"\x04", q.tobytes(), b"\xff", b"\xff")
        return [eid for _, _, eid in got]

    def query_batch(self, qs: np.ndarray) -> list[list[int]]:
        n = len(qs)
        got = self.index.match_batch(bytes([PDQ]) * n, qs.tobytes(), b"\xff" * n, b"\xff" * n)
        out: list[list[int]] = [[] for _ in range(n)]
        for qi, _, eid in got:
            out[qi].append(eid)
        return out

    def query_groups(self, qs: np.ndarray, size: int) -> list[tuple[int, int, int]]:
        g = len(qs) // size
        return self.index.match_pdq_groups(
            qs[: g * size].tobytes(), bytes([size]) * g, b"\xff" * g, b"\xff" * g
        )

    @staticmethod
    def threads(n: int) -> None:
        _hashcore.set_max_threads(n)


def _faiss() -> Any:
    import faiss

    return faiss


class FaissMultiHash:
    name = "faiss-multihash-16x16"

    def __init__(self, corpus: np.ndarray, threshold: int) -> None:
        faiss = _faiss()
        self.t = threshold
        self.index = faiss.IndexBinaryMultiHash(256, 16, 16)
        self.index.nflip = threshold // 16
        before = rss_bytes()
        self.index.add(corpus)
        self.memory = rss_bytes() - before

    def query_batch(self, qs: np.ndarray) -> list[list[int]]:
        lims, _, ids = self.index.range_search(qs, self.t + 1)
        return [ids[lims[i] : lims[i + 1]].tolist() for i in range(len(qs))]

    def query_one(self, q: np.ndarray) -> list[int]:
        return self.query_batch(q[None, :])[0]

    @staticmethod
    def threads(n: int) -> None:
        _faiss().omp_set_num_threads(n)


class FaissFlat(FaissMultiHash):
    name = "faiss-flat"

    def __init__(self, corpus: np.ndarray, threshold: int) -> None:
        faiss = _faiss()
        self.t = threshold
        self.index = faiss.IndexBinaryFlat(256)
        self.index.add(corpus)
        self.memory = 32 * len(corpus)  # the codes, by construction


class ThreatExchange:
    """threatexchange's ``PDQIndex`` (FAISS multi-hash behind hex strings): what HMA runs."""

    name = "threatexchange-PDQIndex"

    def __init__(self, corpus: np.ndarray, threshold: int) -> None:
        from threatexchange.signal_type.pdq.pdq_index import PDQIndex

        assert threshold == PDQIndex.get_match_threshold()
        before = rss_bytes()
        self.index = PDQIndex(entries=((row.tobytes().hex(), i) for i, row in enumerate(corpus)))
        self.memory = rss_bytes() - before

    def query_one(self, q: np.ndarray) -> list[int]:
        return [m.metadata for m in self.index.query(q.tobytes().hex())]

    def query_batch(self, qs: np.ndarray) -> list[list[int]]:
        return [self.query_one(q) for q in qs]

    @staticmethod
    def threads(n: int) -> None:
        _faiss().omp_set_num_threads(n)


def available(peers: bool) -> list[type]:
    out: list[type] = [Hashcore]
    if peers and importlib.util.find_spec("faiss") is not None:
        out += [FaissMultiHash, FaissFlat]
    if peers and importlib.util.find_spec("threatexchange") is not None:
        out.append(ThreatExchange)
    return out

"""Deterministic synthetic lists, query mixes and the PDQ boundary corpus.

Everything is derived from one seed, so two runs with the same seed and size load the same
list and send the same queries. The hashes are random bytes (PDQ values random 256-bit
words, about 128 bits set, like real median-thresholded PDQ hashes); nothing here is real
list content.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from hashmatch.client.algorithms import DIGEST_LENGTHS, MD5, NAMES, PDQ, SHA1, SHA256
from hashmatch.v1 import hashes_pb2, lists_pb2, match_pb2

# Share of each algorithm in the synthetic list (sums to 1).
LIST_MIX: dict[int, float] = {MD5: 0.30, SHA1: 0.10, SHA256: 0.30, PDQ: 0.30}
# Query algorithms, in turn: one hash per query item.
QUERY_ALGORITHMS = (MD5, SHA1, SHA256, PDQ)
PDQ_QUALITY = 100
# PDQ hits in the query mix are listed hashes with this many bits flipped (a re-encode).
QUERY_PDQ_FLIPS = 6
# Distances in the boundary corpus, for a list at the default threshold of 31.
BOUNDARY_DISTANCES = (0, 1, 16, 30, 31, 32, 33, 48, 64)
BOUNDARY_BASES = 4
UPLOAD_BATCH = 10_000


@dataclass(frozen=True)
class Entry:
    algorithm: int
    value: bytes
    reference_id: str


@dataclass(frozen=True)
class Case:
    """One boundary-corpus query and the verdict it must get."""

    name: str
    algorithm: int
    value: bytes
    expect_match: bool


@dataclass
class SyntheticList:
    """A synthetic list of `size` entries plus the special entries the probes need.

    `bulk` is generated lazily in upload batches (see `batches`); `special` holds the
    boundary bases, the exact-hit entries and the entries reserved for retraction probes,
    all of which are part of the list and counted in `size`.
    """

    size: int
    seed: int
    special: list[Entry] = field(default_factory=list)
    retractable: list[Entry] = field(default_factory=list)
    cases: list[Case] = field(default_factory=list)
    sample: list[Entry] = field(default_factory=list)

    @property
    def bulk_size(self) -> int:
        return self.size - len(self.special) - len(self.retractable)

    def counts(self) -> dict[str, int]:
        """Entries per algorithm name (what GetList should report after the load)."""
        out = {NAMES[a]: 0 for a in QUERY_ALGORITHMS}
        for start in range(0, self.bulk_size, UPLOAD_BATCH):
            n = min(UPLOAD_BATCH, self.bulk_size - start)
            for alg in _algorithms(self.seed, start, n):
                out[NAMES[alg]] += 1
        for e in (*self.special, *self.retractable):
            out[NAMES[e.algorithm]] += 1
        return out

    def entries(self) -> Iterator[Entry]:
        """Every entry, bulk first, in upload order."""
        for start in range(0, self.bulk_size, UPLOAD_BATCH):
            yield from _bulk_chunk(self.seed, start, min(UPLOAD_BATCH, self.bulk_size - start))
        yield from self.special
        yield from self.retractable

    def batches(
        self, list_name: str, batch_size: int = UPLOAD_BATCH, prefix: str = "signoff"
    ) -> Iterator[lists_pb2.ApplyChangesRequest]:
        """ApplyChanges messages of at most batch_size upserts, each its own atomic batch."""
        request = lists_pb2.ApplyChangesRequest(list=list_name)
        number = 0
        for e in self.entries():
            h = request.upserts.add()
            h.hash.algorithm = e.algorithm  # type: ignore[assignment]
            h.hash.value = e.value
            if e.algorithm == PDQ:
                h.hash.quality = PDQ_QUALITY
            h.reference_id = e.reference_id
            if len(request.upserts) >= batch_size:
                number += 1
                request.batch_id = f"{prefix}-{self.seed}-{number:06d}"
                yield request
                request = lists_pb2.ApplyChangesRequest(list=list_name)
        if request.upserts:
            number += 1
            request.batch_id = f"{prefix}-{self.seed}-{number:06d}"
            yield request


def _algorithms(seed: int, start: int, n: int) -> list[int]:
    rng = random.Random(f"alg-{seed}-{start}")
    algs = list(LIST_MIX)
    return rng.choices(algs, weights=[LIST_MIX[a] for a in algs], k=n)


def _bulk_chunk(seed: int, start: int, n: int) -> list[Entry]:
    rng = random.Random(f"bulk-{seed}-{start}")
    out = []
    for i, alg in enumerate(_algorithms(seed, start, n)):
        out.append(Entry(alg, rng.randbytes(DIGEST_LENGTHS[alg]), f"R{start + i:08d}"))
    return out


def flip_bits(value: bytes, count: int, rng: random.Random) -> bytes:
    n = int.from_bytes(value, "big")
    for bit in rng.sample(range(len(value) * 8), count):
        n ^= 1 << bit
    return n.to_bytes(len(value), "big")


def build(size: int, seed: int = 1, *, retractions: int = 20, sample: int = 2_000) -> SyntheticList:
    """The synthetic list of `size` entries (at least the special ones) and its corpora."""
    rng = random.Random(f"special-{seed}")
    special: list[Entry] = []
    cases: list[Case] = []
    for b in range(BOUNDARY_BASES):
        base = rng.randbytes(32)
        special.append(Entry(PDQ, base, f"BOUNDARY-PDQ-{b}"))
        for d in BOUNDARY_DISTANCES:
            cases.append(
                Case(f"pdq base {b} at distance {d}", PDQ, flip_bits(base, d, rng), d <= 31)
            )
    for alg in (MD5, SHA1, SHA256):
        for b in range(2):
            value = rng.randbytes(DIGEST_LENGTHS[alg])
            special.append(Entry(alg, value, f"BOUNDARY-{NAMES[alg].upper()}-{b}"))
            cases.append(Case(f"{NAMES[alg]} listed {b}", alg, value, True))
            cases.append(
                Case(f"{NAMES[alg]} one bit off {b}", alg, flip_bits(value, 1, rng), False)
            )
            cases.append(
                Case(f"{NAMES[alg]} unlisted {b}", alg, rng.randbytes(DIGEST_LENGTHS[alg]), False)
            )
    cases.append(Case("pdq unlisted", PDQ, rng.randbytes(32), False))
    # Exact hashes only: a listed PDQ hash that stops matching for the tenant that just
    # matched it is what the server's probe detector flags as a walk of the match boundary.
    retract_algs = (MD5, SHA1, SHA256)
    retractable = []
    for i in range(retractions):
        alg = retract_algs[i % len(retract_algs)]
        retractable.append(Entry(alg, rng.randbytes(DIGEST_LENGTHS[alg]), f"RETRACT-{i:04d}"))
    if size < len(special) + len(retractable):
        raise ValueError(
            f"the list needs at least {len(special) + len(retractable)} entries "
            "(boundary corpus and retraction probes)"
        )
    out = SyntheticList(size, seed, special, retractable, cases)
    # A sample of bulk entries for the query mix's hits (from the first chunks: cheap).
    picked = []
    for start in range(0, out.bulk_size, UPLOAD_BATCH):
        picked.extend(_bulk_chunk(seed, start, min(UPLOAD_BATCH, out.bulk_size - start)))
        if len(picked) >= sample:
            break
    out.sample = picked[:sample] or list(special)
    return out


def query_hashes(
    seed: int, count: int, listed: list[Entry], hit_every: int = 100
) -> list[hashes_pb2.Hash]:
    """`count` query hashes, algorithms in turn; one in `hit_every` is a listed hash (PDQ:
    a near-duplicate of one), the rest random (misses)."""
    rng = random.Random(f"queries-{seed}")
    by_alg: dict[int, list[Entry]] = {a: [] for a in QUERY_ALGORITHMS}
    for e in listed:
        by_alg[e.algorithm].append(e)
    out = []
    for i in range(count):
        alg = QUERY_ALGORITHMS[i % len(QUERY_ALGORITHMS)]
        pool = by_alg[alg]
        if pool and hit_every and i % hit_every == hit_every - 1:
            value = pool[rng.randrange(len(pool))].value
            if alg == PDQ:
                value = flip_bits(value, QUERY_PDQ_FLIPS, rng)
        else:
            value = rng.randbytes(DIGEST_LENGTHS[alg])
        h = hashes_pb2.Hash(algorithm=alg, value=value)  # type: ignore[arg-type]
        if alg == PDQ:
            h.quality = PDQ_QUALITY
        out.append(h)
    return out


def match_request(item_id: str, h: hashes_pb2.Hash) -> match_pb2.MatchRequest:
    return match_pb2.MatchRequest(item_id=item_id, hashes=[h])


def batch_request(
    hashes: list[hashes_pb2.Hash], start: int, size: int
) -> match_pb2.MatchBatchRequest:
    n = len(hashes)
    return match_pb2.MatchBatchRequest(
        items=[match_request(str(k), hashes[(start + k) % n]) for k in range(size)]
    )

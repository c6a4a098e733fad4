"""Small builders shared by the integration tests."""

from __future__ import annotations

import random

from hashmatch.client import MD5, PDQ, SHA1, SHA256, Change, make_hash
from hashmatch.v1 import hashes_pb2

LENGTHS = {MD5: 16, SHA1: 20, SHA256: 32, PDQ: 32}


def random_digest(rng: random.Random, alg: int) -> bytes:
    return rng.randbytes(LENGTHS[alg])


def random_pdq(rng: random.Random) -> bytes:
    """A PDQ-like hash: exactly 128 of 256 bits set, as median thresholding gives."""
    bits = [1] * 128 + [0] * 128
    rng.shuffle(bits)
    return int("".join(map(str, bits)), 2).to_bytes(32, "big")


def flip_bits(value: bytes, count: int, rng: random.Random) -> bytes:
    n = int.from_bytes(value, "big")
    for bit in rng.sample(range(256), count):
        n ^= 1 << bit
    return n.to_bytes(32, "big")


def upsert(alg: int, value: bytes, ref: str, quality: int | None = None) -> Change:
    return Change(make_hash(alg, value, quality), ref)


def retire(alg: int, value: bytes) -> Change:
    return Change(make_hash(alg, value), None)


def hashes(*pairs: tuple[int, bytes]) -> list[hashes_pb2.Hash]:
    return [make_hash(alg, value) for alg, value in pairs]

"""Small builders shared by the integration tests."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from hashmatch.client import MD5, PDQ, SHA1, SHA256, Change, make_hash
from hashmatch.server.matching.probes import ProbeDetector
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


HASHMATCH = str(Path(sys.executable).parent / "hashmatch")


def launch(data_dir: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """Starts `hashmatch serve` on an OS-chosen loopback port; returns it and its address."""
    if not Path(HASHMATCH).exists():
        pytest.skip("the hashmatch command is not installed in this environment")
    proc = subprocess.Popen(
        [HASHMATCH, "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("hashmatch serving on "), line
    return proc, line.split()[-1]


def eventually(check: Callable[[], bool], what: str, limit: float = 20.0) -> None:
    """Polls until `check` holds; the bound only stops a broken build from hanging."""
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.02)


def boundary_walk(match: object, listed: bytes, rng: random.Random) -> tuple[int, int, bool]:
    """Plays an attacker holding a copy 20 bits from a listed PDQ hash: walk out to the
    threshold, then flip one bit at a time and read each verdict as a bit of the listed
    hash. Returns (queries sent, bits learned, throttled)."""
    point = flip_bits(listed, 20, rng)
    queries = learned = 0

    def ask(value: bytes) -> bool | None:
        nonlocal queries
        queries += 1
        try:
            return match(value)  # type: ignore[operator, no-any-return]
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                return None
            raise

    bits = list(range(256))
    rng.shuffle(bits)
    last_match = point
    for bit in bits:  # walk outwards until the verdict flips
        candidate = (int.from_bytes(last_match, "big") ^ (1 << bit)).to_bytes(32, "big")
        verdict = ask(candidate)
        if verdict is None:
            return queries, learned, True
        if not verdict:
            break
        last_match = candidate
    for bit in range(256):  # each flip across the boundary reveals one bit
        candidate = (int.from_bytes(last_match, "big") ^ (1 << bit)).to_bytes(32, "big")
        verdict = ask(candidate)
        if verdict is None:
            return queries, learned, True
        learned += 1
    return queries, learned, False


def benign_mix(detector: ProbeDetector, queries: int, rng: random.Random) -> int:
    """Feeds ordinary PDQ traffic to a probe detector: 80% unrelated uploads, 15% bursts of
    re-uploaded near-duplicates of listed images (they match), 5% dihedral sets whose
    upright image matches and rotations (110+ bits away) do not. Returns queries sent."""
    listed = [random_pdq(rng) for _ in range(50)]
    sent = 0
    while sent < queries:
        kind = rng.random()
        if kind < 0.8:
            detector.observe("p", [], [random_pdq(rng)])
            sent += 1
        elif kind < 0.95:
            base = rng.choice(listed)
            burst = [flip_bits(base, rng.randint(0, 20), rng) for _ in range(rng.randint(2, 30))]
            detector.observe("p", burst, [])
            sent += len(burst)
        else:
            base = flip_bits(rng.choice(listed), rng.randint(0, 12), rng)
            rotations = [flip_bits(base, rng.randint(110, 128), rng) for _ in range(7)]
            detector.observe("p", [base], rotations)
            sent += 8
    return sent

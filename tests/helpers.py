"""Small builders shared by the integration tests."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

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

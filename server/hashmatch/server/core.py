"""Typed access to the compiled matching core (hashcore, in Rust).

The compiled module is private; the server imports the index through here, and packs
hashes the way the core expects them: one 32-byte slot per hash, digest left-aligned.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from hashmatch.server._hashcore import Index

SLOT = 32
UNKNOWN_QUALITY = 255
LIST_THRESHOLD = 255

__all__ = ["LIST_THRESHOLD", "SLOT", "UNKNOWN_QUALITY", "Index", "pack_hashes", "pack_ids"]


def pack_hashes(items: Iterable[tuple[int, bytes]]) -> tuple[bytes, bytes]:
    """Packs (algorithm, digest) pairs into the core's (algs, slots) byte strings."""
    algs = bytearray()
    slots = bytearray()
    for alg, value in items:
        algs.append(alg)
        slots += value
        slots += bytes(SLOT - len(value))
    return bytes(algs), bytes(slots)


def pack_ids(ids: Sequence[int]) -> bytes:
    return b"".join(i.to_bytes(8, "little") for i in ids)

"""Typed access to the compiled matching core (hashcore, in Rust).

The compiled module is private; the server imports the index and the batch reader
through here, and packs query hashes the way the core expects them: one 32-byte slot per
hash, digest left-aligned.
"""

from __future__ import annotations

from collections.abc import Iterable

from hashmatch.server._hashcore import (
    Changes,
    Index,
    ListSnapshot,
    check_list_file,
    encode_entries,
    encode_hashes,
    entry_pairs,
    entry_term,
    is_degenerate_pdq,
    parse_changes,
    read_segment_info,
    request_list,
    stored_terms_sum,
)

SLOT = 32
UNKNOWN_QUALITY = 255
LIST_THRESHOLD = 255

__all__ = [
    "LIST_THRESHOLD",
    "SLOT",
    "UNKNOWN_QUALITY",
    "Changes",
    "Index",
    "ListSnapshot",
    "check_list_file",
    "encode_entries",
    "encode_hashes",
    "entry_pairs",
    "entry_term",
    "is_degenerate_pdq",
    "pack_hashes",
    "parse_changes",
    "read_segment_info",
    "request_list",
    "stored_terms_sum",
]


def pack_hashes(items: Iterable[tuple[int, bytes]]) -> tuple[bytes, bytes]:
    """Packs (algorithm, digest) pairs into the core's (algs, slots) byte strings."""
    algs = bytearray()
    slots = bytearray()
    for alg, value in items:
        algs.append(alg)
        slots += value
        slots += bytes(SLOT - len(value))
    return bytes(algs), bytes(slots)

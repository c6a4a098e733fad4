"""Every key layout of the store, defined once.

Integers are big-endian so that keys sort numerically. The core builds `entries` and
`refs` keys for bulk loads itself (`entry_pairs`, `Changes.ref_pairs`); a test pins
its layout to the functions here.
"""

from __future__ import annotations

import struct

U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")
LIST_ENTRY = struct.Struct(">IQ")
LIST_REF = struct.Struct(">IH")


def list_prefix(list_id: int) -> bytes:
    """The prefix of every per-list key (entries, refs, changes, batches, stats, ...)."""
    return U32.pack(list_id)


def entry_key(list_id: int, algorithm: int, digest: bytes) -> bytes:
    """`entries`: list id | algorithm | digest -> entry id (u64 little-endian)."""
    return U32.pack(list_id) + bytes((algorithm,)) + digest


def ref_key(list_id: int, entry_id: int) -> bytes:
    """`refs`: list id | entry id -> reference ID. Big-endian ids: new entries' references
    append at the end of the tree."""
    return LIST_ENTRY.pack(list_id, entry_id)


def ref_key_raw(list_id: int, raw_entry_id: bytes) -> bytes:
    """The refs key of an entry id as stored in `entries` (u64 little-endian)."""
    return LIST_ENTRY.pack(list_id, int.from_bytes(raw_entry_id, "little"))


def change_key(list_id: int, version: int) -> bytes:
    """`changes`: list id | version -> ChangeRecord."""
    return LIST_ENTRY.pack(list_id, version)


def batch_key(list_id: int, batch_id: str) -> bytes:
    """`batches`: list id | batch ID -> version | request fingerprint."""
    return U32.pack(list_id) + batch_id.encode("utf-8")


def reference_key(list_id: int, reference_id: str) -> bytes:
    """`stats`, `quarantine`, `feedback`: list id | reference ID."""
    return U32.pack(list_id) + reference_id.encode("utf-8")


def matched_key(list_id: int, reference_id: str, tenant: str) -> bytes:
    """The `matched` key: the reference's length first, so no reference ID and tenant name
    can run into another pair's."""
    ref = reference_id.encode("utf-8")
    return LIST_REF.pack(list_id, len(ref)) + ref + tenant.encode("utf-8")


def allow_prefix(tenant: str) -> bytes:
    """`allow`: tenant name | 0 | algorithm | hash -> b""."""
    return tenant.encode() + b"\0"

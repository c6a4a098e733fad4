"""Committed batches as the change log stores them: columnar, in the core's packed form.

Every serving process follows the log to keep its in-memory indexes current, and
WatchChanges replays it to replicas. A record holds the batch as it was applied, with the
entry id each upsert got, laid out so the indexes take its buffers without a per-entry
step:

    header (committed_at, n_upserts, n_retirements, n_references, digest, len(batch_id),
            kind) | batch_id
    upsert algorithms (n) | upsert slots (32 n) | entry ids (u64 LE, n)
    reference ends (u32 LE, n_references) | references (UTF-8, concatenated)
    retirement algorithms (m) | retirement slots (32 m)

A quarantine or release event (kind QUARANTINE / RELEASE) carries no entries; its reference
columns name the references it quarantines or releases. An EXPOSE event (the owner changed
which label keys verdicts show) names the keys exposed from its version on.

A reference column holds each upsert's stored reference: the reference ID, then its labels
(a zero byte, key, "=" and value each, in key order; see hashmatch.client.labels).
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate

from hashmatch.client.algorithms import DIGEST_LENGTHS
from hashmatch.server.core import SLOT

if sys.byteorder != "little":  # entry ids travel as native arrays into a LE-only core
    raise ImportError("hashmatch needs a little-endian machine")

_HEADER = struct.Struct("<dIII16sHB")
CHANGES, QUARANTINE, RELEASE, EXPOSE = 0, 1, 2, 3


@dataclass(frozen=True)
class ChangeRecord:
    list_id: int
    version: int
    batch_id: str
    committed_at: float
    digest: bytes
    upsert_algs: bytes
    upsert_slots: bytes
    upsert_ids: bytes
    ref_ends: bytes
    refs: bytes
    retire_algs: bytes
    retire_slots: bytes
    kind: int = CHANGES

    @classmethod
    def event(
        cls,
        list_id: int,
        version: int,
        kind: int,
        references: list[str],
        committed_at: float,
        digest: bytes,
    ) -> ChangeRecord:
        """A quarantine or release of references, or a change of the exposed label keys
        (`references` then names the keys): no entries change."""
        encoded = [r.encode("utf-8") for r in references]
        ends = array("I", accumulate(map(len, encoded))).tobytes()
        return cls(
            list_id,
            version,
            "",
            committed_at,
            digest,
            b"",
            b"",
            b"",
            ends,
            b"".join(encoded),
            b"",
            b"",
            kind,
        )

    def references(self) -> list[str]:
        """The stored references of the upserts (reference IDs with their labels), the
        references a quarantine or release event concerns, or an EXPOSE event's keys."""
        ends = array("I")
        ends.frombytes(self.ref_ends)
        out, start = [], 0
        for end in ends:
            out.append(self.refs[start:end].decode("utf-8"))
            start = end
        return out

    def encode(self) -> bytes:
        batch_id = self.batch_id.encode("utf-8")
        header = _HEADER.pack(
            self.committed_at,
            len(self.upsert_algs),
            len(self.retire_algs),
            len(self.ref_ends) // 4,
            self.digest,
            len(batch_id),
            self.kind,
        )
        return b"".join(
            (
                header,
                batch_id,
                self.upsert_algs,
                self.upsert_slots,
                self.upsert_ids,
                self.ref_ends,
                self.refs,
                self.retire_algs,
                self.retire_slots,
            )
        )

    @classmethod
    def decode(cls, list_id: int, version: int, raw: bytes) -> ChangeRecord:
        committed_at, n, m, n_refs, digest, id_len, kind = _HEADER.unpack_from(raw, 0)
        pos = _HEADER.size
        parts: list[bytes] = []
        ends = array("I")
        for size in (id_len, n, SLOT * n, 8 * n, 4 * n_refs):
            parts.append(raw[pos : pos + size])
            pos += size
        ends.frombytes(parts[4])
        refs_len = ends[-1] if len(ends) else 0
        refs = raw[pos : pos + refs_len]
        pos += refs_len
        retire_algs = raw[pos : pos + m]
        retire_slots = raw[pos + m : pos + m + SLOT * m]
        return cls(
            list_id,
            version,
            parts[0].decode("utf-8"),
            committed_at,
            digest,
            parts[1],
            parts[2],
            parts[3],
            parts[4],
            refs,
            retire_algs,
            retire_slots,
            kind,
        )

    def upserts(self) -> Iterator[tuple[int, bytes, int, str]]:
        """(algorithm, digest, entry_id, reference_id) of each upsert."""
        ids = array("Q")
        ids.frombytes(self.upsert_ids)
        ends = array("I")
        ends.frombytes(self.ref_ends)
        start = 0
        for i, alg in enumerate(self.upsert_algs):
            value = self.upsert_slots[SLOT * i : SLOT * i + DIGEST_LENGTHS[alg]]
            yield alg, value, ids[i], self.refs[start : ends[i]].decode("utf-8")
            start = ends[i]

    def retirements(self) -> Iterator[tuple[int, bytes]]:
        for i, alg in enumerate(self.retire_algs):
            yield alg, self.retire_slots[SLOT * i : SLOT * i + DIGEST_LENGTHS[alg]]

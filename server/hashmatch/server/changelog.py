"""Committed batches as the change log stores them, in a compact binary form.

Every serving process follows the log to keep its in-memory indexes current, and
WatchChanges replays it to replicas. A record holds only effective changes: retirements of
hashes that were not listed are not recorded.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hashmatch.client.algorithms import DIGEST_LENGTHS

_HEADER = struct.Struct(">dII16sH")  # committed_at, n_upserts, n_retirements, digest, batch_id len
_UPSERT = struct.Struct(">BQH")  # algorithm, entry_id, reference length; hash follows algorithm
_RETIRE = struct.Struct(">BQ")  # algorithm, entry_id


@dataclass(frozen=True)
class Upsert:
    algorithm: int
    value: bytes
    entry_id: int
    reference_id: str


@dataclass(frozen=True)
class Retirement:
    algorithm: int
    value: bytes
    entry_id: int


@dataclass(frozen=True)
class ChangeRecord:
    list_id: int
    version: int
    batch_id: str
    committed_at: float
    digest: bytes
    upserts: tuple[Upsert, ...]
    retirements: tuple[Retirement, ...]

    def encode(self) -> bytes:
        batch_id = self.batch_id.encode("utf-8")
        parts = [
            _HEADER.pack(
                self.committed_at,
                len(self.upserts),
                len(self.retirements),
                self.digest,
                len(batch_id),
            ),
            batch_id,
        ]
        for u in self.upserts:
            ref = u.reference_id.encode("utf-8")
            parts += [_UPSERT.pack(u.algorithm, u.entry_id, len(ref)), u.value, ref]
        for r in self.retirements:
            parts += [_RETIRE.pack(r.algorithm, r.entry_id), r.value]
        return b"".join(parts)

    @classmethod
    def decode(cls, list_id: int, version: int, raw: bytes) -> ChangeRecord:
        view = memoryview(raw)
        committed_at, n_up, n_ret, digest, id_len = _HEADER.unpack_from(view, 0)
        pos = _HEADER.size
        batch_id = bytes(view[pos : pos + id_len]).decode("utf-8")
        pos += id_len
        upserts = []
        for _ in range(n_up):
            alg, entry_id, ref_len = _UPSERT.unpack_from(view, pos)
            pos += _UPSERT.size
            size = DIGEST_LENGTHS[alg]
            value = bytes(view[pos : pos + size])
            pos += size
            ref = bytes(view[pos : pos + ref_len]).decode("utf-8")
            pos += ref_len
            upserts.append(Upsert(alg, value, entry_id, ref))
        retirements = []
        for _ in range(n_ret):
            alg, entry_id = _RETIRE.unpack_from(view, pos)
            pos += _RETIRE.size
            size = DIGEST_LENGTHS[alg]
            retirements.append(Retirement(alg, bytes(view[pos : pos + size]), entry_id))
            pos += size
        return cls(
            list_id, version, batch_id, committed_at, digest, tuple(upserts), tuple(retirements)
        )

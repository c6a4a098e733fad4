"""Probe-detection state shared by every serving process of one host.

Per tenant: a header (the times of recent near-misses, until when its PDQ queries are
paused) and a first-in-first-out queue of the PDQ hashes that matched for it recently.
Every worker reads and writes the same records, so a tenant has one budget per host however
many processes serve it.

It lives in an LMDB environment of its own, beside the store, written without fsync: it is
an hour's memory of one host, rebuilt by traffic after a power loss, and must not slow the
store's durable commits. It holds no list content — only hashes a tenant itself sent that
matched, and timestamps.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lmdb

MAP_SIZE = 1 << 30
_HEADER = struct.Struct("<QQdI")  # first seq, next seq, throttled until, near-misses
_TIME = struct.Struct("<d")
_SEQ = struct.Struct(">Q")
_GENERATION = b"\x00generation"


@dataclass
class ProbeRecord:
    """One tenant's state inside a write transaction (see `ProbeLedger.update`)."""

    first_seq: int = 0
    next_seq: int = 0
    throttled_until: float = 0.0
    near_misses: list[float] = field(default_factory=list)
    _txn: Any = None
    _tenant: bytes = b""
    _db: Any = None

    def size(self) -> int:
        return self.next_seq - self.first_seq

    def remember(self, at: float, value: bytes) -> None:
        self._txn.put(self._key(self.next_seq), _TIME.pack(at) + value, db=self._db)
        self.next_seq += 1

    def oldest(self) -> float | None:
        """When the oldest remembered hash matched (None when there is none)."""
        if not self.size():
            return None
        raw = self._txn.get(self._key(self.first_seq), db=self._db)
        return float(_TIME.unpack_from(raw)[0]) if raw else 0.0

    def drop_oldest(self) -> None:
        self._txn.delete(self._key(self.first_seq), db=self._db)
        self.first_seq += 1

    def _key(self, seq: int) -> bytes:
        return self._tenant + b"\x00" + _SEQ.pack(seq)


class ProbeLedger:
    def __init__(self, data_dir: Path) -> None:
        path = Path(data_dir) / "probes"
        path.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(
            str(path), map_size=MAP_SIZE, max_dbs=2, sync=False, metasync=False, max_readers=1024
        )
        self._headers = self.env.open_db(b"headers")
        self._matched = self.env.open_db(b"matched")

    def close(self) -> None:
        self.env.close()

    def generation(self) -> int:
        """Changes whenever any tenant's state changes (one read per call)."""
        with self.env.begin() as txn:
            raw = txn.get(_GENERATION, db=self._headers)
        return _SEQ.unpack(raw)[0] if raw else 0

    def header(self, tenant: str) -> ProbeRecord:
        with self.env.begin() as txn:
            return _header(txn.get(tenant.encode(), db=self._headers))

    def remembered(self, tenant: str, after: int) -> list[tuple[int, float, bytes]]:
        """(seq, matched at, hash) of the tenant's remembered hashes with seq >= after."""
        prefix = tenant.encode() + b"\x00"
        out: list[tuple[int, float, bytes]] = []
        with self.env.begin() as txn:
            cursor = txn.cursor(db=self._matched)
            if not cursor.set_range(prefix + _SEQ.pack(after)):
                return out
            for key, value in cursor:
                if not key.startswith(prefix):
                    break
                (seq,) = _SEQ.unpack_from(key, len(prefix))
                out.append((seq, _TIME.unpack_from(value)[0], bytes(value[_TIME.size :])))
        return out

    @contextmanager
    def update(self, tenant: str) -> Iterator[ProbeRecord]:
        """One tenant's record in a write transaction, serialized across processes;
        committed when the block ends without an exception."""
        key = tenant.encode()
        with self.env.begin(write=True) as txn:
            record = _header(txn.get(key, db=self._headers))
            record._txn, record._tenant, record._db = txn, key, self._matched
            yield record
            txn.put(
                key,
                _HEADER.pack(
                    record.first_seq,
                    record.next_seq,
                    record.throttled_until,
                    len(record.near_misses),
                )
                + b"".join(_TIME.pack(t) for t in record.near_misses),
                db=self._headers,
            )
            raw = txn.get(_GENERATION, db=self._headers)
            txn.put(
                _GENERATION, _SEQ.pack((_SEQ.unpack(raw)[0] if raw else 0) + 1), db=self._headers
            )


def _header(raw: bytes | None) -> ProbeRecord:
    if raw is None:
        return ProbeRecord()
    first, following, throttled, n = _HEADER.unpack_from(raw)
    times = [_TIME.unpack_from(raw, _HEADER.size + 8 * i)[0] for i in range(n)]
    return ProbeRecord(first, following, throttled, times)

"""The LMDB environment and its transactions: the one place that opens it."""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol, cast

import lmdb

from hashmatch.server.store.errors import StoreFull
from hashmatch.server.store.keys import U64

# Sized far beyond any expected data once, up front: LMDB only reserves address space, and
# a map that never has to grow cannot race with other processes resizing it.
DEFAULT_MAP_SIZE = 256 << 30
# Free space below which a failed write is taken for a full disk.
LOW_DISK_BYTES = 64 << 20
# How far back past `since` an audit read keeps scanning: record times come from the wall
# clock, which may step back a little between commits.
AUDIT_CLOCK_SLACK = 300.0


def audit_nanos(record: dict[str, Any]) -> int:
    """An audit record's time in nanoseconds since the epoch (as its Timestamp holds it)."""
    return int(float(record["at"]) * 1e9)


class Cursor(Protocol):
    """An LMDB cursor as this module uses it: transactions are opened with
    buffers=False, so keys and values are always bytes (py-lmdb's own types also allow
    memoryviews)."""

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]: ...
    def iterprev(self) -> Iterator[tuple[bytes, bytes]]: ...
    def iternext(self, keys: bool = ..., values: bool = ...) -> Iterator[bytes]: ...
    def last(self) -> bool: ...
    def next(self) -> bool: ...
    def key(self) -> bytes: ...
    def delete(self) -> bool: ...
    def close(self) -> None: ...
    def set_range(self, key: bytes) -> bool: ...
    def getmulti(self, keys: Iterable[bytes]) -> list[tuple[bytes, bytes]]: ...
    def putmulti(
        self, items: Iterable[tuple[bytes, bytes]], overwrite: bool = ..., append: bool = ...
    ) -> tuple[int, int]: ...


class Txn(Protocol):
    """An LMDB transaction as this module uses it (see Cursor)."""

    def get(self, key: bytes, default: None = None, db: Any = ...) -> bytes | None: ...
    def put(self, key: bytes, value: bytes, db: Any = ...) -> bool: ...
    def pop(self, key: bytes, db: Any = ...) -> bytes | None: ...
    def delete(self, key: bytes, value: bytes = ..., db: Any = ...) -> bool: ...
    def cursor(self, db: Any = ...) -> Cursor: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...
    def __enter__(self) -> Txn: ...
    def __exit__(self, *exc: object) -> None: ...


class StoreBase:
    """One LMDB environment. Open it after any fork; close it before the process exits."""

    def __init__(self, data_dir: Path, *, map_size: int = DEFAULT_MAP_SIZE) -> None:
        path = Path(data_dir) / "store"
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.env = lmdb.open(
            str(path),
            map_size=map_size,
            max_dbs=32,
            max_readers=1024,
            sync=True,
            metasync=True,
            # The OS reads ahead: the large reads walk keys in order (a bulk load's group
            # inserted in key order rewrites the list's B-tree page by page; a rebuild
            # reads the entries in order), and at 100 M entries the store no longer fits
            # in memory beside the index. Without it, loading 100 M through UploadChanges
            # took 897 s instead of 404 s (benchmarks/load/bulk_load.py). A lookup at
            # random then reads a little more than its page.
            readahead=True,
        )
        with self._write() as txn:
            self._dbs = {
                name: self.env.open_db(name.encode(), txn=cast(Any, txn))
                for name in (
                    "meta",
                    "tenants",
                    "tokens",
                    "lists",
                    "entries",
                    "refs",
                    "changes",
                    "batches",
                    "audit",
                    "stats",
                    "quarantine",
                    "feedback",
                    "platforms",
                    "allow",
                    "matched",
                    "grants",
                    "uploads",
                    "staged",
                    "staged_keys",
                )
            }
        self.reclaim_readers()

    def reclaim_readers(self) -> int:
        """Frees reader slots of processes that died: they would pin old pages forever and
        make the file grow. Returns how many were freed."""
        return int(self.env.reader_check())

    def close(self) -> None:
        self.env.close()

    def _db(self, name: str) -> Any:
        return self._dbs[name]

    def _write(self) -> WriteTxn:
        return WriteTxn(self.env, self.path)

    def read(self) -> Txn:
        return cast(Txn, self.env.begin(buffers=False))

    def _bump_seq(self, txn: Txn) -> int:
        raw = txn.get(b"seq", db=self._db("meta"))
        seq = (U64.unpack(raw)[0] if raw else 0) + 1
        txn.put(b"seq", U64.pack(seq), db=self._db("meta"))
        return seq

    def seq(self) -> int:
        with self.read() as txn:
            raw = txn.get(b"seq", db=self._db("meta"))
        return U64.unpack(raw)[0] if raw else 0

    def _bump_allow(self, txn: Txn) -> None:
        raw = txn.get(b"allow_seq", db=self._db("meta"))
        n = (U64.unpack(raw)[0] if raw else 0) + 1
        txn.put(b"allow_seq", U64.pack(n), db=self._db("meta"))

    def _audit(self, txn: Txn, actor: str, action: str, **fields: Any) -> None:
        seq = self._bump_seq(txn)
        record = {"at": time.time(), "actor": actor, "action": action, **fields}
        txn.put(U64.pack(seq), json.dumps(record).encode(), db=self._db("audit"))

    def record_audit(self, actor: str, action: str, **fields: Any) -> None:
        """An audit event of its own (e.g. a suspected probe), never holding a hash."""
        with self._write() as txn:
            self._audit(txn, actor, action, **fields)

    def audit_log(
        self,
        limit: int = 100,
        *,
        list_name: str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        actions: Iterable[str] = (),
    ) -> list[dict[str, Any]]:
        """The newest `limit` audit records that pass every filter given, oldest first.

        list_name: only records whose `list` field is this name. since_ns/until_ns: only
        records at or after / at or before these times (nanoseconds since the epoch, as
        `audit_nanos` reads a record's time). actions: only these actions (all when empty).
        Scans from the newest record backwards, and stops a little (AUDIT_CLOCK_SLACK)
        past `since`: records are in commit order, their times from the wall clock."""
        wanted = frozenset(actions)
        # The record's `list` field as json.dumps writes it (list names need no escaping):
        # records of other lists are skipped without decoding them.
        needle = f'"list": {json.dumps(list_name)}'.encode() if list_name is not None else None
        floor = None if since_ns is None else since_ns - int(AUDIT_CLOCK_SLACK * 1e9)
        out: list[dict[str, Any]] = []
        if limit <= 0:
            return out
        with self.read() as txn:
            cur = txn.cursor(db=self._db("audit"))
            if cur.last():
                for _, raw in cur.iterprev():
                    if needle is not None and needle not in raw:
                        continue
                    record = json.loads(raw)
                    at = audit_nanos(record)
                    if floor is not None and at < floor:
                        break
                    if list_name is not None and record.get("list") != list_name:
                        continue
                    if wanted and record.get("action") not in wanted:
                        continue
                    if since_ns is not None and at < since_ns:
                        continue
                    if until_ns is not None and at > until_ns:
                        continue
                    out.append(record)
                    if len(out) >= limit:
                        break
        return out[::-1]


def prefixed(
    txn: Txn, db: Any, prefix: bytes, start: bytes | None = None
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of every key that starts with `prefix`, from `start` (or the prefix)."""
    cur = txn.cursor(db=db)
    if cur.set_range(start if start is not None else prefix):
        for key, value in cur:
            if not key.startswith(prefix):
                break
            yield key, value


class WriteTxn:
    """A write transaction that maps a full disk or map to StoreFull and aborts cleanly."""

    def __init__(self, env: lmdb.Environment, path: Path) -> None:
        self.env = env
        self.path = path
        self.txn: Txn | None = None

    def __enter__(self) -> Txn:
        self.txn = cast(Txn, self.env.begin(write=True))
        return self.txn

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        assert self.txn is not None
        if exc is not None:
            self.txn.abort()
            if isinstance(exc, Unchanged):
                return True
            if is_full(exc, self.path):
                raise StoreFull(
                    "the store is out of space; nothing of this write was kept"
                ) from exc
            return False
        try:
            self.txn.commit()
        except lmdb.Error as err:
            if is_full(err, self.path):
                raise StoreFull(
                    "the store is out of space; nothing of this write was kept"
                ) from err
            raise
        return False


class Unchanged(Exception):
    """Ends a write transaction that found nothing to change, without committing."""


def is_full(exc: BaseException, path: Path) -> bool:
    if isinstance(exc, lmdb.MapFullError):
        return True
    if not isinstance(exc, lmdb.Error | OSError):
        return False
    if getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in str(exc):
        return True
    # LMDB reports a write cut short by a full disk as a bare EIO; tell the two apart by
    # looking at the disk.
    if "Input/output error" in str(exc):
        fs = os.statvfs(path)
        return fs.f_bavail * fs.f_frsize < LOW_DISK_BYTES
    return False

"""Looking at a data folder before LMDB maps it, and checking a store's contents.

LMDB trusts its file: a `data.mdb` cut short is mapped anyway and the first read past its
end kills the process with SIGBUS; an empty one is taken for a new store and initialised
(every tenant and list silently gone); garbage surfaces as an exception deep in whatever
read it first. So `inspect` reads the two meta pages itself, with plain file reads, before
anything opens the environment:

    page 0 and page 1 of data.mdb are meta pages. Each starts with a 16-byte page header
    (u64 page number, u16 pad, u16 flags: P_META = 0x08), then the meta:
      +16 u32 magic 0xBEEFC0DE   +20 u32 format version (1)
      +40 u32 page size (the free DB's md_pad)
      +136 u64 last page used    +144 u64 transaction id
    LMDB uses the meta with the higher transaction id; every page up to its last page
    must be in the file.

A store created by hashmatch also holds `store/FORMAT`, written once the environment
exists: an empty or missing data.mdb next to it (or next to a lock.mdb) is a store that
was lost, not a folder to start afresh in.

`check_store` goes further on an open store (`hashmatch admin check`): every list's digest
recomputed from its entries, entry counts, and its change log walked version by version.
"""

from __future__ import annotations

import errno
import os
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import lmdb

from hashmatch.client.algorithms import DIGEST_LENGTHS
from hashmatch.client.digest import ListDigest
from hashmatch.server.core import SLOT, entry_term
from hashmatch.server.store.changelog import _HEADER as _RECORD_HEADER
from hashmatch.server.store.changelog import CHANGES, ChangeRecord
from hashmatch.server.store.keys import LIST_ENTRY, U32
from hashmatch.server.store.records import ALGORITHMS

if TYPE_CHECKING:
    from hashmatch.server.store import Store

FORMAT_FILE = "FORMAT"
FORMAT_TEXT = "hashmatch store, format 1 (LMDB)\n"
DATA_FILE = "data.mdb"
LOCK_FILE = "lock.mdb"

_MAGIC = 0xBEEFC0DE
_DATA_VERSION = 1
_P_META = 0x08
_P_BRANCH, _P_LEAF = 0x01, 0x02
_P_INVALID = (1 << 64) - 1
_HEADER = 16
_PAGE = struct.Struct("<QHH4x")  # page number, pad, flags, (lower, upper)
_META = struct.Struct("<II8x8x")  # magic, version, (address), (map size)
_DB = struct.Struct("<IHHQQQQQ")  # pad (page size in the free DB), flags, depth, ..., root
_TAIL = struct.Struct("<QQ")  # last page, transaction id
_META_END = _HEADER + _META.size + 2 * _DB.size + _TAIL.size

ATTEMPTS = 3
REMEDY = (
    "restore it from a backup (`hashmatch admin backup`), or move the folder aside to "
    "start an empty store; nothing was changed"
)


class StoreUnusable(Exception):
    """The data folder cannot be used as it is; the message names the file and what to do."""


class NoStore(StoreUnusable):
    """The folder holds no store (a mistyped --data-dir, say) and none was to be created."""


class StoreDamaged(StoreUnusable):
    """The store's files are damaged, emptied, or cannot be read."""


class State(Enum):
    ABSENT = "absent"  # nothing there yet: a new store may be created
    PRESENT = "present"  # a store whose meta pages are sound


def store_path(data_dir: Path) -> Path:
    return Path(data_dir) / "store"


def inspect(data_dir: Path) -> State:
    """Whether `data_dir` holds a store, without letting LMDB map anything.

    Raises StoreDamaged for a folder that cannot be a store or a store that cannot be
    served. A check that fails is repeated: a writer in another process may have been
    half-way through a commit (pages written, meta page being updated)."""
    for _ in range(ATTEMPTS - 1):
        try:
            return _inspect(Path(data_dir))
        except StoreDamaged:
            time.sleep(0.1)
    return _inspect(Path(data_dir))


def _inspect(data_dir: Path) -> State:
    folder = store_path(data_dir)
    for path in (data_dir, folder):
        if path.exists() and not path.is_dir():
            raise StoreDamaged(f"{path} is not a folder; pass the data folder as --data-dir")
    if not folder.exists():
        return State.ABSENT
    try:
        names = set(os.listdir(folder))
    except OSError as exc:
        raise _unreadable(folder, exc) from None
    data = folder / DATA_FILE
    initialised = FORMAT_FILE in names or LOCK_FILE in names
    marker = f"{FORMAT_FILE if FORMAT_FILE in names else LOCK_FILE} says a store was here"
    if DATA_FILE not in names:
        if initialised:
            raise StoreDamaged(f"{data} is missing ({marker}): {REMEDY}")
        return State.ABSENT
    try:
        with data.open("rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                if initialised:
                    raise StoreDamaged(f"{data} is empty, 0 bytes ({marker}): {REMEDY}")
                return State.ABSENT
            _check_meta(data, f)
        for path in (folder, data):
            if not os.access(path, os.R_OK | os.W_OK):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
    except OSError as exc:
        raise _unreadable(data, exc) from None
    return State.PRESENT


def _unreadable(path: Path, exc: OSError) -> StoreDamaged:
    reason = exc.strerror or str(exc)
    return StoreDamaged(
        f"cannot use {path}: {reason.lower()}; give the user running hashmatch read and "
        "write access to the data folder"
    )


@dataclass(frozen=True)
class _Meta:
    page_size: int
    roots: tuple[int, int]  # free DB, main DB
    last_page: int
    txnid: int


def _meta(data: Path, page: bytes, which: int) -> _Meta:
    not_lmdb = f"{data} is damaged: meta page {which} is not an LMDB meta page"
    if len(page) < _META_END:
        raise StoreDamaged(f"{data} is truncated: too short for its meta pages: {REMEDY}")
    flags = struct.unpack_from("<H", page, 10)[0]
    magic, version = _META.unpack_from(page, _HEADER)
    if not flags & _P_META or magic != _MAGIC:
        raise StoreDamaged(f"{not_lmdb}: {REMEDY}")
    if version != _DATA_VERSION:
        raise StoreDamaged(
            f"{data} has LMDB format version {version}, this build reads {_DATA_VERSION}: "
            "serve it with the hashmatch that wrote it"
        )
    free = _DB.unpack_from(page, _HEADER + _META.size)
    main = _DB.unpack_from(page, _HEADER + _META.size + _DB.size)
    last_page, txnid = _TAIL.unpack_from(page, _HEADER + _META.size + 2 * _DB.size)
    return _Meta(free[0], (free[7], main[7]), last_page, txnid)


def _check_meta(data: Path, f: BinaryIO) -> None:
    """The meta pages are sound and the file holds every page they reference."""
    first = _meta(data, f.read(_META_END), 0)
    page_size = first.page_size
    if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
        raise StoreDamaged(f"{data} is damaged: page size {page_size} in meta page 0: {REMEDY}")
    f.seek(page_size)
    second = _meta(data, f.read(_META_END), 1)
    current = max(first, second, key=lambda m: m.txnid)
    # The size after the metas: a commit writes its pages before its meta page.
    size = os.fstat(f.fileno()).st_size
    needed = (current.last_page + 1) * page_size
    if size < needed:
        raise StoreDamaged(
            f"{data} is truncated: {size} bytes, but its pages run to {needed} bytes: {REMEDY}"
        )
    for root in current.roots:
        if root == _P_INVALID:
            continue
        if root > current.last_page:
            raise StoreDamaged(f"{data} is damaged: a tree root lies past its last page: {REMEDY}")
        f.seek(root * page_size)
        header = f.read(_HEADER)
        pgno, _, flags = _PAGE.unpack(header)
        if pgno != root or not flags & (_P_BRANCH | _P_LEAF):
            raise StoreDamaged(f"{data} is damaged: page {root} is not a tree root: {REMEDY}")


def require(data_dir: Path, *, create: bool) -> State:
    """`inspect`, and NoStore when the folder holds no store and none is to be created."""
    state = inspect(data_dir)
    if state is State.ABSENT and not create:
        raise NoStore(
            f"no hashmatch store in {data_dir} ({store_path(data_dir) / DATA_FILE} does not "
            "exist): check --data-dir, or create one with `hashmatch admin init --data-dir "
            f"{data_dir}` (add-tenant also takes --create)"
        )
    return state


def mark_created(data_dir: Path) -> None:
    """Writes the FORMAT marker of an open store, once (atomically: a rename)."""
    folder = store_path(data_dir)
    marker = folder / FORMAT_FILE
    if marker.exists():
        return
    partial = folder / f".{FORMAT_FILE}.{os.getpid()}"
    with partial.open("w", encoding="utf-8") as f:
        f.write(FORMAT_TEXT)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, marker)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# LMDB's own words for a file it cannot make sense of. (A transaction that met a bad page
# may be left unusable: the next call in it reports MDB_BAD_TXN.)
_DAMAGE = (
    lmdb.BadTxnError,
    lmdb.CorruptedError,
    lmdb.PageNotFoundError,
    lmdb.InvalidError,
    lmdb.VersionMismatchError,
    lmdb.PanicError,
)


@contextmanager
def damage_named(data_dir: Path, *, opening: bool = False) -> Iterator[None]:
    """Turns LMDB's report of a damaged file into StoreDamaged; with `opening`, also any
    other reason LMDB gives for not opening the environment (a full disk excepted)."""
    data = store_path(data_dir) / DATA_FILE
    try:
        yield
    except _DAMAGE as exc:
        raise StoreDamaged(f"{data} is damaged ({_lmdb_words(exc)}): {REMEDY}") from None
    except lmdb.Error as exc:
        if not opening or isinstance(exc, lmdb.MapFullError | lmdb.DiskError):
            raise
        raise StoreDamaged(f"cannot open {data}: {_lmdb_words(exc)}") from None


def _lmdb_words(exc: BaseException) -> str:
    return " ".join(str(exc).split())


# -- hashmatch admin check ------------------------------------------------------------------


@dataclass
class ListReport:
    name: str
    version: int
    entries: int
    digest: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_store(store: Store) -> Iterator[ListReport]:
    """Every list, checked: its digest recomputed from its entries, its entry counts, and
    its change log (versions 1..version, each record decodes, the newest carries the
    list's digest). Reads one snapshot per list; a server may keep writing meanwhile."""
    data = store_path(Path(store.path).parent) / DATA_FILE
    with damage_named(Path(store.path).parent):
        names = [meta.name for meta in store.lists()]
    for name in names:
        with damage_named(Path(store.path).parent):
            try:
                report = _check_list(store, name)
            except StoreDamaged:
                raise
            except Exception as exc:
                report = ListReport(name, 0, 0, "", [f"cannot be read ({exc}) from {data}"])
        if report is not None:
            yield report


def walk_databases(store: Store) -> dict[str, int]:
    """Reads every key of every database from one snapshot (every branch and leaf page);
    returns each database's record count. StoreDamaged when LMDB finds a bad page."""
    counts: dict[str, int] = {}
    with damage_named(Path(store.path).parent), store.env.begin(buffers=False) as txn:
        names = [bytes(key) for key in txn.cursor().iternext(values=False)]
        for name in names:
            db = store.env.open_db(name, txn=txn, create=False)
            cursor = txn.cursor(db=db)
            counts[name.decode("utf-8", "replace")] = sum(1 for _ in cursor.iternext(values=False))
    return counts


def _check_list(store: Store, name: str) -> ListReport | None:
    snapshot = store.snapshot_entries(name)
    if snapshot is None:  # deleted while checking
        return None
    meta, chunks = snapshot
    report = ListReport(meta.name, meta.version, 0, meta.digest.hex())
    digest = ListDigest()
    counts = [0] * ALGORITHMS
    for algs, slots, _ids, ends_raw, refs in chunks:
        ends = memoryview(ends_raw).cast("I")
        start = 0
        for i, alg in enumerate(algs):
            end = ends[i]
            length = DIGEST_LENGTHS.get(alg)
            if length is None:
                report.problems.append(f"an entry has unknown algorithm {alg}")
                start = end
                continue
            value = slots[SLOT * i : SLOT * i + length]
            digest.add_term(entry_term(alg, value, refs[start:end]))
            counts[alg - 1] += 1
            start = end
    report.entries = sum(counts)
    if digest.to_bytes() != meta.digest:
        report.problems.append(
            f"stored digest {meta.digest.hex()} but its entries sum to {digest.hex()}"
        )
    if tuple(counts) != tuple(meta.counts):
        report.problems.append(f"stored counts {list(meta.counts)} but it holds {counts}")
    report.problems += _check_log(store, meta.id, meta.version, meta.digest)
    return report


def _check_log(store: Store, list_id: int, version: int, digest: bytes) -> list[str]:
    """The list's change log, versions 1..version, read from one snapshot."""
    problems: list[str] = []
    expected = 1
    newest: ChangeRecord | None = None
    prefix = U32.pack(list_id)
    with store.read() as txn:
        cursor = txn.cursor(db=store._db("changes"))
        found = cursor.set_range(prefix)
        for key, raw in cursor if found else ():
            if not key.startswith(prefix):
                break
            _, v = LIST_ENTRY.unpack(key)
            if v > version:
                break  # written after the list's metadata was read
            if v > expected:
                problems.append(_gap(expected, v - 1))
            expected = v + 1
            record = _decode(list_id, v, raw)
            if record is None:
                problems.append(f"change log version {v} does not decode")
            newest = record
    if expected <= version:
        problems.append(_gap(expected, version))
    if newest is not None and newest.version == version and newest.digest != digest:
        problems.append(
            f"change log version {version} carries digest {newest.digest.hex()}, "
            f"the list {digest.hex()}"
        )
    return problems


def _gap(first: int, last: int) -> str:
    if first == last:
        return f"change log version {first} is missing"
    return f"change log versions {first}..{last} are missing"


def _decode(list_id: int, version: int, raw: bytes) -> ChangeRecord | None:
    """The record if it decodes whole and consistent (every column the length its header
    says, references UTF-8, known algorithms), else None."""
    try:
        _, n, m, n_refs, _, id_len, kind = _RECORD_HEADER.unpack_from(raw, 0)
        fixed = _RECORD_HEADER.size + id_len + (1 + SLOT + 8) * n + 4 * n_refs + (1 + SLOT) * m
        if len(raw) < fixed or (kind == CHANGES and n_refs != n):
            return None
        record = ChangeRecord.decode(list_id, version, raw)
        ends = memoryview(record.ref_ends).cast("I")
        if any(a > b for a, b in pairwise(ends)):
            return None
        if fixed + (ends[-1] if len(ends) else 0) != len(raw):
            return None
        if any(alg not in DIGEST_LENGTHS for alg in record.upsert_algs + record.retire_algs):
            return None
        record.references()
    except (struct.error, UnicodeDecodeError, ValueError, IndexError, TypeError):
        return None
    return record

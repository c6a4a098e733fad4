"""`hashmatch admin backup`: a consistent, compacted copy of a live store.

LMDB copies from one read transaction, so the copy is the store as one commit left it
(every list at one version, whole batches only) while servers keep writing; compaction
leaves out free pages. The copy is written beside its destination and renamed into place
once it is on disk, so DEST/store is either a whole store or absent: `hashmatch serve
--data-dir DEST` serves it as it is.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from hashmatch.server.store.checks import DATA_FILE, FORMAT_FILE, FORMAT_TEXT, store_path
from hashmatch.server.store.records import ListMeta

if TYPE_CHECKING:
    from hashmatch.server.store import Store


class BackupRefused(Exception):
    """The destination cannot take the copy (it already holds a store, or is a file)."""


@dataclass(frozen=True)
class Backup:
    path: Path  # DEST/store
    size: int  # bytes of the copy's data.mdb
    seconds: float
    lists: list[ListMeta]  # every list as the copy holds it


def backup(store: Store, dest: Path) -> Backup:
    """Copies `store` into `dest`/store, compacted, from one snapshot."""
    target = store_path(dest)
    if dest.exists() and not dest.is_dir():
        raise BackupRefused(f"{dest} is not a folder")
    if target.exists():
        raise BackupRefused(f"{target} already exists: {dest} already holds a store")
    dest.mkdir(parents=True, exist_ok=True)
    partial = dest / f".store.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    started = time.perf_counter()
    try:
        with store.env.begin(buffers=False) as txn:
            store.env.copy(str(partial), compact=True, txn=txn)
            lists = [
                ListMeta.from_json(raw) for _, raw in cast(Any, txn).cursor(db=store._db("lists"))
            ]
        _fsync(partial / DATA_FILE)
        (partial / FORMAT_FILE).write_text(FORMAT_TEXT, encoding="utf-8")
        _fsync(partial / FORMAT_FILE)
        _fsync(partial)
        os.replace(partial, target)
        _fsync(dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    seconds = time.perf_counter() - started
    return Backup(target, (target / DATA_FILE).stat().st_size, seconds, lists)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

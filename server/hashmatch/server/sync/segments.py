"""Segment files: each served list's index written beside the store, mapped at start.

A serving process that starts maps a list's segment file instead of reading every entry
from LMDB and rebuilding the index, when the file holds the list as the store describes
it at some version: same list id and epoch (resets), a version not above the list's, and
the digest the change log records for that version. It then follows the change log from
that version, as for any list. The core checks the whole file before serving it (format,
checksums); every process mapping one file shares its pages through the page cache.

A file that fails a check is not used: the list is rebuilt from the store and a warning
names the reason; the file is replaced by the next one written.

One process per data folder writes the files (it holds `segments/writer.lock`): a list
loaded from the store is written right away, and a list that changed is written again
once it has been quiet for `quiet` seconds (and no sooner after its last write than ten
times what that write took).
Files are written whole under a temporary name and renamed (see hashcore's `persist`),
so a crash leaves the previous file and a stray temporary one, removed by the next writer.
"""

from __future__ import annotations

import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from hashmatch.server.core import ListSnapshot, read_segment_info
from hashmatch.server.store import ListMeta, Store

log = logging.getLogger(__name__)

FOLDER = "segments"
SUFFIX = ".seg"
EMPTY_DIGEST = bytes(16)


@dataclass(frozen=True)
class SegmentInfo:
    """What a segment file holds: one list as of one version of the store."""

    list_id: int
    version: int
    epoch: int
    digest: bytes


class Refused(Exception):
    """A segment file that cannot be used; the message says why."""


class SegmentFiles:
    """The segment files of one data folder."""

    def __init__(self, data_dir: Path, *, quiet: float = 10.0):
        self.folder = data_dir / FOLDER
        self.folder.mkdir(exist_ok=True)
        self.quiet = quiet
        self._lock_fd: int | None = None
        # The first process to start writes (and clears what a crashed writer left).
        self.is_writer()

    def path(self, list_id: int) -> Path:
        return self.folder / f"list-{list_id}{SUFFIX}"

    def usable(self, store: Store, meta: ListMeta, epoch: int) -> SegmentInfo | None:
        """The list's segment file, if it has one and it describes the list as the store
        does at its version; None when there is none. Raises Refused otherwise."""
        path = self.path(meta.id)
        if not path.exists():
            return None
        try:
            list_id, version, file_epoch, digest = read_segment_info(path)
        except (OSError, ValueError) as err:
            raise Refused(str(err)) from None
        info = SegmentInfo(list_id, version, file_epoch, digest)
        if list_id != meta.id:
            raise Refused(f"it holds list id {list_id}, not {meta.id}")
        if file_epoch != epoch:
            raise Refused(f"it holds epoch {file_epoch}; the list was reset since (epoch {epoch})")
        if version > meta.version:
            raise Refused(f"it holds version {version}, newer than the store's {meta.version}")
        expected = digest_at(store, meta, version)
        if expected != digest:
            raise Refused(
                f"its digest {digest.hex()} is not the store's {expected.hex()} at version "
                f"{version}"
            )
        return info

    def save(self, snapshot: ListSnapshot, info: SegmentInfo) -> int:
        """Writes the list's file from `snapshot`, taken at `info`'s version; returns its
        size. Only the folder's writer calls this (see `is_writer`)."""
        return snapshot.save(
            self.path(info.list_id), info.list_id, info.version, info.epoch, info.digest
        )

    def drop_cached(self, list_id: int) -> None:
        """Takes the pages of the list's file out of the page cache, for a file this
        process does not serve from: a 100 M list's file is 10 GB, which would otherwise
        push out the store's pages that the next commit reads."""
        fd = os.open(self.path(list_id), os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)

    def is_writer(self) -> bool:
        """Whether this process writes the folder's files (taking the lock if free)."""
        if self._lock_fd is not None:
            return True
        fd = os.open(self.folder / "writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        # No other process writes here now: temporary files are left from crashes.
        for stray in self.folder.glob(f"*{SUFFIX}.tmp-*"):
            stray.unlink(missing_ok=True)
        return True

    def remove(self, list_id: int) -> None:
        """Deletes the file of a list no longer served (writer only)."""
        if self.is_writer():
            self.path(list_id).unlink(missing_ok=True)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def digest_at(store: Store, meta: ListMeta, version: int) -> bytes:
    """The list's digest at `version` (its current one, or the change log's record)."""
    if version == meta.version:
        return meta.digest
    if version == 0:
        return EMPTY_DIGEST
    records = store.changes_since(meta.id, version - 1, limit=1)
    if not records or records[0].version != version:
        return b""
    return records[0].digest

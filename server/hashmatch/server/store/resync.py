"""A replica's verification of its lists: which lists are not served, and the re-copy.

A replica serves a list only while its copy is verified: its digest checked out against
the primary's at the same version. A list that stops checking out is reset here, in one
write transaction, to an empty list at version 0 marked unverified; every serving process
then drops it from its indexes (the follower reads the mark and the list's reset count),
and the replicator copies it again from the primary's version 0. The mark is cleared in
the transaction that brings the copy to the primary's version with the primary's digest.

Keys (in `meta`, next to b"seq"; NUL never occurs in the fixed keys there):
  b"unverified\\0" | list name -> b""   the list is not served (being copied, or diverged)
  b"resets\\0" | list name -> u64       how many times the list was reset (its epoch)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from hashmatch.client.digest import ListDigest
from hashmatch.server.core import Changes
from hashmatch.server.store.env import Unchanged
from hashmatch.server.store.errors import (
    BatchIdReused,
    ListNotFound,
    StaleVersion,
)
from hashmatch.server.store.keys import U64, list_prefix
from hashmatch.server.store.records import ALGORITHMS, ListMeta

if TYPE_CHECKING:
    from hashmatch.server.store import Store
    from hashmatch.server.store.env import Txn

UNVERIFIED = b"unverified\0"
RESETS = b"resets\0"
# Databases holding per-list keys that a reset empties (statistics and feedback stay).
_LIST_DBS = ("entries", "refs", "changes", "batches", "quarantine")
EMPTY_DIGEST = ListDigest().to_bytes()


@dataclass(frozen=True)
class ListState:
    """A list as a serving process must know it to decide whether to serve it."""

    meta: ListMeta
    # Times the list was reset: a serving process that loaded an earlier epoch reloads.
    epoch: int
    verified: bool


@dataclass(frozen=True)
class Checked:
    """What checking a list against the primary found."""

    version: int
    # Why the local copy was reset (it differs from the primary's), or None.
    diverged: str | None = None
    # The list was unverified and checked out now: it is served from here on.
    verified: bool = False


def list_states(store: Store) -> list[ListState]:
    """Every list with its epoch and whether it may be served, from one snapshot."""
    meta_db = store._db("meta")
    with store.read() as txn:
        lists = [ListMeta.from_json(raw) for _, raw in txn.cursor(db=store._db("lists"))]
        unverified = set(_names(txn, meta_db, UNVERIFIED))
        epochs = {name: U64.unpack(raw)[0] for name, raw in _items(txn, meta_db, RESETS)}
    return [
        ListState(meta, epochs.get(meta.name, 0), meta.name not in unverified) for meta in lists
    ]


def mark_unverified(store: Store, name: str) -> None:
    """Marks a list (existing or about to be created) as not to be served."""
    with store._write() as txn:
        txn.put(UNVERIFIED + name.encode(), b"", db=store._db("meta"))
        store._bump_seq(txn)


def mark_verified(store: Store, name: str) -> bool:
    """Serves the list again; False when it was not marked."""
    cleared = False
    with store._write() as txn:
        if not txn.delete(UNVERIFIED + name.encode(), db=store._db("meta")):
            raise Unchanged  # nothing to commit
        store._bump_seq(txn)
        cleared = True
    return cleared


def is_verified(store: Store, name: str) -> bool:
    with store.read() as txn:
        return txn.get(UNVERIFIED + name.encode(), db=store._db("meta")) is None


def reset_list(store: Store, name: str, *, actor: str, reason: str) -> ListMeta:
    """Empties the list (version 0, no entries, no change log, no batch IDs, no
    quarantine) and marks it unverified, in one write transaction."""
    with store._write() as txn:
        return _reset(store, txn, name, actor, reason)


def check_primary(store: Store, name: str, version: int, digest: bytes, *, actor: str) -> Checked:
    """Compares the list with the primary's (version, digest) as the primary announced it.

    The same version with another digest, or a primary behind this copy, resets the
    list. The same version and digest verifies an unverified list. A primary ahead says
    nothing yet: its batches are checked as they are applied.
    """
    with store.read() as txn:
        meta = _meta(store, txn, name)
        flagged = txn.get(UNVERIFIED + name.encode(), db=store._db("meta")) is not None
    if meta.version > version:
        reason = f"the primary is at version {version}, behind this copy's {meta.version}"
    elif meta.version == version and meta.digest != digest:
        reason = f"digest differs from the primary's at version {version}"
    elif meta.version == version and flagged:
        mark_verified(store, name)
        return Checked(version, verified=True)
    else:
        return Checked(meta.version)
    reset_list(store, name, actor=actor, reason=reason)
    return Checked(0, diverged=reason)


def apply_checked(
    store: Store,
    name: str,
    batches: Sequence[tuple[Changes, int, bytes]],
    *,
    actor: str,
    verify_at: int | None,
) -> Checked:
    """Applies a primary's batches, `(changes, version, digest)` each, in one write
    transaction, checking each against the version and digest the primary gave it.

    When one does not check out, nothing of the group is kept: the list is reset instead,
    in the same transaction, so no serving process ever sees the mismatched content. An
    unverified list becomes verified when the group brings it to `verify_at` or past it
    (the primary's version when it announced the list).
    """
    with store._write() as txn:
        version = _meta(store, txn, name).version
        for changes, expected, digest in batches:
            try:
                outcome = store._apply_one(txn, name, changes, actor)
            except StaleVersion as exc:
                reason = f"the primary's batch {expected} does not follow version {exc.current}"
            except BatchIdReused:
                reason = f"batch {changes.batch_id!r} (version {expected}) differs from ours"
            else:
                version = outcome.version
                if outcome.already_applied:
                    reason = (
                        f"batch {changes.batch_id!r} of version {expected} was applied here "
                        f"as version {outcome.version}"
                    )
                elif outcome.version != expected:
                    reason = f"the primary's batch {expected} became version {outcome.version}"
                elif outcome.digest != digest:
                    reason = f"digest differs from the primary's at version {expected}"
                else:
                    continue
            _reset(store, txn, name, actor, reason)
            return Checked(0, diverged=reason)
        key = UNVERIFIED + name.encode()
        verified = (
            verify_at is not None and version >= verify_at and txn.delete(key, db=store._db("meta"))
        )
        return Checked(version, verified=bool(verified))


def _reset(store: Store, txn: Txn, name: str, actor: str, reason: str) -> ListMeta:
    meta = _meta(store, txn, name)
    prefix = list_prefix(meta.id)
    for db_name in _LIST_DBS:
        _delete_prefix(txn, store._db(db_name), prefix)
    fresh = replace(
        meta,
        version=0,
        counts=(0,) * ALGORITHMS,
        digest=EMPTY_DIGEST,
        next_entry_id=1,
        last_batch_id="",
        updated_at=time.time(),
    )
    meta_db = store._db("meta")
    txn.put(name.encode(), fresh.to_json(), db=store._db("lists"))
    txn.put(UNVERIFIED + name.encode(), b"", db=meta_db)
    raw = txn.get(RESETS + name.encode(), db=meta_db)
    epoch = (U64.unpack(raw)[0] if raw else 0) + 1
    txn.put(RESETS + name.encode(), U64.pack(epoch), db=meta_db)
    store._audit(txn, actor, "resync-list", list=name, reason=reason, from_version=meta.version)
    return fresh


def _meta(store: Store, txn: Txn, name: str) -> ListMeta:
    raw = txn.get(name.encode(), db=store._db("lists"))
    if raw is None:
        raise ListNotFound(name)
    return ListMeta.from_json(raw)


def _delete_prefix(txn: Txn, db: Any, prefix: bytes) -> int:
    """Deletes every key starting with `prefix` with one cursor walk (a list may hold
    millions of entries: no key list in memory)."""
    cur: Any = txn.cursor(db=db)
    deleted = 0
    if not cur.set_range(prefix):
        return 0
    while cur.key().startswith(prefix):
        if not cur.delete():
            break
        deleted += 1
    return deleted


def _items(txn: Txn, db: Any, prefix: bytes) -> list[tuple[str, bytes]]:
    out = []
    cur = txn.cursor(db=db)
    if cur.set_range(prefix):
        for key, value in cur:
            if not key.startswith(prefix):
                break
            out.append((key[len(prefix) :].decode(), value))
    return out


def _names(txn: Txn, db: Any, prefix: bytes) -> list[str]:
    return [name for name, _ in _items(txn, db, prefix)]

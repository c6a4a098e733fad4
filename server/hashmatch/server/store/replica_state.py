"""What a replica's store knows of its primary, and the promotion of a replica to primary.

A replica records which primary it copies (b"replica_of", written when it starts following),
the highest version of each list the primary has told it about (received, whether applied
yet or not), and whether its copy is proven current (b"stale" is present while it is not:
every serving process of the replica then reports NOT_SERVING).

A store marked as a replica is served only with --follow: `promote` turns it into a primary
(after `promotion_problems` found nothing behind), `demote` marks a former primary as the
replica of its successor so that it cannot come back as a second primary by mistake.

Keys (in `meta`):
  b"replica_of" -> the primary's HOST:PORT
  b"primary_version\\0" | list name -> u64   the primary's version as last heard
  b"stale" -> reason (UTF-8)                 present while the copy is not proven current
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hashmatch.server.store.env import Unchanged
from hashmatch.server.store.keys import U64
from hashmatch.server.store.resync import UNVERIFIED, list_states

if TYPE_CHECKING:
    from hashmatch.server.store import Store
    from hashmatch.server.store.env import Txn

REPLICA_OF = b"replica_of"
PRIMARY_VERSION = b"primary_version\0"
STALE = b"stale"


@dataclass(frozen=True)
class PeerList:
    """One list as a peer replica serves it."""

    name: str
    version: int
    digest: bytes


def replica_of(store: Store) -> str | None:
    """The primary this store copies, or None for a primary's store."""
    with store.read() as txn:
        raw = txn.get(REPLICA_OF, db=store._db("meta"))
    return raw.decode() if raw is not None else None


def follow(store: Store, primary: str) -> None:
    """Marks the store as a replica of `primary` (a replica never quarantines by itself:
    store/trust.py). Following another primary than before (after a promotion) forgets
    the versions heard from the previous one."""
    meta = store._db("meta")
    with store._write() as txn:
        if txn.get(REPLICA_OF, db=meta) == primary.encode():
            raise Unchanged
        for key in _keys(txn, meta, PRIMARY_VERSION):
            txn.delete(key, db=meta)
        txn.put(REPLICA_OF, primary.encode(), db=meta)


def primary_versions(store: Store) -> dict[str, int]:
    """Each list's version as the primary last announced or sent it to this replica."""
    meta = store._db("meta")
    out = {}
    with store.read() as txn:
        cur = txn.cursor(db=meta)
        if cur.set_range(PRIMARY_VERSION):
            for key, raw in cur:
                if not key.startswith(PRIMARY_VERSION):
                    break
                out[key[len(PRIMARY_VERSION) :].decode()] = U64.unpack(raw)[0]
    return out


def note_primary_versions(store: Store, versions: Mapping[str, int]) -> None:
    """Records the primary's versions (only higher ones than recorded: one write at most)."""
    meta = store._db("meta")
    with store._write() as txn:
        changed = False
        for name, version in versions.items():
            key = PRIMARY_VERSION + name.encode()
            raw = txn.get(key, db=meta)
            if raw is None or U64.unpack(raw)[0] < version:
                txn.put(key, U64.pack(version), db=meta)
                changed = True
        if not changed:
            raise Unchanged


def stale_reason(store: Store) -> str | None:
    """Why this replica's copy is not proven current, or None when it is."""
    with store.read() as txn:
        raw = txn.get(STALE, db=store._db("meta"))
    return raw.decode() if raw is not None else None


def set_stale(store: Store, reason: str | None) -> None:
    """Marks the copy as not proven current (`reason`), or clears the mark (None)."""
    meta = store._db("meta")
    with store._write() as txn:
        if reason is None:
            if not txn.delete(STALE, db=meta):
                raise Unchanged
        else:
            txn.put(STALE, reason.encode(), db=meta)
        store._bump_seq(txn)


def promotion_problems(store: Store, peers: Mapping[str, Iterable[PeerList]]) -> list[str]:
    """Why this replica may not become the primary: a list it has not verified, a list
    behind what it heard from the primary, or behind (or different from) a peer's copy.
    Empty when it holds every list at least as far as anyone known. `peers` maps a peer's
    address to the lists it serves."""
    problems = []
    heard = primary_versions(store)
    states = {s.meta.name: s for s in list_states(store)}
    for name, state in sorted(states.items()):
        if not state.verified:
            problems.append(f"{name}: not verified against the primary (still being copied)")
        elif heard.get(name, 0) > state.meta.version:
            problems.append(
                f"{name}: at version {state.meta.version}, behind the primary's version "
                f"{heard[name]} that this replica heard of"
            )
    for name in sorted(heard.keys() - states.keys()):
        problems.append(f"{name}: announced by the primary but not held here")
    for address, lists in sorted(peers.items()):
        for peer in lists:
            ours = states.get(peer.name)
            if ours is None:
                problems.append(f"{peer.name}: held by peer {address} but not here")
            elif peer.version > ours.meta.version:
                problems.append(
                    f"{peer.name}: at version {ours.meta.version}, behind peer {address} "
                    f"at version {peer.version}"
                )
            elif peer.version == ours.meta.version and peer.digest != ours.meta.digest:
                problems.append(
                    f"{peer.name}: same version {peer.version} as peer {address} but another digest"
                )
    return problems


def promote(store: Store, *, actor: str) -> str:
    """Makes this replica's store a primary's; returns the primary it copied."""
    meta = store._db("meta")
    with store._write() as txn:
        raw = txn.get(REPLICA_OF, db=meta)
        if raw is None:
            raise NotAReplica(store.path)
        for key in _keys(txn, meta, PRIMARY_VERSION):
            txn.delete(key, db=meta)
        for key in (REPLICA_OF, STALE):
            txn.delete(key, db=meta)
        # Nothing unverified may remain (promotion_problems refuses it): cleared anyway so
        # that no list of a primary is ever left unserved.
        for key in _keys(txn, meta, UNVERIFIED):
            txn.delete(key, db=meta)
        store._audit(txn, actor, "promote", replica_of=raw.decode())
    return raw.decode()


def demote(store: Store, primary: str, *, actor: str) -> None:
    """Marks a (former) primary's store as a replica of `primary`: `serve` then refuses it
    without --follow."""
    with store._write() as txn:
        txn.put(REPLICA_OF, primary.encode(), db=store._db("meta"))
        store._audit(txn, actor, "demote", replica_of=primary)


class ServingLock:
    """Held (shared) by every serving process on a data folder for as long as it serves, so
    that `promote` and `demote` can tell the folder is still being served. The kernel
    releases it when the process ends, however it ends."""

    NAME = "serving.lock"

    def __init__(self, data_dir: Path) -> None:
        self._file = (data_dir / self.NAME).open("a")
        fcntl.flock(self._file, fcntl.LOCK_SH)

    def close(self) -> None:
        self._file.close()


def being_served(data_dir: Path) -> bool:
    """Whether a server holds the folder's ServingLock now."""
    with (data_dir / ServingLock.NAME).open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


class NotAReplica(Exception):
    def __init__(self, path: object) -> None:
        super().__init__(f"{path} holds a primary's store, not a replica's: nothing to promote")


def _keys(txn: Txn, db: Any, prefix: bytes) -> list[bytes]:
    cur = txn.cursor(db=db)
    out = []
    if cur.set_range(prefix):
        for key, _ in cur:
            if not key.startswith(prefix):
                break
            out.append(bytes(key))
    return out

"""Per-list read grants: a list's owner lets one named tenant (a partner hotline, a
platform's own mirror) read that list — GetList, WatchChanges, and seeing it in ListLists —
without the all-lists replica role.

Named database and key:
  grants    list_id u32 | tenant name -> JSON {at, by}: `tenant` may read the list

Every write is one write transaction that bumps the store's commit counter (through its
audit event), so serving processes see a grant or a revocation on their next store read,
and an open WatchChanges of a revoked grantee wakes up and ends.

A replica copies the primary's grants (mirror_grants): grants name lists by name on the
Follow stream, since list ids are local to each store.

Functions over a Store rather than a Store area: callers pass the store they hold.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass

from hashmatch.server.store.env import StoreBase, Unchanged, prefixed
from hashmatch.server.store.errors import ListNotFound, TenantNotFound
from hashmatch.server.store.keys import U32
from hashmatch.server.store.records import ListMeta

DB = "grants"


@dataclass(frozen=True)
class Grant:
    """One tenant's read access to one list."""

    list_id: int
    tenant: str
    granted_at: float
    granted_by: str


def _key(list_id: int, tenant: str) -> bytes:
    return U32.pack(list_id) + tenant.encode("utf-8")


def grant(store: StoreBase, meta: ListMeta, tenant: str, *, actor: str) -> bool:
    """Lets `tenant` read the list; True when it could not before. TenantNotFound when no
    such tenant exists, ListNotFound when the list is gone."""
    added = False
    with store._write() as txn:
        if txn.get(tenant.encode("utf-8"), db=store._db("tenants")) is None:
            raise TenantNotFound(tenant)
        if txn.get(meta.name.encode("utf-8"), db=store._db("lists")) is None:
            raise ListNotFound(meta.name)
        key = _key(meta.id, tenant)
        if txn.get(key, db=store._db(DB)) is not None:
            raise Unchanged  # already granted: nothing to write
        record = {"at": time.time(), "by": actor}
        txn.put(key, json.dumps(record).encode(), db=store._db(DB))
        store._audit(txn, actor, "grant-access", list=meta.name, tenant=tenant)
        added = True
    return added


def revoke(store: StoreBase, meta: ListMeta, tenant: str, *, actor: str) -> bool:
    """Ends `tenant`'s read access to the list; True when it had one."""
    removed = False
    with store._write() as txn:
        if not txn.delete(_key(meta.id, tenant), db=store._db(DB)):
            raise Unchanged
        store._audit(txn, actor, "revoke-access", list=meta.name, tenant=tenant)
        removed = True
    return removed


def is_granted(store: StoreBase, list_id: int, tenant: str) -> bool:
    with store.read() as txn:
        return txn.get(_key(list_id, tenant), db=store._db(DB)) is not None


def grants_of(store: StoreBase, list_id: int) -> list[Grant]:
    """The grants of one list, by tenant name."""
    prefix = U32.pack(list_id)
    out = []
    with store.read() as txn:
        for key, raw in prefixed(txn, store._db(DB), prefix):
            record = json.loads(raw)
            out.append(
                Grant(list_id, key[len(prefix) :].decode("utf-8"), record["at"], record["by"])
            )
    return out


def granted_lists(store: StoreBase, tenant: str) -> set[int]:
    """Ids of the lists `tenant` was granted. Grants are few (one per partner and list),
    so this reads them all."""
    name = tenant.encode("utf-8")
    with store.read() as txn:
        return {
            U32.unpack(key[:4])[0]
            for key in txn.cursor(db=store._db(DB)).iternext(keys=True, values=False)
            if key[4:] == name
        }


@dataclass(frozen=True)
class NamedGrant:
    """A grant naming its list by name, as replicas receive it."""

    list: str
    tenant: str
    granted_at: float
    granted_by: str


def all_grants(store: StoreBase) -> list[NamedGrant]:
    """Every grant of the store, by list name then tenant name (one read transaction)."""
    out = []
    with store.read() as txn:
        names = {
            (meta := ListMeta.from_json(raw)).id: meta.name
            for _, raw in txn.cursor(db=store._db("lists"))
        }
        for key, raw in txn.cursor(db=store._db(DB)):
            name = names.get(U32.unpack(key[:4])[0])
            if name is None:
                continue
            record = json.loads(raw)
            out.append(NamedGrant(name, key[4:].decode("utf-8"), record["at"], record["by"]))
    return sorted(out, key=lambda g: (g.list, g.tenant))


def mirror_grants(store: StoreBase, grants: Iterable[NamedGrant]) -> bool:
    """Makes this store's grants equal to `grants` (a primary's, on a replica); True when
    anything changed. One write transaction, which bumps the store's commit counter so
    serving processes see the change; none when nothing changes.

    A grant of a list this store does not hold (yet) cannot be kept here, list ids being
    local: it is skipped, and the caller mirrors again once the list exists."""
    with store._write() as txn:
        ids = {
            (meta := ListMeta.from_json(raw)).name: meta.id
            for _, raw in txn.cursor(db=store._db("lists"))
        }
        want: dict[bytes, dict[str, object]] = {}
        for g in grants:
            list_id = ids.get(g.list)
            if list_id is not None:
                want[_key(list_id, g.tenant)] = {"at": g.granted_at, "by": g.granted_by}
        db = store._db(DB)
        current = dict(txn.cursor(db=db))
        changed = False
        for key in current.keys() - want.keys():
            txn.delete(key, db=db)
            changed = True
        for key, record in want.items():
            raw = current.get(key)
            if raw is None or json.loads(raw) != record:
                txn.put(key, json.dumps(record).encode(), db=db)
                changed = True
        if not changed:
            # Nothing to write: abort keeps the sync-on commit off the disk.
            raise Unchanged
        store._bump_seq(txn)
    return changed

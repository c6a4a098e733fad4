"""The embedded LMDB store: tenants, lists, entries, the change log and the audit log.

Only this module imports lmdb; the rest of the server speaks in tenants, lists and change
records. Every write is one LMDB write transaction (sync on), so an acknowledged batch
survives a crash and an unacknowledged one is either fully there or fully absent.

Named databases and their keys (integers big-endian, so keys sort numerically):
  meta      b"seq" -> u64 commits so far (every write bumps it; followers poll it),
            b"next_list_id" -> u32
  tenants   name -> JSON {role, created_at}
  tokens    SHA-256(token) -> tenant name (tokens themselves are never stored)
  lists     name -> JSON list metadata (ListMeta)
  entries   list_id u32 | algorithm u8 | hash -> entry_id u64 LE
  refs      list_id u32 | entry_id u64 -> reference ID (UTF-8)
  changes   list_id u32 | version u64 -> ChangeRecord
  batches   list_id u32 | batch_id -> version u64 | request fingerprint (16 bytes)
  audit     seq u64 -> JSON {at, actor, action, ...}
  stats     list_id u32 | reference ID -> matches u64 | last match f64 | flood window (flood.py),
            every tenant summed
  matched   list_id u32 | reference length u16 | reference ID | tenant name -> TenantShare
            (flood.py): that tenant matched it (how often, when last, its flood share)
  quarantine list_id u32 | reference ID -> JSON {since, window_matches, baseline}
  feedback  list_id u32 | reference ID -> JSON {counts by reason, newest notes, last}
  platforms tenant name -> JSON {all_lists, lists}: which lists apply to a platform
  allow     tenant name | 0 | algorithm u8 | hash -> b"": a platform's allow-list
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import struct
import time
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from itertools import accumulate
from pathlib import Path
from typing import Any, Protocol, cast

import lmdb

from hashmatch.client.digest import ListDigest
from hashmatch.server import errors
from hashmatch.server.core import SLOT, Changes, entry_term
from hashmatch.server.matching.flood import (
    DEFAULT_FLOOD,
    FloodPolicy,
    FloodStat,
    TenantShare,
    tenant_cap,
)
from hashmatch.server.store.changelog import QUARANTINE, RELEASE, ChangeRecord

# Sized far beyond any expected data once, up front: LMDB only reserves address space, and
# a map that never has to grow cannot race with other processes resizing it.
DEFAULT_MAP_SIZE = 256 << 30
# Notes kept per reference in the feedback a list owner reads.
MAX_NOTES = 10
# Free space below which a failed write is taken for a full disk.
LOW_DISK_BYTES = 64 << 20
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_LIST_ENTRY = struct.Struct(">IQ")
_LIST_REF = struct.Struct(">IH")


class _Cursor(Protocol):
    """An LMDB cursor as this module uses it: transactions are opened with
    buffers=False, so keys and values are always bytes (py-lmdb's own types also allow
    memoryviews)."""

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]: ...
    def iterprev(self) -> Iterator[tuple[bytes, bytes]]: ...
    def iternext(self, keys: bool = ..., values: bool = ...) -> Iterator[bytes]: ...
    def last(self) -> bool: ...
    def key(self) -> bytes: ...
    def set_range(self, key: bytes) -> bool: ...
    def getmulti(self, keys: Iterable[bytes]) -> list[tuple[bytes, bytes]]: ...
    def putmulti(
        self, items: Iterable[tuple[bytes, bytes]], overwrite: bool = ..., append: bool = ...
    ) -> tuple[int, int]: ...


class _Txn(Protocol):
    """An LMDB transaction as this module uses it (see _Cursor)."""

    def get(self, key: bytes, default: None = None, db: Any = ...) -> bytes | None: ...
    def put(self, key: bytes, value: bytes, db: Any = ...) -> bool: ...
    def pop(self, key: bytes, db: Any = ...) -> bytes | None: ...
    def delete(self, key: bytes, value: bytes = ..., db: Any = ...) -> bool: ...
    def cursor(self, db: Any = ...) -> _Cursor: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...
    def __enter__(self) -> _Txn: ...
    def __exit__(self, *exc: object) -> None: ...


class Role(StrEnum):
    PLATFORM = "platform"
    HOTLINE = "hotline"
    REPLICA = "replica"


class StoreError(Exception):
    """Base of the store's refusals; the service maps each to a status code."""


class ListNotFound(StoreError):
    pass


class ListExists(StoreError):
    pass


class TenantExists(StoreError):
    pass


class TenantNotFound(StoreError):
    pass


class StaleVersion(StoreError):
    def __init__(self, current: int) -> None:
        super().__init__(f"the list is at version {current}")
        self.current = current


class BatchIdReused(StoreError):
    pass


class StoreFull(StoreError, errors.StoreFull):
    """The disk or the map is full. Nothing of the failed write was kept."""

    def __init__(self, message: str) -> None:
        errors.StoreFull.__init__(self, message)


@dataclass(frozen=True)
class Tenant:
    name: str
    role: Role
    created_at: float


@dataclass(frozen=True)
class ListMeta:
    id: int
    name: str
    owner: str
    version: int
    counts: tuple[int, int, int, int]  # md5, sha1, sha256, pdq
    pdq_threshold: int
    pdq_min_quality: int
    digest: bytes
    next_entry_id: int
    created_at: float
    updated_at: float
    last_batch_id: str = ""
    flood: FloodPolicy = DEFAULT_FLOOD

    def to_json(self) -> bytes:
        data = asdict(self)
        data["digest"] = self.digest.hex()
        return json.dumps(data).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ListMeta:
        data = json.loads(raw)
        data["digest"] = bytes.fromhex(data["digest"])
        data["counts"] = tuple(data["counts"])
        data["flood"] = FloodPolicy(*data.get("flood", DEFAULT_FLOOD))
        return cls(**data)


@dataclass(frozen=True)
class PlatformSettings:
    """Which lists apply to a platform, and the (algorithm, hash) pairs it allow-listed."""

    all_lists: bool
    lists: list[str]
    allow: list[tuple[int, bytes]]


@dataclass(frozen=True)
class ApplyOutcome:
    version: int
    already_applied: bool
    upserted: int
    retired: int
    digest: bytes


def token_hash(token: str) -> bytes:
    # Tokens are 256-bit random values, so a plain SHA-256 cannot be brute-forced.
    return hashlib.sha256(token.encode("utf-8")).digest()


def new_token() -> str:
    return "hm_" + secrets.token_urlsafe(32)


def ref_key(list_id: int, entry_id: int) -> bytes:
    # Big-endian ids: new entries' references append at the end of the tree.
    return _LIST_ENTRY.pack(list_id, entry_id)


def _ref_key(list_id: int, raw_entry_id: bytes) -> bytes:
    """The refs key of an entry id as stored in `entries` (u64 little-endian)."""
    return _LIST_ENTRY.pack(list_id, int.from_bytes(raw_entry_id, "little"))


class Store:
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
            # Index builds and lookups read at random; OS read-ahead would only evict pages.
            readahead=False,
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

    # -- transactions ------------------------------------------------------------------

    def _write(self) -> _WriteTxn:
        return _WriteTxn(self.env, self.path)

    def read(self) -> _Txn:
        return cast(_Txn, self.env.begin(buffers=False))

    def _bump_seq(self, txn: _Txn) -> int:
        raw = txn.get(b"seq", db=self._db("meta"))
        seq = (_U64.unpack(raw)[0] if raw else 0) + 1
        txn.put(b"seq", _U64.pack(seq), db=self._db("meta"))
        return seq

    def seq(self) -> int:
        with self.read() as txn:
            raw = txn.get(b"seq", db=self._db("meta"))
        return _U64.unpack(raw)[0] if raw else 0

    def _audit(self, txn: _Txn, actor: str, action: str, **fields: Any) -> None:
        seq = self._bump_seq(txn)
        record = {"at": time.time(), "actor": actor, "action": action, **fields}
        txn.put(_U64.pack(seq), json.dumps(record).encode(), db=self._db("audit"))

    def record_audit(self, actor: str, action: str, **fields: Any) -> None:
        """An audit event of its own (e.g. a suspected probe), never holding a hash."""
        with self._write() as txn:
            self._audit(txn, actor, action, **fields)

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest `limit` audit records, oldest first."""
        out: list[dict[str, Any]] = []
        with self.read() as txn:
            cur = txn.cursor(db=self._db("audit"))
            if cur.last():
                for _, raw in cur.iterprev():
                    out.append(json.loads(raw))
                    if len(out) >= limit:
                        break
        return out[::-1]

    # -- tenants -----------------------------------------------------------------------

    def add_tenant(self, name: str, role: Role) -> str:
        """Creates a tenant and returns its first bearer token (stored only as a hash)."""
        token = new_token()
        with self._write() as txn:
            if txn.get(name.encode(), db=self._db("tenants")) is not None:
                raise TenantExists(name)
            record = {"role": role.value, "created_at": time.time()}
            txn.put(name.encode(), json.dumps(record).encode(), db=self._db("tenants"))
            txn.put(token_hash(token), name.encode(), db=self._db("tokens"))
            self._audit(txn, "admin", "add-tenant", tenant=name, role=role.value)
        return token

    def issue_token(self, name: str) -> str:
        token = new_token()
        with self._write() as txn:
            if txn.get(name.encode(), db=self._db("tenants")) is None:
                raise TenantNotFound(name)
            txn.put(token_hash(token), name.encode(), db=self._db("tokens"))
            self._audit(txn, "admin", "issue-token", tenant=name)
        return token

    def revoke_tokens(self, name: str) -> int:
        """Revokes every token of the tenant; returns how many there were."""
        with self._write() as txn:
            if txn.get(name.encode(), db=self._db("tenants")) is None:
                raise TenantNotFound(name)
            cur = txn.cursor(db=self._db("tokens"))
            doomed = [key for key, owner in cur if owner == name.encode()]
            for key in doomed:
                txn.delete(key, db=self._db("tokens"))
            self._audit(txn, "admin", "revoke-tokens", tenant=name, count=len(doomed))
        return len(doomed)

    def tenants(self) -> list[tuple[Tenant, int]]:
        """Every tenant with its number of live tokens."""
        with self.read() as txn:
            live: dict[str, int] = {}
            for _, owner in txn.cursor(db=self._db("tokens")):
                live[owner.decode()] = live.get(owner.decode(), 0) + 1
            out = []
            for key, raw in txn.cursor(db=self._db("tenants")):
                tenant = _tenant(key.decode(), raw)
                out.append((tenant, live.get(tenant.name, 0)))
        return out

    def tenant_tokens(self) -> list[tuple[Tenant, list[bytes]]]:
        """Every tenant with the hashes of its live tokens (for replicas)."""
        with self.read() as txn:
            hashes: dict[str, list[bytes]] = {}
            for key, owner in txn.cursor(db=self._db("tokens")):
                hashes.setdefault(owner.decode(), []).append(key)
            return [
                (_tenant(key.decode(), raw), hashes.get(key.decode(), []))
                for key, raw in txn.cursor(db=self._db("tenants"))
            ]

    def mirror_tenants(
        self,
        tenants: Sequence[tuple[Tenant, Sequence[bytes]]],
        platforms: Mapping[str, PlatformSettings],
    ) -> bool:
        """Makes tenants, token hashes and platform settings equal to the primary's; True
        when anything changed."""
        wanted: dict[str, dict[bytes, bytes]] = {
            "tenants": {
                t.name.encode(): json.dumps(
                    {"role": t.role.value, "created_at": t.created_at}
                ).encode()
                for t, _ in tenants
            },
            "tokens": {h: t.name.encode() for t, hashes in tenants for h in hashes},
            "platforms": {
                name.encode(): json.dumps(
                    {"all_lists": p.all_lists, "lists": sorted(p.lists)}
                ).encode()
                for name, p in platforms.items()
            },
            "allow": {
                name.encode() + b"\0" + bytes((alg,)) + value: b""
                for name, p in platforms.items()
                for alg, value in p.allow
            },
        }
        with self._write() as txn:
            changed = set()
            for db_name, want in wanted.items():
                db = self._db(db_name)
                current = dict(txn.cursor(db=db))
                for key in current.keys() - want.keys():
                    txn.delete(key, db=db)
                    changed.add(db_name)
                for key, value in want.items():
                    if current.get(key) != value:
                        txn.put(key, value, db=db)
                        changed.add(db_name)
            if not changed:
                # Nothing to write: abort keeps the sync-on commit off the disk.
                raise _Unchanged
            if "allow" in changed:
                self._bump_allow(txn)
            self._bump_seq(txn)
        return bool(changed)

    def platform_settings(self) -> dict[str, PlatformSettings]:
        """Every platform's subscriptions and allow-list that differ from the default."""
        _, allow = self.allow_lists()
        subs = self.all_subscriptions()
        return {
            name: PlatformSettings(*subs.get(name, (True, [])), allow.get(name, []))
            for name in subs.keys() | allow.keys()
        }

    def authenticate(self, token: str) -> Tenant | None:
        with self.read() as txn:
            name = txn.get(token_hash(token), db=self._db("tokens"))
            if name is None:
                return None
            raw = txn.get(name, db=self._db("tenants"))
        return _tenant(name.decode(), raw) if raw is not None else None

    # -- lists -------------------------------------------------------------------------

    def create_list(
        self,
        name: str,
        owner: str,
        *,
        pdq_threshold: int,
        pdq_min_quality: int,
        flood: FloodPolicy = DEFAULT_FLOOD,
    ) -> ListMeta:
        now = time.time()
        with self._write() as txn:
            if txn.get(name.encode(), db=self._db("lists")) is not None:
                raise ListExists(name)
            raw = txn.get(b"next_list_id", db=self._db("meta"))
            list_id = _U32.unpack(raw)[0] if raw else 1
            txn.put(b"next_list_id", _U32.pack(list_id + 1), db=self._db("meta"))
            meta = ListMeta(
                id=list_id,
                name=name,
                owner=owner,
                version=0,
                counts=(0, 0, 0, 0),
                pdq_threshold=pdq_threshold,
                pdq_min_quality=pdq_min_quality,
                digest=ListDigest().to_bytes(),
                next_entry_id=1,
                created_at=now,
                updated_at=now,
                flood=flood,
            )
            txn.put(name.encode(), meta.to_json(), db=self._db("lists"))
            self._audit(txn, owner, "create-list", list=name)
        return meta

    def get_list(self, name: str) -> ListMeta | None:
        with self.read() as txn:
            raw = txn.get(name.encode(), db=self._db("lists"))
        return ListMeta.from_json(raw) if raw is not None else None

    def lists(self) -> list[ListMeta]:
        with self.read() as txn:
            return [ListMeta.from_json(raw) for _, raw in txn.cursor(db=self._db("lists"))]

    def apply_changes(self, list_name: str, changes: Changes, *, actor: str) -> ApplyOutcome:
        """Applies one checked batch atomically: retirements first, then upserts.

        A batch_id seen before answers with the version it made and changes nothing; the
        same batch_id with different content is refused (BatchIdReused). The batch must
        have no violations (the service refuses those before calling).
        """
        outcomes, error = self.apply_many(list_name, [changes], actor=actor)
        if error is not None:
            raise error
        return outcomes[0]

    def apply_many(
        self, list_name: str, batches: Sequence[Changes], *, actor: str
    ) -> tuple[list[ApplyOutcome], StoreError | None]:
        """Applies batches in order in one write transaction, each one whole.

        A bulk load commits a group of batches at once: LMDB then rewrites each touched
        page once per group rather than once per batch. Every batch still gets its own
        version, change record and batch_id. A batch refused by the store ends the group:
        the batches before it are committed and its error is returned.
        """
        outcomes: list[ApplyOutcome] = []
        error: StoreError | None = None
        with self._write() as txn:
            for changes in batches:
                try:
                    outcomes.append(self._apply_one(txn, list_name, changes, actor))
                except StoreFull:
                    raise
                except StoreError as exc:
                    error = exc
                    break
        return outcomes, error

    def _apply_one(self, txn: _Txn, list_name: str, changes: Changes, actor: str) -> ApplyOutcome:
        entries, refs = self._db("entries"), self._db("refs")
        raw = txn.get(list_name.encode(), db=self._db("lists"))
        if raw is None:
            raise ListNotFound(list_name)
        meta = ListMeta.from_json(raw)
        lid = meta.id
        batch_key = _U32.pack(lid) + changes.batch_id.encode("utf-8")
        seen = txn.get(batch_key, db=self._db("batches"))
        if seen is not None:
            if seen[8:] != changes.fingerprint:
                raise BatchIdReused(changes.batch_id)
            return ApplyOutcome(_U64.unpack(seen[:8])[0], True, 0, 0, meta.digest)
        expected = changes.expected_version
        if expected is not None and expected != meta.version:
            raise StaleVersion(meta.version)

        prefix = _U32.pack(lid)
        digest = ListDigest.from_bytes(meta.digest)
        counts = list(meta.counts)
        retire_algs, retire_slots = changes.retire_packed()
        retired = 0
        if changes.n_retirements:
            cur = txn.cursor(db=entries)
            for key, eid_raw in cur.getmulti(changes.retire_keys(prefix)):
                txn.delete(key, db=entries)
                old_ref = txn.pop(_ref_key(lid, eid_raw), db=refs)
                digest.remove_term(entry_term(key[4], key[5:], old_ref))
                counts[key[4] - 1] -= 1
                retired += 1

        algs, slots = changes.upsert_packed()
        n = changes.n_upserts
        first_id = meta.next_entry_id
        next_id = first_id + n
        ids = array("Q", range(first_id, next_id))
        # Every upsert is first tried as a new entry, in key order: for a bulk load that is
        # all there is to do, in two C-level calls.
        _, added = txn.cursor(db=entries).putmulti(
            changes.entry_pairs(prefix, first_id), overwrite=False
        )
        if added == n:
            cur = txn.cursor(db=refs)
            # New ids are the largest keys when this is the newest list: append them.
            tail = cur.key() if cur.last() else b""
            cur.putmulti(changes.ref_pairs(lid, first_id), append=tail < ref_key(lid, first_id))
            digest.add_term(changes.terms_sum())
            for alg in range(1, 5):
                counts[alg - 1] += algs.count(alg)
            upserted = n
        else:
            # Some hashes were listed already: they kept their entry id (and a new id was
            # skipped); give them the new reference where it differs.
            keys = changes.upsert_keys(prefix)
            stored = dict(txn.cursor(db=entries).getmulti(keys))
            new_refs = changes.references()
            upserted = 0
            for i, key in enumerate(keys):
                eid_raw = stored[key]
                eid = int.from_bytes(eid_raw, "little")
                if eid == first_id + i:
                    counts[algs[i] - 1] += 1
                else:
                    ids[i] = eid
                    old_ref = txn.get(_ref_key(lid, eid_raw), db=refs)
                    if old_ref == new_refs[i]:
                        continue
                    digest.remove_term(entry_term(key[4], key[5:], old_ref))
                txn.put(_ref_key(lid, eid_raw), new_refs[i], db=refs)
                digest.add_term(changes.term(i))
                upserted += 1

        now = time.time()
        version = meta.version + 1
        new_meta = replace(
            meta,
            version=version,
            counts=(counts[0], counts[1], counts[2], counts[3]),
            digest=digest.to_bytes(),
            next_entry_id=next_id,
            updated_at=now,
            last_batch_id=changes.batch_id,
        )
        record = ChangeRecord(
            lid,
            version,
            changes.batch_id,
            now,
            new_meta.digest,
            algs,
            slots,
            ids.tobytes(),
            *changes.reference_columns(),
            retire_algs,
            retire_slots,
        )
        txn.put(_LIST_ENTRY.pack(lid, version), record.encode(), db=self._db("changes"))
        txn.put(batch_key, _U64.pack(version) + changes.fingerprint, db=self._db("batches"))
        txn.put(list_name.encode(), new_meta.to_json(), db=self._db("lists"))
        self._audit(
            txn,
            actor,
            "apply-changes",
            list=list_name,
            batch_id=changes.batch_id,
            version=version,
            upserted=upserted,
            retired=retired,
        )
        return ApplyOutcome(version, False, upserted, retired, new_meta.digest)

    # -- match statistics ----------------------------------------------------------------

    def add_match_counts(
        self,
        counts: Mapping[tuple[str, int, str], tuple[int, float]],
        now: float | None = None,
    ) -> list[tuple[str, str]]:
        """Adds (tenant, list_id, reference_id) -> (matches, last match time) to the
        totals, and quarantines references whose match rate floods past their list's policy.

        Totals are kept per reference, every tenant summed (what the list owner reads), and
        per (list, reference, tenant) for that tenant's own reports and flood share: while
        the store holds more than one platform tenant, one tenant's matches count toward a
        flood at most up to half the list's min_matches (flood.py).

        Serving processes count in memory and flush here now and then: one write
        transaction per flush, never one per match. Returns the (list, reference)
        pairs quarantined by this flush. A replica never quarantines on its own: it
        follows its primary's quarantine events.
        """
        if not counts:
            return []
        now = time.time() if now is None else now
        by_ref: dict[tuple[int, str], list[tuple[str, int, float]]] = {}
        for (tenant, lid, ref), (n, last) in counts.items():
            by_ref.setdefault((lid, ref), []).append((tenant, n, last))
        stats, shares = self._db("stats"), self._db("matched")
        tripped: list[tuple[str, str]] = []
        with self._write() as txn:
            detect = txn.get(b"replica_of", db=self._db("meta")) is None
            lists = {m.id: m for m in self._all_lists(txn)}
            platforms = self._platform_count(txn)
            floods: dict[int, list[tuple[str, int, float]]] = {}
            for (lid, ref), by_tenant in by_ref.items():
                key = _U32.pack(lid) + ref.encode("utf-8")
                raw = txn.get(key, db=stats)
                meta = lists.get(lid)
                policy = meta.flood if meta is not None else DEFAULT_FLOOD
                cap = tenant_cap(policy, platforms)
                stat = (FloodStat.unpack(raw) if raw is not None else FloodStat()).rolled(
                    now, policy
                )
                total, newest, counted = 0, 0.0, 0
                for tenant, n, last in by_tenant:
                    share_key = _matched_key(lid, ref, tenant)
                    raw_share = txn.get(share_key, db=shares)
                    share = TenantShare() if raw_share is None else TenantShare.unpack(raw_share)
                    share, allowed = share.add(n, last, stat.window_start, cap)
                    txn.put(share_key, share.pack(), db=shares)
                    total, newest, counted = total + n, max(newest, last), counted + allowed
                stat, trip = stat.add(total, newest, now, policy, counted)
                txn.put(key, stat.pack(), db=stats)
                if trip and detect and txn.get(key, db=self._db("quarantine")) is None:
                    floods.setdefault(lid, []).append((ref, stat.window_count, stat.baseline))
            for lid, refs in floods.items():
                meta = lists[lid]
                self._quarantine(txn, meta, refs, now)
                tripped += [(meta.name, ref) for ref, _, _ in refs]
        return tripped

    def _platform_count(self, txn: _Txn) -> int:
        """How many platform tenants the store holds (a flood share is capped when > 1)."""
        return sum(
            1
            for _, raw in txn.cursor(db=self._db("tenants"))
            if json.loads(raw)["role"] == Role.PLATFORM.value
        )

    def _all_lists(self, txn: _Txn) -> list[ListMeta]:
        return [ListMeta.from_json(raw) for _, raw in txn.cursor(db=self._db("lists"))]

    def _quarantine(
        self,
        txn: _Txn,
        meta: ListMeta,
        refs: Sequence[tuple[str, int, float]],
        now: float,
    ) -> ListMeta:
        """Quarantines references as one change-log event (a new list version)."""
        prefix = _U32.pack(meta.id)
        for ref, window, baseline in refs:
            record = {"since": now, "window_matches": window, "baseline": baseline}
            txn.put(
                prefix + ref.encode("utf-8"), json.dumps(record).encode(), db=self._db("quarantine")
            )
        new_meta = self._log_event(txn, meta, QUARANTINE, [r for r, _, _ in refs], now)
        self._audit(
            txn,
            "flood-detection",
            "quarantine",
            list=meta.name,
            references=[r for r, _, _ in refs],
            version=new_meta.version,
        )
        return new_meta

    def _log_event(
        self, txn: _Txn, meta: ListMeta, kind: int, refs: list[str], now: float
    ) -> ListMeta:
        version = meta.version + 1
        new_meta = replace(meta, version=version, updated_at=now)
        record = ChangeRecord.event(meta.id, version, kind, refs, now, meta.digest)
        txn.put(_LIST_ENTRY.pack(meta.id, version), record.encode(), db=self._db("changes"))
        txn.put(meta.name.encode(), new_meta.to_json(), db=self._db("lists"))
        return new_meta

    def quarantined(self, list_id: int) -> dict[str, dict[str, Any]]:
        """reference_id -> {since, window_matches, baseline} of the list's quarantine."""
        return self._by_reference("quarantine", list_id)

    def _by_reference(self, db_name: str, list_id: int) -> dict[str, dict[str, Any]]:
        with self.read() as txn:
            return {
                key[4:].decode("utf-8"): json.loads(raw)
                for key, raw in _prefixed(txn, self._db(db_name), _U32.pack(list_id))
            }

    def apply_event(
        self,
        list_name: str,
        kind: int,
        refs: Sequence[str],
        *,
        actor: str,
        expected_version: int | None = None,
    ) -> tuple[int, int]:
        """Quarantines or releases references by hand (an owner's release, or a replica
        copying its primary). Returns (list version, references changed); nothing is
        logged when nothing changes, unless a replica must keep its primary's version."""
        db = self._db("quarantine")
        now = time.time()
        with self._write() as txn:
            raw = txn.get(list_name.encode(), db=self._db("lists"))
            if raw is None:
                raise ListNotFound(list_name)
            meta = ListMeta.from_json(raw)
            if expected_version is not None and expected_version != meta.version:
                raise StaleVersion(meta.version)
            prefix = _U32.pack(meta.id)
            changed = []
            for ref in dict.fromkeys(refs):
                key = prefix + ref.encode("utf-8")
                present = txn.get(key, db=db) is not None
                if kind == RELEASE and present:
                    txn.delete(key, db=db)
                    changed.append(ref)
                elif kind == QUARANTINE and not present:
                    record = {"since": now, "window_matches": 0, "baseline": 0.0}
                    txn.put(key, json.dumps(record).encode(), db=db)
                    changed.append(ref)
            if not changed and expected_version is None:
                return meta.version, 0
            new_meta = self._log_event(txn, meta, kind, changed, now)
            action = "release" if kind == RELEASE else "quarantine"
            self._audit(
                txn, actor, action, list=list_name, references=changed, version=new_meta.version
            )
        return new_meta.version, len(changed)

    def update_flood_policy(self, list_name: str, policy: FloodPolicy, *, actor: str) -> ListMeta:
        with self._write() as txn:
            raw = txn.get(list_name.encode(), db=self._db("lists"))
            if raw is None:
                raise ListNotFound(list_name)
            meta = replace(ListMeta.from_json(raw), flood=policy, updated_at=time.time())
            txn.put(list_name.encode(), meta.to_json(), db=self._db("lists"))
            self._audit(txn, actor, "update-list", list=list_name, flood=list(policy))
        return meta

    def mark_replica(self, primary: str) -> None:
        """Records that this store copies `primary`: it then never quarantines by itself."""
        with self._write() as txn:
            txn.put(b"replica_of", primary.encode(), db=self._db("meta"))

    # -- feedback and platform settings -------------------------------------------------

    def add_feedback(self, list_id: int, reference_id: str, reason: int, note: str) -> None:
        key = _U32.pack(list_id) + reference_id.encode("utf-8")
        db = self._db("feedback")
        with self._write() as txn:
            raw = txn.get(key, db=db)
            record = json.loads(raw) if raw is not None else {"counts": {}, "notes": []}
            record["counts"][str(reason)] = record["counts"].get(str(reason), 0) + 1
            if note:
                record["notes"] = [note, *record["notes"]][:MAX_NOTES]
            record["last"] = time.time()
            txn.put(key, json.dumps(record).encode(), db=db)

    def feedback(self, list_id: int) -> dict[str, dict[str, Any]]:
        """reference_id -> {counts by reason, newest notes, last} of the list's reports."""
        return self._by_reference("feedback", list_id)

    def subscriptions(self, tenant: str) -> tuple[bool, list[str]]:
        """(all_lists, lists) of a platform; every list unless it chose otherwise."""
        with self.read() as txn:
            raw = txn.get(tenant.encode(), db=self._db("platforms"))
        if raw is None:
            return True, []
        data = json.loads(raw)
        return bool(data["all_lists"]), list(data["lists"])

    def all_subscriptions(self) -> dict[str, tuple[bool, list[str]]]:
        with self.read() as txn:
            return {
                key.decode(): (bool(d["all_lists"]), list(d["lists"]))
                for key, d in ((k, json.loads(v)) for k, v in txn.cursor(db=self._db("platforms")))
            }

    def set_subscriptions(self, tenant: str, all_lists: bool, lists: Sequence[str]) -> None:
        with self._write() as txn:
            record = {"all_lists": all_lists, "lists": sorted(set(lists))}
            txn.put(tenant.encode(), json.dumps(record).encode(), db=self._db("platforms"))
            self._audit(
                txn, tenant, "set-subscriptions", all_lists=all_lists, lists=record["lists"]
            )

    def update_allow_list(
        self,
        tenant: str,
        add: Sequence[tuple[int, bytes]],
        remove: Sequence[tuple[int, bytes]],
    ) -> int:
        """Changes a platform's allow-list; returns its new size."""
        prefix = tenant.encode() + b"\0"
        db = self._db("allow")
        with self._write() as txn:
            for alg, value in remove:
                txn.delete(prefix + bytes((alg,)) + value, db=db)
            for alg, value in add:
                txn.put(prefix + bytes((alg,)) + value, b"", db=db)
            self._bump_allow(txn)
            self._audit(txn, tenant, "update-allow-list", added=len(add), removed=len(remove))
            size = sum(1 for _ in self._allow_keys(txn, prefix))
        return size

    def _bump_allow(self, txn: _Txn) -> None:
        raw = txn.get(b"allow_seq", db=self._db("meta"))
        n = (_U64.unpack(raw)[0] if raw else 0) + 1
        txn.put(b"allow_seq", _U64.pack(n), db=self._db("meta"))

    def _allow_keys(self, txn: _Txn, prefix: bytes) -> Iterator[bytes]:
        return (key for key, _ in _prefixed(txn, self._db("allow"), prefix))

    def allow_list(self, tenant: str) -> list[tuple[int, bytes]]:
        prefix = tenant.encode() + b"\0"
        with self.read() as txn:
            return [(k[len(prefix)], k[len(prefix) + 1 :]) for k in self._allow_keys(txn, prefix)]

    def allow_lists(self) -> tuple[int, dict[str, list[tuple[int, bytes]]]]:
        """(change counter, every platform's allow-list), from one snapshot."""
        out: dict[str, list[tuple[int, bytes]]] = {}
        with self.read() as txn:
            raw = txn.get(b"allow_seq", db=self._db("meta"))
            for key in txn.cursor(db=self._db("allow")).iternext(values=False):
                name, _, rest = key.partition(b"\0")
                out.setdefault(name.decode(), []).append((rest[0], rest[1:]))
        return (_U64.unpack(raw)[0] if raw else 0), out

    def allow_seq(self) -> int:
        with self.read() as txn:
            raw = txn.get(b"allow_seq", db=self._db("meta"))
        return _U64.unpack(raw)[0] if raw else 0

    def has_matched(self, tenant: str, list_id: int, reference_id: str) -> bool:
        """Whether `tenant` itself matched the reference in the list (flushed counts)."""
        with self.read() as txn:
            key = _matched_key(list_id, reference_id, tenant)
            return txn.get(key, db=self._db("matched")) is not None

    def match_counts(self, list_id: int) -> list[tuple[str, int, float]]:
        """(reference_id, matches, last match time) for every reference that matched."""
        with self.read() as txn:
            stats = _prefixed(txn, self._db("stats"), _U32.pack(list_id))
            return [
                (key[4:].decode("utf-8"), stat.total, stat.last)
                for key, stat in ((k, FloodStat.unpack(v)) for k, v in stats)
            ]

    # -- reading for the indexes -------------------------------------------------------

    def changes_since(self, list_id: int, version: int, limit: int = 1000) -> list[ChangeRecord]:
        """Committed batches of the list with a version above `version`, in order."""
        out: list[ChangeRecord] = []
        start = _LIST_ENTRY.pack(list_id, version + 1)
        with self.read() as txn:
            for key, raw in _prefixed(txn, self._db("changes"), _U32.pack(list_id), start):
                if len(out) >= limit:
                    break
                out.append(ChangeRecord.decode(list_id, _LIST_ENTRY.unpack(key)[1], raw))
        return out

    def snapshot_entries(
        self, list_name: str, chunk: int = 65536
    ) -> tuple[ListMeta, Iterator[tuple[bytes, bytes, bytes, bytes, bytes]]] | None:
        """The list's metadata and, in packed chunks (algorithms, 32-byte slots, entry ids
        as u64 LE, reference end offsets as u32 LE, references as UTF-8), every entry it
        holds, all from one consistent snapshot. Consume the iterator fully or close it."""
        txn = self.read()
        raw = txn.get(list_name.encode(), db=self._db("lists"))
        if raw is None:
            txn.abort()
            return None
        meta = ListMeta.from_json(raw)

        def with_refs(
            algs: bytearray, slots: bytearray, ids: bytearray, keys: list[bytes]
        ) -> tuple[bytes, bytes, bytes, bytes, bytes]:
            found = dict(txn.cursor(db=self._db("refs")).getmulti(keys))
            refs = [found.get(key, b"") for key in keys]
            ends = array("I", accumulate(map(len, refs)))
            return bytes(algs), bytes(slots), bytes(ids), ends.tobytes(), b"".join(refs)

        def chunks() -> Iterator[tuple[bytes, bytes, bytes, bytes, bytes]]:
            try:
                entries = _prefixed(txn, self._db("entries"), _U32.pack(meta.id))
                algs, slots, ids = bytearray(), bytearray(), bytearray()
                keys: list[bytes] = []
                for key, eid in entries:
                    algs.append(key[4])
                    slots += key[5:].ljust(SLOT, b"\0")
                    ids += eid
                    keys.append(_ref_key(meta.id, eid))
                    if len(algs) >= chunk:
                        yield with_refs(algs, slots, ids, keys)
                        algs, slots, ids, keys = bytearray(), bytearray(), bytearray(), []
                if algs:
                    yield with_refs(algs, slots, ids, keys)
            finally:
                txn.abort()

        return meta, chunks()

    def references(self, keys: Sequence[tuple[int, int]]) -> list[str | None]:
        """Reference IDs of (list_id, entry_id) pairs; None for an entry retired since."""
        with self.read() as txn:
            out = []
            for lid, eid in keys:
                raw = txn.get(ref_key(lid, eid), db=self._db("refs"))
                out.append(raw.decode("utf-8") if raw is not None else None)
        return out


def _matched_key(list_id: int, reference_id: str, tenant: str) -> bytes:
    """The `matched` key: the reference's length first, so no reference ID and tenant name
    can run into another pair's."""
    ref = reference_id.encode("utf-8")
    return _LIST_REF.pack(list_id, len(ref)) + ref + tenant.encode("utf-8")


def _prefixed(
    txn: _Txn, db: Any, prefix: bytes, start: bytes | None = None
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of every key that starts with `prefix`, from `start` (or the prefix)."""
    cur = txn.cursor(db=db)
    if cur.set_range(start if start is not None else prefix):
        for key, value in cur:
            if not key.startswith(prefix):
                break
            yield key, value


class _WriteTxn:
    """A write transaction that maps a full disk or map to StoreFull and aborts cleanly."""

    def __init__(self, env: lmdb.Environment, path: Path) -> None:
        self.env = env
        self.path = path
        self.txn: _Txn | None = None

    def __enter__(self) -> _Txn:
        self.txn = cast(_Txn, self.env.begin(write=True))
        return self.txn

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        assert self.txn is not None
        if exc is not None:
            self.txn.abort()
            if isinstance(exc, _Unchanged):
                return True
            if _is_full(exc, self.path):
                raise StoreFull(
                    "the store is out of space; nothing of this write was kept"
                ) from exc
            return False
        try:
            self.txn.commit()
        except lmdb.Error as err:
            if _is_full(err, self.path):
                raise StoreFull(
                    "the store is out of space; nothing of this write was kept"
                ) from err
            raise
        return False


class _Unchanged(Exception):
    """Ends a write transaction that found nothing to change, without committing."""


def _is_full(exc: BaseException, path: Path) -> bool:
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


def _tenant(name: str, raw: bytes) -> Tenant:
    data = json.loads(raw)
    return Tenant(name=name, role=Role(data["role"]), created_at=data["created_at"])

"""Lists, their entries and the batches that change them (each one change-log record)."""

from __future__ import annotations

import time
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import replace
from itertools import accumulate

from hashmatch.client.digest import ListDigest
from hashmatch.server.core import SLOT, Changes, entry_pairs, entry_term, stored_terms_sum
from hashmatch.server.store.changelog import EXPOSE, ChangeRecord
from hashmatch.server.store.env import StoreBase, Txn, prefixed
from hashmatch.server.store.errors import (
    BatchIdReused,
    BatchRefused,
    ListExists,
    ListNotFound,
    StaleVersion,
    StoreError,
    StoreFull,
)
from hashmatch.server.store.keys import (
    LIST_ENTRY,
    U32,
    U64,
    batch_key,
    change_key,
    list_prefix,
    ref_key,
    ref_key_raw,
)
from hashmatch.server.store.records import (
    ALGORITHMS,
    DEFAULT_FLOOD,
    ApplyOutcome,
    FloodPolicy,
    ListMeta,
)

# What one read of the change log returns at most, in record bytes (see changes_since).
CHANGES_PAGE_BYTES = 64 << 20


class Lists(StoreBase):
    def create_list(
        self,
        name: str,
        owner: str,
        *,
        pdq_threshold: int,
        pdq_min_quality: int,
        flood: FloodPolicy = DEFAULT_FLOOD,
        exposed_label_keys: tuple[str, ...] = (),
        video_query_percent: int = 80,
        video_listed_percent: int = 0,
    ) -> ListMeta:
        now = time.time()
        with self._write() as txn:
            if txn.get(name.encode(), db=self._db("lists")) is not None:
                raise ListExists(name)
            raw = txn.get(b"next_list_id", db=self._db("meta"))
            list_id = U32.unpack(raw)[0] if raw else 1
            txn.put(b"next_list_id", U32.pack(list_id + 1), db=self._db("meta"))
            meta = ListMeta(
                id=list_id,
                name=name,
                owner=owner,
                version=0,
                counts=(0,) * ALGORITHMS,
                pdq_threshold=pdq_threshold,
                pdq_min_quality=pdq_min_quality,
                digest=ListDigest().to_bytes(),
                next_entry_id=1,
                created_at=now,
                updated_at=now,
                flood=flood,
                exposed_label_keys=exposed_label_keys,
                video_query_percent=video_query_percent,
                video_listed_percent=video_listed_percent,
            )
            txn.put(name.encode(), meta.to_json(), db=self._db("lists"))
            extra = {"exposed_label_keys": list(exposed_label_keys)} if exposed_label_keys else {}
            self._audit(txn, owner, "create-list", list=name, **extra)
        return meta

    def get_list(self, name: str) -> ListMeta | None:
        with self.read() as txn:
            raw = txn.get(name.encode(), db=self._db("lists"))
        return ListMeta.from_json(raw) if raw is not None else None

    def lists(self) -> list[ListMeta]:
        with self.read() as txn:
            return [ListMeta.from_json(raw) for _, raw in txn.cursor(db=self._db("lists"))]

    def _all_lists(self, txn: Txn) -> list[ListMeta]:
        return [ListMeta.from_json(raw) for _, raw in txn.cursor(db=self._db("lists"))]

    def update_list(
        self,
        list_name: str,
        *,
        actor: str,
        flood: FloodPolicy | None = None,
        exposed_label_keys: tuple[str, ...] | None = None,
        expected_version: int | None = None,
    ) -> ListMeta:
        """Changes a list's flood policy and/or its exposed label keys in one transaction.

        A change of the exposed keys is a change-log event (a new version, the same
        digest), so every serving process, replica and WatchChanges reader follows it, and
        a verdict's list_version says which keys were shown. A replica copying its
        primary's event passes `expected_version` (StaleVersion when it does not follow).
        """
        with self._write() as txn:
            raw = txn.get(list_name.encode(), db=self._db("lists"))
            if raw is None:
                raise ListNotFound(list_name)
            meta = ListMeta.from_json(raw)
            if expected_version is not None and expected_version != meta.version:
                raise StaleVersion(meta.version)
            now = time.time()
            details: dict[str, object] = {}
            if flood is not None:
                meta = replace(meta, flood=flood)
                details["flood"] = list(flood)
            exposed = exposed_label_keys
            # A replica logs its primary's event even when it changes nothing here: the
            # versions must stay the primary's.
            if exposed is not None and (
                exposed != meta.exposed_label_keys or expected_version is not None
            ):
                version = meta.version + 1
                meta = replace(meta, version=version, exposed_label_keys=exposed)
                record = ChangeRecord.event(
                    meta.id, version, EXPOSE, list(exposed), now, meta.digest
                )
                txn.put(change_key(meta.id, version), record.encode(), db=self._db("changes"))
                details["exposed_label_keys"] = list(exposed)
                details["version"] = version
            meta = replace(meta, updated_at=now)
            txn.put(list_name.encode(), meta.to_json(), db=self._db("lists"))
            self._audit(txn, actor, "update-list", list=list_name, **details)
        return meta

    def apply_changes(self, list_name: str, changes: Changes, *, actor: str) -> ApplyOutcome:
        """Applies one checked batch atomically: retirements first, then upserts.

        A batch_id seen before answers with the version it made and changes nothing; the
        same batch_id with different content is refused (BatchIdReused). The batch must
        have no violations (the service refuses those before calling).
        """
        try:
            return self.apply_many(list_name, [changes], actor=actor)[0]
        except BatchRefused as refused:
            raise refused.cause from None

    def apply_many(
        self, list_name: str, batches: Sequence[Changes], *, actor: str
    ) -> list[ApplyOutcome]:
        """Applies batches in order in one write transaction, each one whole.

        A bulk load commits a group of batches at once: LMDB then rewrites each touched
        page once per group rather than once per batch. Every batch still gets its own
        version, change record and batch_id. A batch refused by the store ends the group:
        the batches before it are committed, then BatchRefused says what was applied and
        why the next one was not.
        """
        outcomes: list[ApplyOutcome] = []
        error: StoreError | None = None
        with self._write() as txn:
            inserted = self._insert_new_entries(txn, list_name, batches)
            for changes in batches:
                try:
                    outcomes.append(self._apply_one(txn, list_name, changes, actor, inserted))
                except StoreFull:
                    raise
                except StoreError as exc:
                    error = exc
                    break
        if error is not None:
            raise BatchRefused(outcomes, error)
        return outcomes

    def _insert_new_entries(self, txn: Txn, list_name: str, batches: Sequence[Changes]) -> bool:
        """For a group of new upserts only (a bulk load): inserts every batch's entries in
        one pass in key order, under the ids `_apply_one` gives them, and says whether it
        did; then `_apply_one` skips its own insert. When anything could make `_apply_one`
        decide otherwise (a retirement, a batch_id seen before or used twice, a version the
        batch does not expect, a hash listed already or twice), nothing is written here.

        Why: entries are keyed by hash, so each batch's inserts land on pages all over
        the B-tree; in key order across the whole group, each page is visited once, in
        order (about three times fewer page copies and seeks at ten million entries)."""
        if len(batches) < 2 or any(c.n_retirements for c in batches):
            return False
        ids = [c.batch_id for c in batches]
        if len(set(ids)) < len(ids):
            return False
        raw = txn.get(list_name.encode(), db=self._db("lists"))
        if raw is None:
            return False
        meta = ListMeta.from_json(raw)
        lid, seen = meta.id, self._db("batches")
        if txn.cursor(db=seen).getmulti([batch_key(lid, i) for i in ids]):
            return False
        for k, changes in enumerate(batches):
            expected = changes.expected_version
            if expected is not None and expected != meta.version + k:
                return False
        pairs = entry_pairs(batches, list_prefix(lid), meta.next_entry_id)
        # A child transaction: what it wrote is dropped when the group turns out not new.
        group = self.env.begin(write=True, parent=txn)
        try:
            _, added = group.cursor(db=self._db("entries")).putmulti(pairs, overwrite=False)
        except BaseException:
            group.abort()
            raise
        if added == len(pairs):
            group.commit()
            return True
        group.abort()
        return False

    def _apply_one(
        self, txn: Txn, list_name: str, changes: Changes, actor: str, inserted: bool = False
    ) -> ApplyOutcome:
        entries, refs = self._db("entries"), self._db("refs")
        raw = txn.get(list_name.encode(), db=self._db("lists"))
        if raw is None:
            raise ListNotFound(list_name)
        meta = ListMeta.from_json(raw)
        lid = meta.id
        batch = batch_key(lid, changes.batch_id)
        seen = txn.get(batch, db=self._db("batches"))
        if seen is not None:
            if seen[8:] != changes.fingerprint:
                raise BatchIdReused(changes.batch_id)
            return ApplyOutcome(U64.unpack(seen[:8])[0], True, 0, 0, meta.digest)
        expected = changes.expected_version
        if expected is not None and expected != meta.version:
            raise StaleVersion(meta.version)

        prefix = list_prefix(lid)
        digest = ListDigest.from_bytes(meta.digest)
        counts = list(meta.counts)
        retire_algs, retire_slots = changes.retire_packed()
        retired = 0
        if changes.n_retirements:
            cur = txn.cursor(db=entries)
            gone_keys, gone_refs = [], []
            for key, eid_raw in cur.getmulti(changes.retire_keys(prefix)):
                txn.delete(key, db=entries)
                gone_keys.append(key)
                gone_refs.append(txn.pop(ref_key_raw(lid, eid_raw), db=refs) or b"")
                counts[key[4] - 1] -= 1
            retired = len(gone_keys)
            # One call into the core for the digest terms of every retired entry.
            digest.remove_term(stored_terms_sum(gone_keys, gone_refs, len(prefix)))

        algs, slots = changes.upsert_packed()
        n = changes.n_upserts
        first_id = meta.next_entry_id
        next_id = first_id + n
        ids = array("Q", range(first_id, next_id))
        # Every upsert is first tried as a new entry, in key order: for a bulk load that is
        # all there is to do, in two C-level calls.
        if inserted:
            added = n  # by _insert_new_entries, under these ids
        else:
            _, added = txn.cursor(db=entries).putmulti(
                entry_pairs([changes], prefix, first_id), overwrite=False
            )
        if added == n:
            cur = txn.cursor(db=refs)
            # New ids are the largest keys when this is the newest list: append them.
            tail = cur.key() if cur.last() else b""
            cur.putmulti(changes.ref_pairs(lid, first_id), append=tail < ref_key(lid, first_id))
            digest.add_term(changes.terms_sum())
            for alg in range(1, ALGORITHMS + 1):
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
                    old_ref = txn.get(ref_key_raw(lid, eid_raw), db=refs)
                    if old_ref == new_refs[i]:
                        continue
                    digest.remove_term(entry_term(key[4], key[5:], old_ref))
                txn.put(ref_key_raw(lid, eid_raw), new_refs[i], db=refs)
                digest.add_term(changes.term(i))
                upserted += 1

        now = time.time()
        version = meta.version + 1
        new_meta = replace(
            meta,
            version=version,
            counts=tuple(counts),
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
        txn.put(change_key(lid, version), record.encode(), db=self._db("changes"))
        txn.put(batch, U64.pack(version) + changes.fingerprint, db=self._db("batches"))
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

    def changes_since(
        self, list_id: int, version: int, limit: int = 1000, max_bytes: int = CHANGES_PAGE_BYTES
    ) -> list[ChangeRecord]:
        """Committed batches of the list with a version above `version`, in order: at most
        `limit`, and no more once they hold `max_bytes` (at least one). A whole file is
        published as thousands of batches at once; a reader pages through them."""
        out: list[ChangeRecord] = []
        size = 0
        start = change_key(list_id, version + 1)
        with self.read() as txn:
            for key, raw in prefixed(txn, self._db("changes"), list_prefix(list_id), start):
                if len(out) >= limit or (out and size >= max_bytes):
                    break
                size += len(raw)
                out.append(ChangeRecord.decode(list_id, LIST_ENTRY.unpack(key)[1], raw))
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
                entries = prefixed(txn, self._db("entries"), list_prefix(meta.id))
                algs, slots, ids = bytearray(), bytearray(), bytearray()
                keys: list[bytes] = []
                for key, eid in entries:
                    algs.append(key[4])
                    slots += key[5:].ljust(SLOT, b"\0")
                    ids += eid
                    keys.append(ref_key_raw(meta.id, eid))
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

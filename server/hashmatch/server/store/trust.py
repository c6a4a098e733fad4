"""Match statistics, flood quarantine and false-positive feedback per reference."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from hashmatch.server.store.changelog import QUARANTINE, RELEASE, ChangeRecord
from hashmatch.server.store.env import Txn, prefixed
from hashmatch.server.store.errors import (
    ListNotFound,
    StaleVersion,
)
from hashmatch.server.store.keys import change_key, list_prefix, matched_key, reference_key
from hashmatch.server.store.lists import Lists
from hashmatch.server.store.records import (
    DEFAULT_FLOOD,
    FloodPolicy,
    FloodStat,
    ListMeta,
    Role,
    TenantShare,
)


class FloodJudge(Protocol):
    """Decides, for one reference, what a flush's matches do to its statistics and whether
    they trip a quarantine (matching/flood.py's `judge`): the store keeps the records and
    carries out the verdict, it does not make it."""

    def __call__(
        self,
        stat: FloodStat,
        shares: list[tuple[TenantShare, int, float]],
        policy: FloodPolicy,
        platforms: int,
        now: float,
    ) -> tuple[FloodStat, list[TenantShare], bool]: ...


# Notes kept per reference in the feedback a list owner reads.
MAX_NOTES = 10


class Trust(Lists):
    def add_match_counts(
        self,
        counts: Mapping[tuple[str, int, str], tuple[int, float]],
        judge: FloodJudge,
        now: float | None = None,
    ) -> list[tuple[str, str]]:
        """Adds (tenant, list_id, reference_id) -> (matches, last match time) to the
        totals, and quarantines references whose match rate floods past their list's policy.

        Totals are kept per reference, every tenant summed (what the list owner reads), and
        per (list, reference, tenant) for that tenant's own reports and flood share: while
        the store holds more than one platform tenant, one tenant's matches count toward a
        flood at most up to half the list's min_matches. `judge` decides (flood.py); the
        store reads and writes the records and quarantines what it tripped.

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
                key = reference_key(lid, ref)
                raw = txn.get(key, db=stats)
                meta = lists.get(lid)
                keys = [matched_key(lid, ref, tenant) for tenant, _, _ in by_tenant]
                before = [txn.get(k, db=shares) for k in keys]
                stat, new_shares, trip = judge(
                    FloodStat.unpack(raw) if raw is not None else FloodStat(),
                    [
                        (TenantShare() if b is None else TenantShare.unpack(b), n, last)
                        for b, (_, n, last) in zip(before, by_tenant, strict=True)
                    ],
                    meta.flood if meta is not None else DEFAULT_FLOOD,
                    platforms,
                    now,
                )
                for k, share in zip(keys, new_shares, strict=True):
                    txn.put(k, share.pack(), db=shares)
                txn.put(key, stat.pack(), db=stats)
                if trip and detect and txn.get(key, db=self._db("quarantine")) is None:
                    floods.setdefault(lid, []).append((ref, stat.window_count, stat.baseline))
            for lid, refs in floods.items():
                meta = lists[lid]
                self._quarantine(txn, meta, refs, now)
                tripped += [(meta.name, ref) for ref, _, _ in refs]
        return tripped

    def _platform_count(self, txn: Txn) -> int:
        """How many platform tenants the store holds (a flood share is capped when > 1)."""
        return sum(
            1
            for _, raw in txn.cursor(db=self._db("tenants"))
            if json.loads(raw)["role"] == Role.PLATFORM.value
        )

    def _quarantine(
        self,
        txn: Txn,
        meta: ListMeta,
        refs: Sequence[tuple[str, int, float]],
        now: float,
    ) -> ListMeta:
        """Quarantines references as one change-log event (a new list version)."""
        for ref, window, baseline in refs:
            record = {"since": now, "window_matches": window, "baseline": baseline}
            txn.put(
                reference_key(meta.id, ref), json.dumps(record).encode(), db=self._db("quarantine")
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
        self, txn: Txn, meta: ListMeta, kind: int, refs: list[str], now: float
    ) -> ListMeta:
        version = meta.version + 1
        new_meta = replace(meta, version=version, updated_at=now)
        record = ChangeRecord.event(meta.id, version, kind, refs, now, meta.digest)
        txn.put(change_key(meta.id, version), record.encode(), db=self._db("changes"))
        txn.put(meta.name.encode(), new_meta.to_json(), db=self._db("lists"))
        return new_meta

    def quarantined(self, list_id: int) -> dict[str, dict[str, Any]]:
        """reference_id -> {since, window_matches, baseline} of the list's quarantine."""
        return self._by_reference("quarantine", list_id)

    def _by_reference(self, db_name: str, list_id: int) -> dict[str, dict[str, Any]]:
        with self.read() as txn:
            return {
                key[4:].decode("utf-8"): json.loads(raw)
                for key, raw in prefixed(txn, self._db(db_name), list_prefix(list_id))
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
            changed = []
            for ref in dict.fromkeys(refs):
                key = reference_key(meta.id, ref)
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

    def add_feedback(self, list_id: int, reference_id: str, reason: int, note: str) -> None:
        key = reference_key(list_id, reference_id)
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

    def has_matched(self, tenant: str, list_id: int, reference_id: str) -> bool:
        """Whether `tenant` itself matched the reference in the list (flushed counts)."""
        with self.read() as txn:
            key = matched_key(list_id, reference_id, tenant)
            return txn.get(key, db=self._db("matched")) is not None

    def match_counts(self, list_id: int) -> list[tuple[str, int, float]]:
        """(reference_id, matches, last match time) for every reference that matched."""
        with self.read() as txn:
            stats = prefixed(txn, self._db("stats"), list_prefix(list_id))
            return [
                (key[4:].decode("utf-8"), stat.total, stat.last)
                for key, stat in ((k, FloodStat.unpack(v)) for k, v in stats)
            ]

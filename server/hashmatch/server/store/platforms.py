"""A platform's settings: which lists apply to it, and its allow-list."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

from hashmatch.server.store.env import StoreBase, Txn, prefixed
from hashmatch.server.store.keys import U64, allow_prefix
from hashmatch.server.store.records import (
    PlatformSettings,
)


class Platforms(StoreBase):
    def platform_settings(self) -> dict[str, PlatformSettings]:
        """Every platform's subscriptions and allow-list that differ from the default."""
        _, allow = self.allow_lists()
        subs = self.all_subscriptions()
        return {
            name: PlatformSettings(*subs.get(name, (True, [])), allow.get(name, []))
            for name in subs.keys() | allow.keys()
        }

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
        prefix = allow_prefix(tenant)
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

    def _allow_keys(self, txn: Txn, prefix: bytes) -> Iterator[bytes]:
        return (key for key, _ in prefixed(txn, self._db("allow"), prefix))

    def allow_list(self, tenant: str) -> list[tuple[int, bytes]]:
        prefix = allow_prefix(tenant)
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
        return (U64.unpack(raw)[0] if raw else 0), out

    def allow_seq(self) -> int:
        with self.read() as txn:
            raw = txn.get(b"allow_seq", db=self._db("meta"))
        return U64.unpack(raw)[0] if raw else 0

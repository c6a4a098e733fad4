"""Tenants and their bearer tokens (stored only as SHA-256 hashes)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence

from hashmatch.server.store.env import StoreBase, Unchanged
from hashmatch.server.store.errors import (
    TenantExists,
    TenantNotFound,
)
from hashmatch.server.store.keys import allow_prefix
from hashmatch.server.store.records import (
    PlatformSettings,
    Role,
    Tenant,
    new_token,
    tenant_from_json,
    token_hash,
)


class Tenants(StoreBase):
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
                tenant = tenant_from_json(key.decode(), raw)
                out.append((tenant, live.get(tenant.name, 0)))
        return out

    def tenant_tokens(self) -> list[tuple[Tenant, list[bytes]]]:
        """Every tenant with the hashes of its live tokens (for replicas)."""
        with self.read() as txn:
            hashes: dict[str, list[bytes]] = {}
            for key, owner in txn.cursor(db=self._db("tokens")):
                hashes.setdefault(owner.decode(), []).append(key)
            return [
                (tenant_from_json(key.decode(), raw), hashes.get(key.decode(), []))
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
                allow_prefix(name) + bytes((alg,)) + value: b""
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
                raise Unchanged
            if "allow" in changed:
                self._bump_allow(txn)
            self._bump_seq(txn)
        return bool(changed)

    def authenticate(self, token: str) -> Tenant | None:
        with self.read() as txn:
            name = txn.get(token_hash(token), db=self._db("tokens"))
            if name is None:
                return None
            raw = txn.get(name, db=self._db("tenants"))
        return tenant_from_json(name.decode(), raw) if raw is not None else None

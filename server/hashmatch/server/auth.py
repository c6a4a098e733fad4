"""Bearer-token lookups of the serving path, cached until the store's next commit.

`Store.authenticate` costs a SHA-256, an LMDB read transaction with two reads and a JSON
decode per call. Tenants and tokens change rarely, so a serving process keeps the tenants
it has seen, keyed by the token's SHA-256 (the token itself is not kept), for as long as
the store's commit sequence (`Store.seq()`, bumped by every write, token revocations
included, from any process) stays where it was when they were read. Each call still
reads the sequence, so a revoked token is refused on the very next call.

Unknown tokens are not cached (each costs a full lookup, as without the cache), and the
cache is bounded, so random tokens cannot grow it.
"""

from __future__ import annotations

import hashlib

from hashmatch.server.store import Store, Tenant

MAX_CACHED = 4096


class TenantCache:
    """`lookup(token) -> Tenant | None`, equal to `store.authenticate` at the current seq."""

    def __init__(self, store: Store, max_cached: int = MAX_CACHED) -> None:
        self.store = store
        self.max_cached = max_cached
        # (seq the entries were read at, token hash -> tenant). Replaced, never rewound:
        # a lookup uses entries only when they were read at the seq it just read itself.
        self._generation: tuple[int, dict[bytes, Tenant]] = (-1, {})

    def __call__(self, token: str) -> Tenant | None:
        seq = self.store.seq()
        generation = self._generation
        if generation[0] != seq:
            generation = (seq, {})
            self._generation = generation
        tenants = generation[1]
        key = hashlib.sha256(token.encode("utf-8")).digest()
        tenant = tenants.get(key)
        if tenant is not None:
            return tenant
        # Read after `seq`: at least as new as the generation it is filed under. A tenant
        # read from a newer snapshot is filed under an older seq that no later call uses.
        tenant = self.store.authenticate(token)
        if tenant is not None and len(tenants) < self.max_cached:
            tenants[key] = tenant
        return tenant

"""Bearer-token lookups of the serving path, cached until the store's next commit.

`Store.authenticate` costs a SHA-256, an LMDB read transaction with two reads and a JSON
decode per call. Tenants and tokens change rarely, so a serving process keeps the tenants
it has seen, keyed by the token's SHA-256 (the token itself is not kept), for as long as
the store's commit sequence (`Store.seq()`, bumped by every write, token revocations
included, from any process) stays where it was when they were read. Each call still
reads the sequence, so a revoked token is refused on the very next call.

Unknown tokens are not cached, and the cache is bounded, so random tokens cannot grow it;
a peer whose tokens keep failing is refused without a lookup for a while
(`BadTokenThrottle`).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from hashmatch.server.errors import Unauthenticated
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
        # Hashes of tokens that authenticated before, whatever the seq since: a throttled
        # peer's known tokens are still looked up after a commit emptied the generation,
        # so a neighbour behind the same address guessing tokens cannot lock them out.
        self._known: OrderedDict[bytes, None] = OrderedDict()

    def __call__(self, token: str, *, cached_only: bool = False) -> Tenant | None:
        """The token's tenant; with `cached_only`, None unless it authenticated before (a
        throttled peer's known tokens still work, its guesses cost no store read)."""
        seq = self.store.seq()
        generation = self._generation
        if generation[0] != seq:
            generation = (seq, {})
            self._generation = generation
        tenants = generation[1]
        key = hashlib.sha256(token.encode("utf-8")).digest()
        tenant = tenants.get(key)
        if tenant is not None or (cached_only and key not in self._known):
            return tenant
        # Read after `seq`: at least as new as the generation it is filed under. A tenant
        # read from a newer snapshot is filed under an older seq that no later call uses.
        tenant = self.store.authenticate(token)
        if tenant is not None:
            if len(tenants) < self.max_cached:
                tenants[key] = tenant
            self._known[key] = None
            self._known.move_to_end(key)
            if len(self._known) > self.max_cached:
                self._known.popitem(last=False)
        else:
            self._known.pop(key, None)
        return tenant


# Failed authentications a peer may make per second (and at once) before its calls are
# refused without a lookup: a flood of guessed tokens costs a counter, not a store read.
BAD_TOKEN_RATE = 10.0
BAD_TOKEN_BURST = 50.0
# Peers tracked at once; the least recently failing is forgotten first.
MAX_PEERS = 10_000


def peer_host(peer: str) -> str:
    """'ipv4:127.0.0.1:5555' / 'ipv6:[::1]:5555' -> the address without the port."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return rest.rsplit(":", 1)[0]
    return peer


class BadTokenThrottle:
    """A token bucket per peer address, drawn on by failed authentications only."""

    def __init__(
        self,
        rate: float = BAD_TOKEN_RATE,
        burst: float = BAD_TOKEN_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        # peer -> (tokens, stamp); insertion order is recency of failure.
        self._peers: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def blocked(self, peer: str) -> bool:
        """True while the peer has used up its failures (checked before a lookup)."""
        entry = self._peers.get(peer)
        if entry is None:
            return False
        tokens, stamp = entry
        return tokens + (self.clock() - stamp) * self.rate < 1.0

    def failed(self, peer: str) -> None:
        now = self.clock()
        tokens, stamp = self._peers.pop(peer, (self.burst, now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate) - 1.0
        self._peers[peer] = (tokens, now)
        if len(self._peers) > MAX_PEERS:
            self._peers.popitem(last=False)


def bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    """The token of the `authorization: Bearer <token>` entry, or Unauthenticated."""
    header = ""
    for key, value in metadata:
        if key == "authorization":
            header = value if isinstance(value, str) else value.decode("latin-1")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("missing bearer token (metadata 'authorization: Bearer <token>')")
    return token.strip()

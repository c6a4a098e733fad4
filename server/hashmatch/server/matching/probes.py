"""Detects a platform walking the match oracle to recover a listed PDQ hash.

Someone holding a near-duplicate of a listed image can flip bits and watch the verdict:
at the edge of the match threshold each answer gives away a bit of the listed hash. The
tell is a NO_MATCH query a few bits from a query of the same tenant that just matched —
ordinary traffic does not do that: re-uploads and near-duplicates of listed material
match, unrelated images are far from anything that matched, and the dihedral variants of
one image are 100+ bits apart. After enough such near-misses in a window the tenant's PDQ
queries are refused for a cooldown, an audit event is written, and a metric counts it.

Only hashes that matched are kept, in memory, for the window; a query that did not match
is compared and dropped, never kept.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProbePolicy:
    # Bits between a NO_MATCH query and an earlier matched one that count as a near-miss.
    radius: int = 8
    # Near-misses within `window` seconds that flag the tenant.
    flag_after: int = 8
    window: float = 3600.0
    # Seconds a flagged tenant's PDQ queries are refused.
    cooldown: float = 900.0
    # Matched PDQ hashes remembered per tenant.
    remembered: int = 256


@dataclass
class _TenantState:
    matched: deque[tuple[float, int]]
    near_misses: deque[float] = field(default_factory=deque)
    throttled_until: float = 0.0


class ProbeDetector:
    """Per-process state; every serving process watches the calls it serves."""

    def __init__(
        self,
        policy: ProbePolicy | None = None,
        on_flag: Callable[[str, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy or ProbePolicy()
        # Called with (tenant, near-misses) when a tenant is flagged.
        self.on_flag = on_flag
        self.clock = clock
        self.flags = 0
        self._tenants: dict[str, _TenantState] = {}
        self._lock = threading.Lock()

    def throttled_for(self, tenant: str) -> float:
        """Seconds the tenant's PDQ queries are still refused (0 when they are not)."""
        state = self._tenants.get(tenant)
        if state is None:
            return 0.0
        return max(0.0, state.throttled_until - self.clock())

    def observe(self, tenant: str, matched: Sequence[bytes], unmatched: Sequence[bytes]) -> bool:
        """Records one call's PDQ queries; True when it flags the tenant."""
        state = self._tenants.get(tenant)
        if state is None and not matched:
            return False  # nothing matched before: no near-miss is possible
        p = self.policy
        now = self.clock()
        with self._lock:
            if state is None:
                state = self._tenants.setdefault(tenant, _TenantState(deque(maxlen=p.remembered)))
            while state.matched and now - state.matched[0][0] > p.window:
                state.matched.popleft()
            misses = 0
            for value in unmatched:
                query = int.from_bytes(value, "big")
                # Distance 0 is the same image again (e.g. after a retraction), not a walk.
                if any(0 < (query ^ m).bit_count() <= p.radius for _, m in state.matched):
                    misses += 1
            state.matched.extend((now, int.from_bytes(v, "big")) for v in matched)
            if not misses:
                return False
            state.near_misses.extend([now] * misses)
            while state.near_misses and now - state.near_misses[0] > p.window:
                state.near_misses.popleft()
            if len(state.near_misses) < p.flag_after:
                return False
            count = len(state.near_misses)
            state.near_misses.clear()
            state.throttled_until = now + p.cooldown
            self.flags += 1
        if self.on_flag is not None:
            self.on_flag(tenant, count)
        return True

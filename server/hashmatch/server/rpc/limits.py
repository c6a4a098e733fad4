"""Backpressure of one serving process: fair admission and per-tenant token buckets.

`Admission` bounds what is in progress: unary calls per process and per tenant (a tenant
gets at most its share), open streams per process and per tenant. A call beyond a bound is
refused at once with RESOURCE_EXHAUSTED, never queued, so one tenant filling its share
leaves the rest of the process to the others. `RateLimiter` bounds match items per second.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable

from hashmatch.server.errors import Overloaded, RateLimited
from hashmatch.server.settings import Settings, TenantLimit

# Seconds a refused caller is told to wait: in-flight calls end within milliseconds.
OVERLOAD_RETRY_AFTER = 0.05


def rate_limited(tenant: str, retry_after: float) -> RateLimited:
    return RateLimited(
        f"rate limit of tenant {tenant} exceeded; retry after {retry_after:.3f} s",
        retry_after=retry_after,
    )


class _Bucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, limit: TenantLimit, now: float) -> None:
        self.rate = limit.rate
        self.burst = limit.burst
        self.tokens = limit.burst
        self.stamp = now


class RateLimiter:
    """One token bucket per tenant; a call costs its match items (at least 1).

    A call larger than the bucket is let through when the bucket is full and leaves it in
    debt, so a big batch is slowed, never refused forever.
    """

    def __init__(
        self,
        limit_for: Callable[[str], TenantLimit | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit_for = limit_for
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket | None] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        return cls(settings.limit_for)

    def acquire(self, tenant: str, cost: int = 1) -> None:
        """Takes `cost` tokens or raises RateLimited carrying when to retry."""
        wait = self.try_acquire(tenant, cost)
        if wait is not None:
            raise rate_limited(tenant, wait)

    def try_acquire(self, tenant: str, cost: int = 1) -> float | None:
        """None when granted, else the seconds until it would be."""
        now = self._clock()
        with self._lock:
            if tenant in self._buckets:
                bucket = self._buckets[tenant]
            else:
                limit = self._limit_for(tenant)
                bucket = self._buckets[tenant] = None if limit is None else _Bucket(limit, now)
            if bucket is None:
                return None
            bucket.tokens = min(bucket.burst, bucket.tokens + (now - bucket.stamp) * bucket.rate)
            bucket.stamp = now
            need = min(float(cost), bucket.burst)
            if bucket.tokens >= need:
                bucket.tokens -= cost
                return None
            return max((need - bucket.tokens) / bucket.rate, 0.001)

    def debit(self, tenant: str, cost: int) -> None:
        """Charges work already admitted (a batch's items, known once read): the bucket may
        go into debt, which the tenant's next calls wait out."""
        if cost <= 0:
            return
        with self._lock:
            bucket = self._buckets.get(tenant)
            if bucket is not None:
                bucket.tokens -= cost


class Admission:
    """Counts what is in progress per process and per tenant; refuses beyond the bounds.

    Only the event loop thread calls it, so plain counters suffice.
    """

    def __init__(
        self,
        max_calls: int,
        tenant_share: float,
        max_streams: int,
        max_tenant_streams: int,
    ) -> None:
        self.max_calls = max_calls
        self.max_tenant_calls = max(1, math.floor(max_calls * tenant_share))
        self.max_streams = max_streams
        self.max_tenant_streams = max_tenant_streams
        self.calls = 0
        self.streams = 0
        self._calls: dict[str, int] = {}
        self._streams: dict[str, int] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Admission:
        return cls(
            settings.max_concurrent_rpcs,
            settings.tenant_share,
            settings.max_streams,
            settings.max_tenant_streams,
        )

    def enter(self, tenant: str, stream: bool) -> None:
        """Takes a slot for one call of `tenant`, or raises Overloaded."""
        if stream:
            total, mine, per_tenant = self.streams, self._streams, self.max_tenant_streams
            limit, what = self.max_streams, "streams"
        else:
            total, mine, per_tenant = self.calls, self._calls, self.max_tenant_calls
            limit, what = self.max_calls, "calls"
        held = mine.get(tenant, 0)
        if held >= per_tenant:
            raise Overloaded(
                f"tenant {tenant} already has {held} {what} in progress on this server "
                f"(its limit); retry when one ends",
                retry_after=OVERLOAD_RETRY_AFTER,
            )
        if total >= limit:
            raise Overloaded(
                f"the server has {total} {what} in progress (its limit); retry shortly",
                retry_after=OVERLOAD_RETRY_AFTER,
            )
        mine[tenant] = held + 1
        if stream:
            self.streams += 1
        else:
            self.calls += 1

    def leave(self, tenant: str, stream: bool) -> None:
        mine = self._streams if stream else self._calls
        held = mine[tenant] - 1
        if held:
            mine[tenant] = held
        else:
            del mine[tenant]
        if stream:
            self.streams -= 1
        else:
            self.calls -= 1


# Event-loop lag (seconds), seen on LAG_STREAK probes in a row, that means calls are
# queueing faster than they are answered (one slow call or a GC pause is not overload).
LAG_LIMIT = 0.03
LAG_STREAK = 3
# How often the lag is measured, and how long shedding lasts after a late wake-up.
LAG_PROBE = 0.01
SHED_HOLD = 0.25
SHED_RETRY_AFTER = 0.1
# Calls this second below which a slow loop is not taken for a backlog (a busy start-up or
# a slow disk is not overload).
SHED_MIN_CALLS = 200


class LoadShedder:
    """Refuses calls at once while the event loop falls behind, heaviest tenants first.

    Admission bounds what is in progress, but calls answered on the event loop are never
    "in progress" for long: under overload they queue in front of it instead. A probe
    wakes every LAG_PROBE seconds; when it wakes late by more than LAG_LIMIT several times
    in a row, with at least SHED_MIN_CALLS calls this second, the process sheds for
    SHED_HOLD seconds: a call of a tenant that made at least its even share of this
    second's calls gets RESOURCE_EXHAUSTED at once (a refusal costs far less than an answer,
    so the queue drains); lighter tenants are still answered.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.until = 0.0
        self.lag = 0.0
        self._second = 0
        self._calls: dict[str, int] = {}
        self._total = 0

    async def watch(self) -> None:
        """Measures the loop's lag until cancelled (run as a task on the serving loop)."""
        late = 0
        while True:
            start = self.clock()
            await asyncio.sleep(LAG_PROBE)
            self.lag = self.clock() - start - LAG_PROBE
            late = late + 1 if self.lag > LAG_LIMIT else 0
            if late >= LAG_STREAK:
                self.until = self.clock() + SHED_HOLD

    def admit(self, tenant: str) -> None:
        """Counts the call; raises Overloaded when it is shed."""
        now = self.clock()
        second = int(now)
        if second != self._second:
            self._second, self._calls, self._total = second, {}, 0
        mine = self._calls.get(tenant, 0) + 1
        self._calls[tenant] = mine
        self._total += 1
        if (
            now < self.until
            and self._total >= SHED_MIN_CALLS
            and mine * len(self._calls) >= self._total
        ):
            raise Overloaded(
                "the server is overloaded; retry shortly", retry_after=SHED_RETRY_AFTER
            )

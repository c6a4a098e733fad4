"""Backpressure of one serving process: per-tenant token buckets and a deadline cap.

The concurrency cap is grpcio's own (`maximum_concurrent_rpcs`, answered at once with
RESOURCE_EXHAUSTED); this module adds what grpcio does not have.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

import grpc

from hashmatch.server.errors import ServiceError
from hashmatch.server.settings import Settings, TenantLimit
from hashmatch.v1 import hashes_pb2


class RateLimited(ServiceError):
    pass


def rate_limited(tenant: str, retry_after: float) -> RateLimited:
    return RateLimited(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"rate limit of tenant {tenant} exceeded; retry after {retry_after:.3f} s",
        hashes_pb2.ERROR_REASON_RATE_LIMITED,
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


class DeadlineReaper:
    """Cancels calls still running past their server-side deadline.

    One thread for the process and a heap of deadlines: registering a call costs a heap
    push, not a timer thread. Handlers also check `expired()` themselves and answer
    DEADLINE_EXCEEDED; the reaper catches calls stuck waiting for the client.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        # The heap holds (deadline, ticket) only; the context of a live call is in _live,
        # so a finished call's context is released at once, not when its deadline passes.
        self._heap: list[tuple[float, int]] = []
        self._live: dict[int, grpc.ServicerContext] = {}
        self._seq = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="deadline-reaper", daemon=True)
        self._thread.start()

    def register(self, deadline: float, context: grpc.ServicerContext) -> int:
        ticket = next(self._seq)
        with self._cond:
            self._live[ticket] = context
            first = not self._heap or deadline < self._heap[0][0]
            heapq.heappush(self._heap, (deadline, ticket))
            if first:
                self._cond.notify()
        return ticket

    def done(self, ticket: int) -> None:
        with self._cond:
            self._live.pop(ticket, None)

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                while self._heap and (
                    self._heap[0][0] <= now or self._heap[0][1] not in self._live
                ):
                    _, ticket = heapq.heappop(self._heap)
                    context = self._live.pop(ticket, None)
                    if context is not None:
                        context.cancel()
                timeout = self._heap[0][0] - now if self._heap else None
                self._cond.wait(timeout)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join()

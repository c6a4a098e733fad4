"""Detects a platform walking the match oracle to recover a listed PDQ hash.

Someone holding a near-duplicate of a listed image can flip bits and watch the verdict:
at the edge of the match threshold each answer gives away a bit of the listed hash. The
tell is a NO_MATCH query a few bits from a query of the same tenant that matched —
ordinary traffic does not do that: re-uploads and near-duplicates of listed material
match, unrelated images are far from anything that matched, and the dihedral variants of
one image are 100+ bits apart. After enough such near-misses in a window the tenant's PDQ
queries are refused for a cooldown, an audit event is written, and a metric counts it.

The budget is per item, not per call: the items of a batch or stream are counted in order,
and once an item trips the flag, the PDQ items after it in the same call get an error
instead of a verdict. A matched hash anywhere in the call counts before its neighbours are
judged, so putting the neighbours first does not help. The state is one per tenant per
host (`Ledger`: shared by every worker process through the store), so more workers do not
mean more budget. Remembered matches are a first-in-first-out queue; pushing one out while
it is still inside the window counts as a near-miss, so flooding the memory with other
matches to make it forget a walk trips the flag instead of hiding the walk.

Only hashes that matched are kept, for the window; a query that did not match is compared
and dropped, never kept.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from hashmatch.server.store.probes import ProbeRecord

# Frames of one video query the detector looks at (spread over the video), and of a matched
# one the first it remembers: enough to see a walk, bounded for a long video.
VIDEO_FRAMES_SEEN = 1_000
VIDEO_FRAMES_REMEMBERED = 4


@dataclass(frozen=True)
class ProbePolicy:
    # Bits between a NO_MATCH query and an earlier matched one that count as a near-miss.
    radius: int = 8
    # Near-misses within `window` seconds that flag the tenant.
    flag_after: int = 8
    window: float = 3600.0
    # Seconds a flagged tenant's PDQ queries are refused.
    cooldown: float = 900.0
    # Matched PDQ hashes remembered per tenant (first in, first out).
    remembered: int = 65_536


class Ledger(Protocol):
    """Where the per-tenant state lives (store/probes.py for a serving host)."""

    def generation(self) -> int: ...
    def header(self, tenant: str) -> ProbeRecord: ...
    def remembered(self, tenant: str, after: int) -> list[tuple[int, float, bytes]]: ...
    def update(self, tenant: str) -> AbstractContextManager[ProbeRecord]: ...


class MemoryLedger:
    """The same records in this process only (tests, benchmarks, a store-less detector)."""

    def __init__(self) -> None:
        self._gen = 0
        self._headers: dict[str, ProbeRecord] = {}
        self._values: dict[str, dict[int, tuple[float, bytes]]] = {}
        self._lock = threading.Lock()

    def generation(self) -> int:
        return self._gen

    def header(self, tenant: str) -> ProbeRecord:
        found = self._headers.get(tenant)
        if found is None:
            return ProbeRecord()
        return ProbeRecord(
            found.first_seq, found.next_seq, found.throttled_until, list(found.near_misses)
        )

    def remembered(self, tenant: str, after: int) -> list[tuple[int, float, bytes]]:
        values = self._values.get(tenant, {})
        header = self._headers.get(tenant)
        end = header.next_seq if header is not None else 0
        return [(seq, *values[seq]) for seq in range(after, end) if seq in values]

    @contextmanager
    def update(self, tenant: str) -> Iterator[ProbeRecord]:
        with self._lock:
            record = _MemoryRecord.of(self.header(tenant), self._values.setdefault(tenant, {}))
            yield record
            self._headers[tenant] = ProbeRecord(
                record.first_seq, record.next_seq, record.throttled_until, record.near_misses
            )
            self._gen += 1


@dataclass
class _MemoryRecord(ProbeRecord):
    values: dict[int, tuple[float, bytes]] = field(default_factory=dict)

    @classmethod
    def of(cls, header: ProbeRecord, values: dict[int, tuple[float, bytes]]) -> _MemoryRecord:
        return cls(
            header.first_seq, header.next_seq, header.throttled_until, header.near_misses
        ).with_values(values)

    def with_values(self, values: dict[int, tuple[float, bytes]]) -> _MemoryRecord:
        self.values = values
        return self

    def remember(self, at: float, value: bytes) -> None:
        self.values[self.next_seq] = (at, value)
        self.next_seq += 1

    def oldest(self) -> float | None:
        found = self.values.get(self.first_seq)
        return None if found is None else found[0]

    def drop_oldest(self) -> None:
        self.values.pop(self.first_seq, None)
        self.first_seq += 1


class _Remembered:
    """A tenant's remembered hashes in this process, indexed for radius queries: with
    `radius + 1` chunks, two hashes within `radius` bits agree on at least one chunk."""

    def __init__(self, radius: int) -> None:
        self.chunks = radius + 1
        self.width = -(-256 // self.chunks)
        self.mask = (1 << self.width) - 1
        self.radius = radius
        self.next_seq = 0
        self.values: dict[int, tuple[int, float]] = {}  # seq -> (hash, matched at)
        self.index: dict[tuple[int, int], set[int]] = {}  # (chunk, bits) -> seqs

    def keys(self, value: int) -> list[tuple[int, int]]:
        return [(c, (value >> (c * self.width)) & self.mask) for c in range(self.chunks)]

    def add(self, seq: int, value: int, at: float) -> None:
        self.values[seq] = (value, at)
        for key in self.keys(value):
            self.index.setdefault(key, set()).add(seq)
        self.next_seq = max(self.next_seq, seq + 1)

    def forget_before(self, first_seq: int, not_before: float) -> None:
        # Added in seq order, so the ones to forget come first.
        stale = []
        for seq, (_, at) in self.values.items():
            if seq >= first_seq and at >= not_before:
                break
            stale.append(seq)
        for seq in stale:
            value, _ = self.values.pop(seq)
            for key in self.keys(value):
                bucket = self.index.get(key)
                if bucket is not None:
                    bucket.discard(seq)
                    if not bucket:
                        del self.index[key]

    # `not_before`: matches older than this are outside the window. A view is read again
    # only when the ledger changes, so it may still hold them.
    def holds(self, value: int, not_before: float) -> bool:
        for seq in self.index.get(self.keys(value)[0], ()):
            remembered, at = self.values[seq]
            if remembered == value and at >= not_before:
                return True
        return False

    def near(self, value: int, not_before: float = float("-inf")) -> bool:
        """A remembered hash within the radius, other than the same hash (distance 0 is
        the same image again, e.g. after a retraction, not a walk)."""
        seen: set[int] = set()
        for key in self.keys(value):
            for seq in self.index.get(key, ()):
                if seq in seen:
                    continue
                seen.add(seq)
                remembered, at = self.values[seq]
                if at >= not_before and 0 < (remembered ^ value).bit_count() <= self.radius:
                    return True
        return False


@dataclass
class _Local:
    generation: int = -1
    throttled_until: float = 0.0
    remembered: _Remembered | None = None


class ProbeDetector:
    """The per-item probe check of one serving process over a shared `Ledger`."""

    def __init__(
        self,
        policy: ProbePolicy | None = None,
        on_flag: Callable[[str, int], None] | None = None,
        clock: Callable[[], float] = time.time,
        ledger: Ledger | None = None,
    ) -> None:
        self.policy = policy or ProbePolicy()
        # Called with (tenant, near-misses) when a tenant is flagged.
        self.on_flag = on_flag
        self.clock = clock
        self.ledger: Ledger = ledger if ledger is not None else MemoryLedger()
        self.flags = 0
        self._local: dict[str, _Local] = {}
        self._lock = threading.Lock()

    def throttled_for(self, tenant: str) -> float:
        """Seconds the tenant's PDQ queries are still refused (0 when they are not)."""
        until = self._sync(tenant).throttled_until
        return max(0.0, until - self.clock()) if until else 0.0

    def observe_items(
        self,
        tenant: str,
        queries: Sequence[tuple[int, bytes, bool]],
        videos: Sequence[tuple[int, Sequence[bytes], bool]] = (),
    ) -> int | None:
        """Judges one call's PDQ queries, `(item index, hash, matched)` in item order, and
        its video queries, `(item index, frames, matched)`.

        A video is one attempt: a matched one is remembered by its first few frames, and
        one that did not match is one near-miss when any of its frames is near a remembered
        hash (the frames of one video are near each other by nature, so they are never
        judged against each other).

        Returns the first item index whose answer must be withheld because an earlier
        item of the call flagged the tenant, or None when every item may be answered.
        """
        local = self._sync(tenant)
        known = local.remembered
        p = self.policy
        now = self.clock()
        not_before = now - p.window
        hits = [value for _, value, hit in queries if hit]
        hits += [f for _, frames, hit in videos if hit for f in frames[:VIDEO_FRAMES_REMEMBERED]]
        # The same image matching again (re-uploads) is remembered once.
        matched = list(
            dict.fromkeys(
                value
                for value in hits
                if known is None or not known.holds(int.from_bytes(value, "big"), not_before)
            )
        )
        if not matched and (known is None or not known.values):
            return None  # nothing new matched, and nothing before: no near-miss to find
        in_call = _Remembered(p.radius)
        for seq, value in enumerate(matched):
            in_call.add(seq, int.from_bytes(value, "big"), 0.0)
        misses: list[int] = []
        for item, value, hit in queries:
            if hit:
                continue
            query = int.from_bytes(value, "big")
            if in_call.near(query) or (known is not None and known.near(query, not_before)):
                misses.append(item)
        for item, frames, hit in videos:
            if not hit and any(
                in_call.near(q) or (known is not None and known.near(q, not_before))
                for q in (int.from_bytes(f, "big") for f in frames)
            ):
                misses.append(item)
        misses.sort()
        if not matched and not misses:
            return None
        with self.ledger.update(tenant) as record:
            evicted = _remember(record, matched, now, p)
            record.near_misses = [t for t in record.near_misses if now - t <= p.window]
            before = len(record.near_misses)
            total = len(misses) + evicted
            if before + total < p.flag_after:
                record.near_misses += [now] * total
                return None
            # The item whose near-miss fills the budget is the last one answered.
            allowed = p.flag_after - before - evicted
            count = before + total
            record.near_misses = []
            record.throttled_until = now + p.cooldown
        with self._lock:
            self.flags += 1
        if self.on_flag is not None:
            self.on_flag(tenant, count)
        items = sorted({item for item, _, _ in queries} | {item for item, _, _ in videos})
        if allowed <= 0 or not misses:
            return items[0] if items else 0
        if allowed > len(misses):
            return None
        last_answered = misses[allowed - 1]
        later = [item for item in items if item > last_answered]
        return later[0] if later else None

    def observe(self, tenant: str, matched: Sequence[bytes], unmatched: Sequence[bytes]) -> bool:
        """One call's matched and unmatched PDQ queries as separate items; True when the
        call flagged the tenant."""
        flags = self.flags
        items = [(i, v, True) for i, v in enumerate(matched)]
        items += [(len(matched) + i, v, False) for i, v in enumerate(unmatched)]
        self.observe_items(tenant, items)
        return self.flags > flags

    def _sync(self, tenant: str) -> _Local:
        """This process's view of the tenant, read again when any tenant's state changed."""
        generation = self.ledger.generation()
        with self._lock:
            local = self._local.get(tenant)
            if local is not None and local.generation == generation:
                return local
            if local is None:
                local = self._local[tenant] = _Local()
        header = self.ledger.header(tenant)
        p = self.policy
        with self._lock:
            local.generation = generation
            local.throttled_until = header.throttled_until
            if header.size() == 0:
                local.remembered = None
                return local
            if local.remembered is None:
                local.remembered = _Remembered(p.radius)
            remembered = local.remembered
        fresh = self.ledger.remembered(tenant, max(remembered.next_seq, header.first_seq))
        with self._lock:
            for seq, at, value in fresh:
                remembered.add(seq, int.from_bytes(value, "big"), at)
            remembered.forget_before(header.first_seq, self.clock() - p.window)
        return local


def _remember(record: ProbeRecord, matched: Sequence[bytes], now: float, p: ProbePolicy) -> int:
    """Adds the call's matched hashes; returns how many hashes still inside the window
    had to be pushed out to make room (each counts as a near-miss)."""
    while record.size():
        oldest = record.oldest()
        if oldest is None or now - oldest <= p.window:
            break
        record.drop_oldest()
    evicted = 0
    for value in matched:
        record.remember(now, value)
        if record.size() > p.remembered:
            record.drop_oldest()
            evicted += 1
    return evicted

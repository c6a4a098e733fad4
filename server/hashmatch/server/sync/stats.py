"""Match counts per tenant and reference, kept in memory and flushed to LMDB now and then.

The core counts matches as it answers them; a background thread takes its counts and
writes the totals in one LMDB transaction per interval and on shutdown, never one write
per match. The same thread
refreshes the gauges that describe this process's indexes: list versions, index sizes,
change-log lag.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping

from hashmatch.server.matching import flood
from hashmatch.server.metrics import Metrics
from hashmatch.server.store import Store
from hashmatch.server.sync.follower import IndexFollower

log = logging.getLogger(__name__)

ALGORITHM_NAMES = ("md5", "sha1", "sha256", "pdq", "vpdq")


# (tenant, list_id, reference_id): who matched which reference.
CountKey = tuple[str, int, str]
# (matches, time of the last one).
Count = tuple[int, float]


class MatchCounts:
    """Match counts per (tenant, list_id, reference_id), waiting for the next flush.

    The store keeps who matched a reference only to judge that tenant's own reports and its
    share of a flood; the list owner's statistics sum every tenant."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[CountKey, Count] = {}

    def add_many(self, rows: Iterable[tuple[str, int, str, int, float]]) -> None:
        """Adds counts already summed elsewhere (the core's `take_counts()`): rows of
        (tenant, list_id, reference_id, matches, last match as Unix time)."""
        with self._lock:
            for tenant, lid, ref, n, last in rows:
                self._merge((tenant, lid, ref), n, last)

    def take(self) -> dict[CountKey, Count]:
        with self._lock:
            pending, self._pending = self._pending, {}
        return pending

    def restore(self, counts: Mapping[CountKey, Count]) -> None:
        """Puts back counts whose flush failed, so a later flush carries them."""
        with self._lock:
            for key, (n, last) in counts.items():
                self._merge(key, n, last)

    def _merge(self, key: CountKey, n: int, last: float) -> None:
        m, when = self._pending.get(key, (0, 0.0))
        self._pending[key] = (n + m, max(last, when))


class StatsFlusher:
    """Flushes match counts and refreshes gauges every `interval` seconds."""

    def __init__(
        self,
        store: Store,
        follower: IndexFollower,
        counts: MatchCounts,
        metrics: Metrics,
        interval: float,
    ) -> None:
        self.store = store
        self.follower = follower
        self.counts = counts
        self.metrics = metrics
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.refresh_gauges()
        self._thread = threading.Thread(target=self._run, name="stats", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
                self.refresh_gauges()
            except Exception:
                log.exception("flushing match statistics failed; retrying")

    def flush(self) -> None:
        rows = self.follower.index.take_counts()
        if rows:
            self.counts.add_many(rows)
            names = {served.id: served.name for served in self.follower.lists().values()}
            for _, list_id, _, n, _ in rows:
                name = names.get(list_id)
                if name is not None:
                    self.metrics.matches.labels(name).inc(n)
        pending = self.counts.take()
        if not pending:
            return
        try:
            self.store.add_match_counts(pending, flood.judge)
        except BaseException:
            self.counts.restore(pending)
            raise

    def refresh_gauges(self) -> None:
        m = self.metrics
        served = self.follower.lists()
        index = self.follower.index
        lag_batches = 0
        oldest: float | None = None
        for meta in self.store.lists():
            listed = served.get(meta.id)
            have = listed.version if listed is not None else 0
            if meta.version > have:
                lag_batches += meta.version - have
                behind = self.store.changes_since(meta.id, have, limit=1)
                if behind:
                    when = behind[0].committed_at
                    oldest = when if oldest is None else min(oldest, when)
            if listed is None:
                continue
            m.list_version.labels(meta.name).set(listed.version)
            try:
                counts = index.counts(meta.id)
            except ValueError:
                continue
            for name, n in zip(ALGORITHM_NAMES, counts, strict=True):
                m.index_entries.labels(meta.name, name).set(n)
        m.index_memory.set(index.memory_bytes())
        m.changelog_lag_batches.set(lag_batches)
        m.changelog_lag_seconds.set(0.0 if oldest is None else max(0.0, time.time() - oldest))

    def stop(self) -> None:
        """Stops the thread and writes what is still pending (call after the server drained)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.flush()

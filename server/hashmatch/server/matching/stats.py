"""Per-reference match counts kept in memory and flushed to LMDB now and then.

The match path only adds to a dict under a lock (matches are rare next to queries); a
background thread writes the totals in one LMDB transaction per interval and on shutdown,
never one write per match. The same thread refreshes the gauges that describe this
process's indexes: list versions, index sizes, change-log lag.
"""

from __future__ import annotations

import logging
import threading
import time

from hashmatch.server.metrics import Metrics
from hashmatch.server.store import Store
from hashmatch.server.sync.follower import IndexFollower

log = logging.getLogger(__name__)

ALGORITHM_NAMES = ("md5", "sha1", "sha256", "pdq")


class MatchCounts:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[int, str], tuple[int, float]] = {}

    def add(self, hits: list[tuple[int, str]]) -> None:
        """Counts one match of each (list_id, reference_id)."""
        now = time.time()
        with self._lock:
            for key in hits:
                n, _ = self._pending.get(key, (0, 0.0))
                self._pending[key] = (n + 1, now)

    def take(self) -> dict[tuple[int, str], tuple[int, float]]:
        with self._lock:
            pending, self._pending = self._pending, {}
        return pending

    def restore(self, counts: dict[tuple[int, str], tuple[int, float]]) -> None:
        """Puts back counts whose flush failed, so a later flush carries them."""
        with self._lock:
            for key, (n, last) in counts.items():
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
        pending = self.counts.take()
        if not pending:
            return
        try:
            self.store.add_match_counts(pending)
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

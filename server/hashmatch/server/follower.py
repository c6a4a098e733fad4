"""Keeps one serving process's in-memory indexes equal to what LMDB has committed.

At start every list is loaded from one LMDB snapshot; afterwards the process follows the
change log. A write made through this process calls `catch_up()` right after its commit,
so the writer's own process serves the change before acknowledging it; other processes see
it within one poll interval.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from hashmatch.server.changelog import ChangeRecord
from hashmatch.server.core import Index
from hashmatch.server.store import ListMeta, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedList:
    """What the match path needs to know of a list, as of the last batch applied."""

    id: int
    name: str
    version: int


class IndexFollower:
    def __init__(self, store: Store, index: Index, poll_interval: float = 0.02) -> None:
        self.store = store
        self.index = index
        self.poll_interval = poll_interval
        self._lists: dict[int, ServedList] = {}
        self._seen_seq = -1
        self._lock = threading.Lock()
        # Notified after every catch-up that applied something (WatchChanges waits on it).
        self._applied = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def lists(self) -> dict[int, ServedList]:
        # Replaced, never mutated, so readers need no lock.
        return self._lists

    def catch_up(self) -> None:
        """Applies every batch committed since the last call."""
        with self._lock:
            seq = self.store.seq()
            if seq == self._seen_seq:
                return
            served = dict(self._lists)
            for meta in self.store.lists():
                current = served.get(meta.id)
                if current is None:
                    served[meta.id] = self._load(meta)
                elif meta.version > current.version:
                    served[meta.id] = self._follow(current)
                self.index.configure_list(meta.id, meta.pdq_threshold, meta.pdq_min_quality)
            self._lists = served
            self._seen_seq = seq
        with self._applied:
            self._applied.notify_all()

    def wait_for_commit(self, version_of: int, after: int, timeout: float) -> bool:
        """Waits until list `version_of` is served past version `after`, or the timeout."""

        def newer() -> bool:
            served = self._lists.get(version_of)
            return served is not None and served.version > after

        with self._applied:
            return self._applied.wait_for(newer, timeout)

    def _load(self, listed: ListMeta) -> ServedList:
        snap = self.store.snapshot_entries(listed.name)
        if snap is None:  # dropped between the two reads
            return ServedList(listed.id, listed.name, listed.version)
        meta, chunks = snap
        self.index.configure_list(meta.id, meta.pdq_threshold, meta.pdq_min_quality)
        total = 0
        for algs, slots, ids in chunks:
            self.index.apply(meta.id, algs, slots, ids, b"", b"")
            total += len(algs)
        log.info("loaded list %s: %d entries at version %d", meta.name, total, meta.version)
        # Batches committed after the snapshot are picked up by following the log.
        return self._follow(ServedList(meta.id, meta.name, meta.version))

    def _follow(self, served: ServedList) -> ServedList:
        while True:
            records = self.store.changes_since(served.id, served.version)
            if not records:
                return served
            for record in records:
                self._apply(record)
                served = ServedList(served.id, served.name, record.version)

    def _apply(self, record: ChangeRecord) -> None:
        self.index.apply(
            record.list_id,
            record.upsert_algs,
            record.upsert_slots,
            record.upsert_ids,
            record.retire_algs,
            record.retire_slots,
        )

    def start(self) -> None:
        self.catch_up()
        self._thread = threading.Thread(target=self._run, name="index-follower", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.catch_up()
            except Exception:
                log.exception("following the change log failed; retrying")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

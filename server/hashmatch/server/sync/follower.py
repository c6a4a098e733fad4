"""Keeps one serving process's in-memory indexes equal to what LMDB has committed.

At start every list is loaded from one LMDB snapshot; afterwards the process follows the
change log (entry changes, and quarantine events). Platforms' subscriptions and
allow-lists are reloaded whenever they change. A write made through this process calls
`catch_up()` right after its commit, so the writer's own process serves the change before
acknowledging it; other processes see it within one poll interval.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

from hashmatch.server.core import Index, pack_hashes
from hashmatch.server.store import ListMeta, Store
from hashmatch.server.store.changelog import QUARANTINE, RELEASE, ChangeRecord

log = logging.getLogger(__name__)

ALLOW_PDQ_THRESHOLD = 31
# How often reader slots left by dead processes are reclaimed (they pin old pages).
READER_CHECK_SECONDS = 60.0


@dataclass(frozen=True)
class ServedList:
    """What the match path needs to know of a list, as of the last batch applied."""

    id: int
    name: str
    version: int
    # References that answer NO_MATCH until released (flood quarantine).
    quarantined: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PlatformPolicy:
    """Which lists apply to one platform, and the hashes it allow-listed (as list ids
    of the allow index)."""

    all_lists: bool = True
    lists: frozenset[str] = frozenset()
    allow_id: int | None = None

    def wants(self, list_name: str) -> bool:
        return self.all_lists or list_name in self.lists


class IndexFollower:
    def __init__(self, store: Store, index: Index, poll_interval: float = 0.02) -> None:
        self.store = store
        self.index = index
        self.poll_interval = poll_interval
        self._lists: dict[int, ServedList] = {}
        self._platforms: dict[str, PlatformPolicy] = {}
        # Platforms' allow-lists, one core list per platform, PDQ within distance 31.
        self.allow_index = Index()
        self._allow_seq = -1
        self._seen_seq = -1
        self._lock = threading.Lock()
        # Coroutines waiting for the next catch-up that applies something (WatchChanges),
        # each woken on its own event loop.
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()
        self._waiters_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def lists(self) -> dict[int, ServedList]:
        # Replaced, never mutated, so readers need no lock.
        return self._lists

    def platform(self, tenant: str) -> PlatformPolicy:
        return self._platforms.get(tenant, _EVERY_LIST)

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
            self._reload_platforms()
            self._seen_seq = seq
        with self._waiters_lock:
            waiters, self._waiters = self._waiters, set()
        for loop, future in waiters:
            loop.call_soon_threadsafe(_wake, future)

    async def committed(self, list_id: int, after: int, timeout: float) -> bool:
        """Waits, holding no thread, until list `list_id` is served past version `after`
        or `timeout` seconds pass; True when it is."""

        def newer() -> bool:
            served = self._lists.get(list_id)
            return served is not None and served.version > after

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not newer():
            left = deadline - loop.time()
            if left <= 0:
                return False
            waiter = (loop, loop.create_future())
            with self._waiters_lock:
                self._waiters.add(waiter)
            try:
                if newer():  # applied between the check and the registration
                    return True
                async with asyncio.timeout(left):
                    await waiter[1]
            except TimeoutError:
                return newer()
            finally:
                with self._waiters_lock:
                    self._waiters.discard(waiter)
        return True

    def _reload_platforms(self) -> None:
        allow_seq = self.store.allow_seq()
        allow_ids = {name: p.allow_id for name, p in self._platforms.items()}
        if allow_seq != self._allow_seq:
            allow_seq, allow_lists = self.store.allow_lists()
            index = Index()
            allow_ids = {}
            for number, (name, hashes) in enumerate(sorted(allow_lists.items()), start=1):
                index.configure_list(number, ALLOW_PDQ_THRESHOLD, 0)
                algs, slots = pack_hashes(hashes)
                index.apply(number, algs, slots, bytes(8 * len(hashes)), b"", b"")
                allow_ids[name] = number
            self.allow_index = index
            self._allow_seq = allow_seq
        subs = self.store.all_subscriptions()
        policies = {}
        for name in subs.keys() | allow_ids.keys():
            all_lists, lists = subs.get(name, (True, []))
            policies[name] = PlatformPolicy(all_lists, frozenset(lists), allow_ids.get(name))
        self._platforms = policies

    def _load(self, listed: ListMeta) -> ServedList:
        snap = self.store.snapshot_entries(listed.name)
        if snap is None:  # dropped between the two reads
            return ServedList(listed.id, listed.name, listed.version)
        meta, chunks = snap
        # Read after the snapshot: replaying later events on top converges all the same.
        quarantined = frozenset(self.store.quarantined(meta.id))
        self.index.configure_list(meta.id, meta.pdq_threshold, meta.pdq_min_quality)
        total = 0
        for algs, slots, ids in chunks:
            self.index.apply(meta.id, algs, slots, ids, b"", b"")
            total += len(algs)
        log.info("loaded list %s: %d entries at version %d", meta.name, total, meta.version)
        # Batches committed after the snapshot are picked up by following the log.
        return self._follow(ServedList(meta.id, meta.name, meta.version, quarantined))

    def _follow(self, served: ServedList) -> ServedList:
        while True:
            records = self.store.changes_since(served.id, served.version)
            if not records:
                return served
            for record in records:
                quarantined = served.quarantined
                if record.kind == QUARANTINE:
                    quarantined = quarantined | set(record.references())
                elif record.kind == RELEASE:
                    quarantined = quarantined - set(record.references())
                else:
                    self._apply(record)
                served = ServedList(served.id, served.name, record.version, quarantined)

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
        next_check = time.monotonic() + READER_CHECK_SECONDS
        while not self._stop.wait(self.poll_interval):
            try:
                self.catch_up()
                if time.monotonic() > next_check:
                    self.store.reclaim_readers()
                    next_check = time.monotonic() + READER_CHECK_SECONDS
            except Exception:
                log.exception("following the change log failed; retrying")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


_EVERY_LIST = PlatformPolicy()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)

"""Keeps one serving process's in-memory indexes equal to what LMDB has committed.

At start every list is loaded from one LMDB snapshot, entries with their reference IDs;
afterwards the process follows the change log (entry changes, and quarantine events).
Platforms' subscriptions and allow-lists are handed to the core whenever they change. A
write made through this process calls `catch_up()` right after its commit, so the writer's
own process serves the change before acknowledging it; other processes see it within one
poll interval.

A list with a usable segment file (see `segments`) is mapped from it instead, then followed
from the version the file holds; a background thread writes the files, and checks the
digest of each list mapped from one, reloading it from the store if it differs.

On a replica, a list marked unverified in the store (being copied, or found to differ from
the primary's) is not served: it is dropped from the core until the mark is cleared, then
loaded afresh. A list that was reset (its epoch changed, or its version went back) is
reloaded from scratch, never followed on top of what was served before.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, replace

from hashmatch.server.core import Index, ListSnapshot, check_list_file, pack_hashes
from hashmatch.server.store import ListMeta, Store, replica_state
from hashmatch.server.store.changelog import CHANGES, EXPOSE, QUARANTINE, RELEASE, ChangeRecord
from hashmatch.server.store.resync import list_states
from hashmatch.server.sync.segments import Refused, SegmentFiles, SegmentInfo

log = logging.getLogger(__name__)

# How often reader slots left by dead processes are reclaimed (they pin old pages).
READER_CHECK_SECONDS = 60.0
# A list's segment file is written again no sooner than this many times the last write
# took (see `_file_one`).
WRITE_SHARE = 10.0
# How long shutdown waits for the segment-file thread to finish a step.
FILER_JOIN_SECONDS = 2.0
# Entries applied (loaded or followed) after which freed memory is handed back (see
# `_release_freed`).
TRIM_AFTER_ENTRIES = 1_000_000
# Consecutive batches of upserts read together are applied to the core as one, up to this
# many entries: a bulk load's batches then make one index part per group, not one each,
# and are merged into larger parts fewer times (12 M PDQ entries in the core: 25 s in
# batches of 1 M, 40 s in batches of 50 k).
JOIN_ENTRIES = 1_000_000


@dataclass(frozen=True)
class ServedList:
    """What the match path needs to know of a list, as of the last batch applied."""

    id: int
    name: str
    version: int
    # References that answer NO_MATCH until released (flood quarantine).
    quarantined: frozenset[str] = frozenset()
    # How many times the list had been reset in the store when it was loaded.
    epoch: int = 0
    # The list digest at `version` (what a segment file written now must say).
    digest: bytes = b""


class IndexFollower:
    def __init__(
        self,
        store: Store,
        index: Index,
        poll_interval: float = 0.02,
        segments: SegmentFiles | None = None,
    ) -> None:
        self.store = store
        self.index = index
        self.poll_interval = poll_interval
        self.segments = segments
        # Per list: the version its segment file holds, when this process knows it; when
        # its served version last changed; when this process may write its file next.
        self._filed: dict[int, int] = {}
        self._changed_at: dict[int, float] = {}
        self._next_write: dict[int, float] = {}
        # Lists mapped from a segment file whose digest is still to be checked.
        self._unchecked: dict[int, tuple[ListSnapshot, bytes]] = {}
        # Lists to reload from the store, not from their file (their digest differed).
        self._reload: set[int] = set()
        self._lists: dict[int, ServedList] = {}
        # What the core was last given of the platforms' settings, to skip unchanged ones.
        self._policies: tuple[object, ...] = ()
        self._policy_names: set[str] = set()
        self._seen_seq = -1
        # Lists not served because the store marks them unverified (replicas), by name.
        self._unverified: frozenset[str] = frozenset()
        # Why the store marks this replica's copy as not proven current, or None.
        self._stale: str | None = None
        # Called (with no lock held) after a catch-up that changed `unverified()` or which
        # lists are served.
        self.on_verification: Callable[[], None] | None = None
        # The settings each list was last configured with in the core.
        self._configs: dict[int, Config] = {}
        self._lock = threading.Lock()
        # Coroutines waiting for the next catch-up that applies something (WatchChanges),
        # each woken on its own event loop.
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()
        self._waiters_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._filer: threading.Thread | None = None
        self._applied_since_trim = 0

    def lists(self) -> dict[int, ServedList]:
        # Replaced, never mutated, so readers need no lock.
        return self._lists

    def unverified(self) -> frozenset[str]:
        """Names of the lists not served because the store marks them unverified."""
        return self._unverified

    def stale(self) -> str | None:
        """Why the store marks this replica's copy as not proven current (its lists are
        still served; health says NOT_SERVING), or None."""
        return self._stale

    def catch_up(self) -> None:
        """Applies every batch committed since the last call."""
        with self._lock:
            seq = self.store.seq()
            if seq == self._seen_seq:
                return
            served = dict(self._lists)
            previous = set(served)
            present: set[int] = set()
            unverified: set[str] = set()
            for state in list_states(self.store):
                meta = state.meta
                present.add(meta.id)
                current = served.get(meta.id)
                if current is not None and (
                    not state.verified
                    or state.epoch != current.epoch
                    or meta.version < current.version
                    or meta.id in self._reload
                ):
                    # Reset, or not to be served: nothing of what was served stays.
                    self._drop(current)
                    del served[meta.id]
                    current = None
                if not state.verified:
                    unverified.add(meta.name)
                    continue
                if current is None:
                    use_file = meta.id not in self._reload
                    self._reload.discard(meta.id)
                    served[meta.id] = self._load(meta, state.epoch, use_file)
                elif meta.version > current.version:
                    served[meta.id] = self._follow(current)
                if current is None or served[meta.id].version != current.version:
                    self._changed_at[meta.id] = time.monotonic()
                config = _config(meta)
                # A meta read before events followed since is stale (its exposed label
                # keys were set by those events); the next catch-up reads it afresh.
                stale = served[meta.id].version > meta.version
                if self._configs.get(meta.id) != config and not stale:
                    # Only a list whose settings changed gets a new core snapshot.
                    self.index.configure_list(meta.id, *config)
                    self._configs[meta.id] = config
            if self._applied_since_trim >= TRIM_AFTER_ENTRIES:
                _release_freed()
                self._applied_since_trim = 0
            for list_id in served.keys() - present:
                self._drop(served.pop(list_id))
                if self.segments is not None:
                    self.segments.remove(list_id)
            self._lists = served
            self._reload_platforms()
            self._seen_seq = seq
            stale = replica_state.stale_reason(self.store)
            changed = (
                unverified != self._unverified or served.keys() != previous or stale != self._stale
            )
            self._unverified = frozenset(unverified)
            self._stale = stale
        if changed and self.on_verification is not None:
            self.on_verification()
        with self._waiters_lock:
            waiters, self._waiters = self._waiters, set()
        for loop, future in waiters:
            loop.call_soon_threadsafe(_wake, future)

    def seq(self) -> int:
        """The store's commit counter as of the last catch-up: every commit up to it is
        served, and visible to any store read made after this call."""
        return self._seen_seq

    async def committed(self, list_id: int, after: int, timeout: float) -> bool:
        """Waits, holding no thread, until list `list_id` is served past version `after`
        or `timeout` seconds pass; True when it is."""

        def newer() -> bool:
            served = self._lists.get(list_id)
            return served is not None and served.version > after

        return await self._until(newer, timeout)

    async def changed(self, seq_after: int, timeout: float) -> bool:
        """Waits, holding no thread, until a catch-up has seen a commit after store seq
        `seq_after` (any list, tenant or setting) or `timeout` seconds pass; True when
        it has."""
        return await self._until(lambda: self._seen_seq > seq_after, timeout)

    async def _until(self, done: Callable[[], bool], timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done():
            left = deadline - loop.time()
            if left <= 0:
                return False
            waiter = (loop, loop.create_future())
            with self._waiters_lock:
                self._waiters.add(waiter)
            try:
                if done():  # applied between the check and the registration
                    return True
                async with asyncio.timeout(left):
                    await waiter[1]
            except TimeoutError:
                return done()
            finally:
                with self._waiters_lock:
                    self._waiters.discard(waiter)
        return True

    def _reload_platforms(self) -> None:
        """Hands every platform's subscriptions and allow-list to the core (only when they,
        or the lists they name, changed)."""
        ids = {served.name: served.id for served in self._lists.values()}
        subs = self.store.all_subscriptions()
        key = (self.store.allow_seq(), sorted(subs.items()), sorted(ids.items()))
        if key == self._policies:
            return
        _, allow_lists = self.store.allow_lists()
        names = subs.keys() | allow_lists.keys()
        for name in names:
            all_lists, lists = subs.get(name, (True, []))
            algs, slots = pack_hashes(allow_lists.get(name, []))
            self.index.set_policy(name, all_lists, [ids[n] for n in lists if n in ids], algs, slots)
        for name in self._policy_names - names:
            self.index.remove_policy(name)
        self._policy_names = set(names)
        self._policies = key

    def _drop(self, served: ServedList) -> None:
        self.index.drop_list(served.id)
        self._configs.pop(served.id, None)
        log.info("list %s no longer served at version %d", served.name, served.version)

    def _load(self, listed: ListMeta, epoch: int, use_file: bool = True) -> ServedList:
        if self.segments is not None and use_file:
            mapped = self._map(listed, epoch)
            if mapped is not None:
                return self._follow(mapped)
        # A reset between the list's state and this snapshot is seen at the next
        # catch-up (a new epoch), which drops and reloads the list.
        snap = self.store.snapshot_entries(listed.name)
        if snap is None:  # dropped between the two reads
            return ServedList(listed.id, listed.name, listed.version, epoch=epoch)
        meta, chunks = snap
        # Read after the snapshot: replaying later events on top converges all the same.
        quarantined = frozenset(self.store.quarantined(meta.id))
        config = _config(meta)
        self.index.configure_list(meta.id, *config)
        self._configs[meta.id] = config
        total = 0
        for algs, slots, ids, ref_ends, refs in chunks:
            self.index.apply(meta.id, algs, slots, ids, b"", b"", ref_ends, refs, meta.version)
            total += len(algs)
        self._applied_since_trim += total
        self.index.set_list_state(meta.id, meta.version, sorted(quarantined))
        log.info("loaded list %s: %d entries at version %d", meta.name, total, meta.version)
        # Batches committed after the snapshot are picked up by following the log.
        return self._follow(
            ServedList(meta.id, meta.name, meta.version, quarantined, epoch, meta.digest)
        )

    def _map(self, listed: ListMeta, epoch: int) -> ServedList | None:
        """The list mapped from its segment file, at the file's version; None (the list
        to be read from the store) when it has no usable one."""
        assert self.segments is not None
        path = self.segments.path(listed.id)
        try:
            info = self.segments.usable(self.store, listed, epoch)
            if info is None:
                return None
            quarantined = frozenset(self.store.quarantined(listed.id))
            config = _config(listed)
            self.index.configure_list(listed.id, *config)
            self._configs[listed.id] = config
            try:
                checked = check_list_file(path, info.list_id, info.version, info.epoch, info.digest)
                self.index.install_list(checked)
            except (OSError, ValueError) as err:
                raise Refused(str(err)) from None
        except Refused as why:
            log.warning(
                "segment file %s of list %s not used (%s): rebuilding the list from the store",
                path,
                listed.name,
                why,
            )
            return None
        self.index.set_list_state(listed.id, info.version, sorted(quarantined))
        self._filed[listed.id] = info.version
        self._unchecked[listed.id] = (self.index.list_snapshot(listed.id), info.digest)
        log.info("mapped list %s from %s at version %d", listed.name, path, info.version)
        return ServedList(listed.id, listed.name, info.version, quarantined, epoch, info.digest)

    def _follow(self, served: ServedList) -> ServedList:
        while True:
            records = self.store.changes_since(served.id, served.version)
            if not records:
                return served
            joined: list[ChangeRecord] = []
            for record in records:
                if record.kind == CHANGES and _joins(joined, record):
                    joined.append(record)
                    served = replace(served, version=record.version, digest=record.digest)
                    continue
                self._apply(joined)
                joined = []
                quarantined = served.quarantined
                if record.kind == QUARANTINE:
                    quarantined = quarantined | set(record.references())
                elif record.kind == RELEASE:
                    quarantined = quarantined - set(record.references())
                elif record.kind == CHANGES:
                    joined = [record]
                elif record.kind == EXPOSE:
                    self._expose(served.id, tuple(record.references()))
                if quarantined != served.quarantined or record.kind == EXPOSE:
                    self.index.set_list_state(served.id, record.version, sorted(quarantined))
                served = replace(
                    served,
                    version=record.version,
                    quarantined=quarantined,
                    digest=record.digest,
                )
            self._apply(joined)

    def _expose(self, list_id: int, keys: tuple[str, ...]) -> None:
        """The label keys verdicts show from an EXPOSE event on (its version is set right
        after, so a verdict's list_version says which keys it could show)."""
        config = self._configs.get(list_id)
        if config is not None and config[3] != keys:
            config = (*config[:3], keys, *config[4:])
            self.index.configure_list(list_id, *config)
            self._configs[list_id] = config

    def _apply(self, records: list[ChangeRecord]) -> None:
        """Applies consecutive batches of one list as one (see `_joins`): the first one's
        retirements, then every upsert in order, at the last one's version."""
        if not records:
            return
        first, last = records[0], records[-1]
        if len(records) == 1:
            ref_ends = first.ref_ends
        else:
            # Each batch's reference ends count from its own references' start.
            ends = array("I")
            base = 0
            for record in records:
                own = array("I", record.ref_ends)
                ends.extend(end + base for end in own)
                base += len(record.refs)
            ref_ends = ends.tobytes()
        upserts = sum(len(r.upsert_algs) for r in records)
        self._applied_since_trim += upserts + len(first.retire_algs)
        self.index.apply(
            first.list_id,
            b"".join(r.upsert_algs for r in records),
            b"".join(r.upsert_slots for r in records),
            b"".join(r.upsert_ids for r in records),
            first.retire_algs,
            first.retire_slots,
            ref_ends,
            b"".join(r.refs for r in records),
            last.version,
        )

    def start(self) -> None:
        self.catch_up()
        self._thread = threading.Thread(target=self._run, name="index-follower", daemon=True)
        self._thread.start()
        if self.segments is not None:
            self._filer = threading.Thread(
                target=self._file_segments, name="segment-files", daemon=True
            )
            self._filer.start()

    def _file_segments(self) -> None:
        """Checks the digest of lists mapped from files, and writes the files of lists
        that changed and then stayed quiet (off the follower thread: writing a large list
        takes seconds, and retractions must not wait for it)."""
        assert self.segments is not None
        while not self._stop.wait(min(1.0, max(self.segments.quiet, 0.05))):
            try:
                self._check_mapped()
                for list_id in list(self._lists):
                    if self._stop.is_set():
                        return
                    self._file_one(list_id)
            except Exception:
                log.exception("writing segment files failed; retrying")

    def _check_mapped(self) -> None:
        while self._unchecked:
            list_id, (snapshot, digest) = self._unchecked.popitem()
            found = snapshot.digest()
            if found == digest:
                continue
            log.error(
                "list id %d mapped from its segment file holds entries with digest %s, not "
                "the store's %s: reloading it from the store",
                list_id,
                found.hex(),
                digest.hex(),
            )
            with self._lock:
                self._reload.add(list_id)
                self._filed.pop(list_id, None)
                self._seen_seq = -1  # the next catch-up reloads it
            self.catch_up()

    def _file_one(self, list_id: int) -> None:
        assert self.segments is not None
        now = time.monotonic()
        with self._lock:
            served = self._lists.get(list_id)
            if (
                served is None
                or self._filed.get(list_id) == served.version
                or now - self._changed_at.get(list_id, now) < self.segments.quiet
                or now < self._next_write.get(list_id, now)
                or not self.segments.is_writer()
            ):
                return
            # Taken under the lock: no batch is applied between the snapshot and the
            # version and digest it is filed under.
            snapshot = self.index.list_snapshot(list_id)
            info = SegmentInfo(list_id, served.version, served.epoch, served.digest)
        size = self.segments.save(snapshot, info)
        self._filed[list_id] = info.version
        # A list changing all the time is not rewritten all the time: at most a tenth of
        # the time goes to writing its file.
        done = time.monotonic()
        self._next_write[list_id] = done + WRITE_SHARE * (done - now)
        log.info(
            "wrote the segment file of list %s at version %d (%d bytes)",
            served.name,
            info.version,
            size,
        )
        self._serve_from_file(info)

    def _serve_from_file(self, info: SegmentInfo) -> None:
        """Serves the list from the file just written, when the list has not changed
        since: its pages are then shared with the other workers and the next start, and
        the index this process built in its own memory is freed (after a bulk load of
        100 M, anonymous memory went from 11.7 to 3.3 GB, before the trim below). A list
        that changed meanwhile keeps its index, and the file's pages leave the page
        cache."""
        assert self.segments is not None
        if self._at(info) and self._install(info):
            # The built index's reference pages were heap blocks: freed by the install,
            # and kept by the C allocator unless handed back.
            _release_freed()
        else:
            self.segments.drop_cached(info.list_id)

    def _install(self, info: SegmentInfo) -> bool:
        """Whether the list now serves from its file at `info`. The file is read and
        checked whole first, without holding back the follower (seconds for a big list);
        it is installed only if the list is still at that version."""
        assert self.segments is not None
        path = self.segments.path(info.list_id)
        try:
            checked = check_list_file(path, info.list_id, info.version, info.epoch, info.digest)
        except (OSError, ValueError) as err:
            log.error("segment file %s does not read back as written: %s", path, err)
            return False
        with self._lock:
            if not self._at(info):
                return False
            self.index.install_list(checked)
        log.info(
            "serving list id %d from its segment file at version %d", info.list_id, info.version
        )
        return True

    def _at(self, info: SegmentInfo) -> bool:
        """Whether the list is served at exactly the file's version and epoch."""
        served = self._lists.get(info.list_id)
        return served is not None and (served.version, served.epoch) == (info.version, info.epoch)

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
        if self._filer is not None:
            # A file being written is not waited for: the write is abandoned with the
            # process, and its temporary file removed by the next writer.
            self._filer.join(timeout=FILER_JOIN_SECONDS)
        if self.segments is not None:
            self.segments.close()


def _joins(joined: list[ChangeRecord], record: ChangeRecord) -> bool:
    """Whether a batch may be applied together with the batches before it (the first of a
    group always may): it retires nothing (a retirement could name an entry they add, and
    is applied before the upserts of its batch), and the whole stays within JOIN_ENTRIES.
    (Every upsert of a change record has its reference end: the store writes them so.)"""
    if not joined:
        return True
    if record.retire_algs:
        return False
    return sum(len(r.upsert_algs) for r in joined) + len(record.upsert_algs) <= JOIN_ENTRIES


# What the core is configured with for a list: thresholds, name, exposed label keys, video
# shares.
Config = tuple[int, int, str, tuple[str, ...], int, int]


def _config(meta: ListMeta) -> Config:
    return (
        meta.pdq_threshold,
        meta.pdq_min_quality,
        meta.name,
        meta.exposed_label_keys,
        meta.video_query_percent,
        meta.video_listed_percent,
    )


def _release_freed() -> None:
    """Hands back to the system what the C allocator keeps of freed blocks. Loading and
    following a big list frees many transient buffers (the batches read from LMDB, their
    decoded copies) that glibc would otherwise keep: a process that rebuilt a list of 1 M
    PDQ entries from LMDB held 0.19 GiB of anonymous memory without this, 0.15 GiB with it.
    A no-op where the C library has no malloc_trim."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)

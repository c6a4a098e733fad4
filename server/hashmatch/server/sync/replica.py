"""A read replica: copies a primary's tenants and lists into this server's own LMDB.

One ReplicationService.Follow stream carries everything, however many lists there are:
the tenants (token revocations included) and grants, each list as it appears, and every list's
committed batches. The stream is opened with the local version of each list, so a restart
or a dropped connection resumes exactly where the local store stopped. Batches are applied
through the same store path as on the primary, with the primary's batch IDs and versions.

Verify or stop: every batch must give the version and digest the primary gave it, in the
write transaction that applies it, and each list the stream announces is compared with
the primary's version and digest. A list whose copy differs (the same version with another
digest, or a primary behind this copy: e.g. a primary restored from an older copy of its
data) is reset in the store to an empty, unverified list, which no serving process serves;
the replicator then copies it again from version 0 by itself, on a new stream. A list is
served again, as a list copied for the first time is, only once its copy reaches the
version the primary announced, with the primary's digest (store/resync.py).

Two threads whatever the number of lists: one reads the stream, one applies what arrived
and reconnects (1 s, doubling to 30 s) when the stream fails.

Freshness (with max_lag > 0): the primary sends an empty event, a heartbeat, whenever it has
sent this replica every batch it serves (at most once a second while idle). Applying one
proves the copy was current when it was sent. A replica that has applied none for max_lag
seconds (cut off from the primary, or applying more slowly than the primary commits) marks
its store stale: every serving process then reports NOT_SERVING, still answering whoever
calls it directly, until a heartbeat is applied again. It reconnects at least every
max_lag / 4 seconds meanwhile, so a primary restart shorter than max_lag costs no rotation.
The primary's versions as heard are recorded in the store too, for `admin promote`.

Lag, per list: the primary's version (announced at the start of each stream, then the
version of each batch received) minus the version copied here, and the age of the oldest
batch received and not applied yet (hashmatch_replica_lag_versions and _seconds). A list
seen behind the primary logs "replica caught up: LIST at version N" once it reaches the
primary's version.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TypeAlias

import grpc

from hashmatch.client.connection import Connection
from hashmatch.client.errors import HashmatchError, from_rpc_error
from hashmatch.server.core import parse_changes
from hashmatch.server.metrics import Metrics
from hashmatch.server.store import (
    PlatformSettings,
    Role,
    StaleVersion,
    Store,
    Tenant,
    replica_state,
    resync,
)
from hashmatch.server.store import grants as store_grants
from hashmatch.server.store.changelog import QUARANTINE, RELEASE
from hashmatch.server.sync.follower import IndexFollower
from hashmatch.v1 import lists_pb2, replication_pb2, replication_pb2_grpc

log = logging.getLogger(__name__)

# Events read ahead of the store (the reader waits when this many are queued).
QUEUED_EVENTS = 64
# Entries applied in one store transaction per list while catching up.
GROUP_ENTRIES = 1_000_000
# Waits between attempts to reach the primary: the first, and the most.
INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 30.0
# The primary sends the tenants at least every 30 s; a stream silent for this long is
# taken for a dead connection and reopened.
SILENCE_SECONDS = 90.0
# With max_lag: a stream this many seconds silent (the primary sends a heartbeat every
# second) is taken for dead, at least.
MIN_SILENCE_WITH_MAX_LAG = 3.0
# Wait before re-copying a list found to differ from the primary's; while lists keep
# differing right after being copied again, the waits grow as the backoff above does.
RESYNC_DELAY = 0.0

# What the reader hands over: an event, how the stream failed, or None when it ended.
Item: TypeAlias = replication_pb2.FollowEvent | BaseException | None


class ApplyFailed(HashmatchError):
    """What the primary sent could not be applied here."""


class _StreamEnded(HashmatchError):
    pass


class _Resync(HashmatchError):
    """Lists were reset: follow again from their new positions."""


class Replicator:
    def __init__(
        self,
        store: Store,
        follower: IndexFollower,
        connection: Connection,
        metrics: Metrics | None = None,
        max_lag: float = 0.0,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.follower = follower
        self.connection = connection
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._channel = connection.open_channel()
        self._replication = replication_pb2_grpc.ReplicationServiceStub(self._channel)
        self._call: grpc.Future | None = None
        # On the current stream: the version the primary announced of each list (an
        # unverified list is verified when its copy reaches it)...
        self._targets: dict[str, int] = {}
        # ...and the lists reset because their copy differed (followed again from 0).
        self._reset: set[str] = set()
        # Wait before the next re-copy (grows while copies keep differing).
        self._resync_wait = RESYNC_DELAY
        # Whether the current stream has delivered anything (then the backoff restarts),
        # and whether the last one did, for logging state changes only.
        self._connected = False
        self._following: bool | None = None
        # The primary's grants as last received: mirrored again when a list they name is
        # created here (a grant may come before its list on the stream).
        self._grants: list[store_grants.NamedGrant] = []
        # Lag, noted by the reader as events arrive: the primary's version of each list,
        # and the (version, committed_at) of each batch received and not applied yet...
        self._lag_lock = threading.Lock()
        self._primary_versions: dict[str, int] = {}
        self._unapplied: dict[str, deque[tuple[int, float]]] = {}
        # ...and the lists seen behind the primary (logged once caught up).
        self._behind: set[str] = set()
        # The primary's versions as last recorded in the store.
        self._recorded: dict[str, int] = {}
        # Freshness: when the last heartbeat was applied (monotonic), and what the store
        # says (None: current; else why not), as last written by this replicator.
        self.max_lag = max_lag
        self._fresh_at: float | None = None
        self._stale: str | None = replica_state.stale_reason(store)
        self._max_backoff = reconnect_ceiling(max_lag)
        self._silence = max(max_lag, MIN_SILENCE_WITH_MAX_LAG) if max_lag else SILENCE_SECONDS

    def start(self) -> None:
        replica_state.follow(self.store, self.connection.server)
        self._check_fresh()
        self._thread = threading.Thread(target=self._run, name="replica", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()
        self._channel.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _wait(self, seconds: float) -> None:
        """Waits (unless stopped), keeping the freshness mark up to date meanwhile."""
        end = time.monotonic() + seconds
        while not self._stop.is_set():
            self._check_fresh()
            left = end - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(left, 0.5))

    def _check_fresh(self) -> None:
        """Marks the store stale when no heartbeat was applied for max_lag seconds, and
        current again once one is."""
        if not self.max_lag:
            stale: str | None = None
        elif self._fresh_at is None:
            stale = f"not caught up with primary {self.connection.server} yet"
        elif time.monotonic() - self._fresh_at > self.max_lag:
            stale = (
                f"not proven current with primary {self.connection.server} for over "
                f"{self.max_lag:g} s (max_lag)"
            )
        else:
            stale = None
        if (stale is None) == (self._stale is None):
            return
        replica_state.set_stale(self.store, stale)
        self._stale = stale
        if stale is None:
            log.info("replica: current with primary %s again", self.connection.server)
        else:
            log.warning("replica: %s", stale)
        self.follower.catch_up()

    def _run(self) -> None:
        delay = min(INITIAL_BACKOFF, self._max_backoff)
        while not self._stop.is_set():
            try:
                self._follow()
            except _Resync:
                # Not a failure of the primary: reconnect at once (or after the growing
                # wait, when the copies keep differing).
                self._wait(self._resync_wait)
                self._resync_wait = min(max(self._resync_wait * 2, INITIAL_BACKOFF), MAX_BACKOFF)
                delay = min(INITIAL_BACKOFF, self._max_backoff)
            except Exception as exc:
                if self._stop.is_set():
                    return
                local = not isinstance(exc, HashmatchError) or isinstance(exc, ApplyFailed)
                if not isinstance(exc, HashmatchError):
                    log.exception("replica: applying what the primary sent failed")
                if self._following is not False:
                    log.warning(
                        "replica: not following primary %s (%s); retrying every %g-%g s",
                        self.connection.server,
                        exc,
                        min(INITIAL_BACKOFF, self._max_backoff),
                        self._max_backoff,
                    )
                    self._following = False
                else:
                    log.debug("replica: still not following %s: %s", self.connection.server, exc)
                # A stream that got through starts the backoff over, unless what broke it
                # was applying its content (that will most likely fail again).
                if self._connected and not local:
                    delay = min(INITIAL_BACKOFF, self._max_backoff)
                self._wait(delay)
                delay = min(delay * 2, self._max_backoff)

    def _follow(self) -> None:
        """Follows one stream until it fails (raises) or the replicator stops.

        The reader thread queues events as they arrive; this thread applies as many as
        have arrived at once, each list's batches in one store transaction: a replica
        catching up writes each B-tree page once per group, not once per batch.
        """
        self._connected = False
        self._targets = {}
        self._reset = set()
        with self._lag_lock:
            self._unapplied = {}  # a new stream sends them again
        positions = [
            replication_pb2.ListPosition(list=m.name, version=m.version) for m in self.store.lists()
        ]
        call = self._replication.Follow(
            replication_pb2.FollowRequest(positions=positions),
            metadata=self.connection.metadata(),
        )
        self._call = call
        arrived: queue.Queue[Item] = queue.Queue(maxsize=QUEUED_EVENTS)
        closed = threading.Event()
        reader = threading.Thread(
            target=_read,
            args=(call, arrived, closed, self._note),
            name="replica-read",
            daemon=True,
        )
        reader.start()
        try:
            heard = time.monotonic()
            while not self._stop.is_set():
                self._check_fresh()
                try:
                    first = arrived.get(timeout=0.5)
                except queue.Empty:
                    if self._unapplied:
                        self._update_lag()
                    if time.monotonic() - heard > self._silence:
                        raise HashmatchError(f"nothing heard for {self._silence:g} s") from None
                    continue
                heard = time.monotonic()
                group = [first]
                size = 0
                while size < GROUP_ENTRIES and isinstance(group[-1], replication_pb2.FollowEvent):
                    size += _entries(group[-1])
                    try:
                        group.append(arrived.get_nowait())
                    except queue.Empty:
                        break
                self._apply_group(group)
        finally:
            closed.set()
            call.cancel()
            self._call = None
            reader.join(timeout=5)

    def _note_behind(self, announced: lists_pb2.HashList) -> None:
        """A list the primary announces ahead of the copy here is behind, even when all of
        its batches then arrive in the group that announced it (applied before any lag is
        looked at): it logs "caught up" once it reaches the announced version."""
        meta = self.store.get_list(announced.name)
        if meta is not None and meta.version < announced.version:
            self._behind.add(announced.name)

    def _apply_group(self, group: list[Item]) -> None:
        """Applies events in arrival order; each list's batches together at the end (lists
        are independent; a list's creation comes before its batches)."""
        batches: dict[str, list[lists_pb2.ChangeBatch]] = {}
        end: BaseException | None = None
        heartbeat = False
        for item in group:
            if item is None:
                end = _StreamEnded("the primary ended the stream")
            elif isinstance(item, BaseException):
                end = item
            else:
                if not self._connected:
                    self._connected = True
                    if self._following is not True:
                        log.info("replica: following primary %s", self.connection.server)
                        self._following = True
                kind = item.WhichOneof("event")
                if kind == "tenants":
                    self._mirror_tenants(item.tenants)
                elif kind == "list":
                    self._create_list(item.list)
                    self._note_behind(item.list)
                elif kind == "batch":
                    batches.setdefault(item.batch.list, []).append(item.batch)
                elif kind is None:
                    heartbeat = True
        for name, run in batches.items():
            if name not in self._reset:
                self._apply_all(name, run)
        self.follower.catch_up()
        self._update_lag()
        if heartbeat and not self._reset:
            # Everything the primary had sent before it is applied now.
            self._fresh_at = time.monotonic()
            self._check_fresh()
        if self._reset:
            raise _Resync(f"re-copying {', '.join(sorted(self._reset))} from the primary")
        if end is not None:
            raise end

    def _note(self, event: replication_pb2.FollowEvent) -> None:
        """Called by the reader for each event as it arrives (before it is applied)."""
        kind = event.WhichOneof("event")
        with self._lag_lock:
            if kind == "list":
                self._primary_versions[event.list.name] = event.list.version
            elif kind == "batch":
                batch = event.batch
                have = self._primary_versions.get(batch.list, 0)
                self._primary_versions[batch.list] = max(have, batch.version)
                committed = (
                    batch.committed_at.ToMicroseconds() / 1e6
                    if batch.HasField("committed_at")
                    else time.time()
                )
                self._unapplied.setdefault(batch.list, deque()).append((batch.version, committed))

    def _update_lag(self) -> None:
        """Compares each list copied here with the primary's version: sets the lag gauges
        and logs the lists that caught up."""
        local = {meta.name: meta.version for meta in self.store.lists()}
        now = time.time()
        with self._lag_lock:
            lags: list[tuple[str, int, int, float]] = []
            for name, primary in self._primary_versions.items():
                version = local.get(name, 0)
                pending = self._unapplied.get(name)
                while pending and pending[0][0] <= version:
                    pending.popleft()
                behind = max(0, primary - version)
                age = max(0.0, now - pending[0][1]) if behind and pending else 0.0
                lags.append((name, version, behind, age))
            heard = dict(self._primary_versions)
        if any(self._recorded.get(name, -1) < version for name, version in heard.items()):
            replica_state.note_primary_versions(self.store, heard)
            self._recorded = heard
        for name, version, behind, age in lags:
            if self.metrics is not None:
                self.metrics.replica_lag_versions.labels(name).set(behind)
                self.metrics.replica_lag_seconds.labels(name).set(age)
            if behind:
                self._behind.add(name)
            elif name in self._behind:
                self._behind.discard(name)
                log.info(
                    "replica caught up: %s at version %d",
                    name,
                    version,
                    extra={"list": name, "version": version},
                )

    def _mirror_tenants(self, response: replication_pb2.GetTenantsResponse) -> None:
        tenants = [
            (Tenant(t.name, Role(t.role), t.created_at), list(t.token_hashes))
            for t in response.tenants
        ]
        platforms = {
            t.name: PlatformSettings(
                t.all_lists, list(t.lists), [(h.algorithm, h.value) for h in t.allow_list]
            )
            for t in response.tenants
            if t.role == Role.PLATFORM.value
        }
        if self.store.mirror_tenants(tenants, platforms):
            log.info("replica: tenants updated from the primary")
        self._grants = [
            store_grants.NamedGrant(g.list, g.tenant, g.granted_at, g.granted_by)
            for g in response.grants
        ]
        self._mirror_grants()

    def _mirror_grants(self) -> None:
        if store_grants.mirror_grants(self.store, self._grants):
            log.info("replica: grants updated from the primary")

    def _create_list(self, info: lists_pb2.HashList) -> None:
        """A list as the primary announces it (every list, at the start of each stream):
        created here when new, then compared with the primary's version and digest."""
        name = info.name
        self._targets[name] = info.version
        if self.store.get_list(name) is None:
            if info.version != 0 or info.digest != resync.EMPTY_DIGEST:
                # Not served before its copy is verified (marked before it exists).
                resync.mark_unverified(self.store, name)
            # Only this thread creates lists here: a replica refuses every write.
            self.store.create_list(
                name,
                info.owner,
                pdq_threshold=info.pdq_threshold,
                pdq_min_quality=info.pdq_min_quality,
                video_query_percent=info.video_query_percent,
                video_listed_percent=info.video_listed_percent,
                # Later changes arrive as change-log events (UpdateList).
                exposed_label_keys=tuple(info.exposed_label_keys),
            )
            log.info("replica: list %s created from the primary", name)
            if any(g.list == name for g in self._grants):
                self._mirror_grants()
        self._checked(
            name,
            resync.check_primary(self.store, name, info.version, info.digest, actor=self._actor()),
        )

    def _checked(self, name: str, checked: resync.Checked) -> bool:
        """Logs what checking a list found; False when it was reset."""
        if checked.diverged is not None:
            self._reset.add(name)
            # This process stops serving it now; the others at their next poll.
            self.follower.catch_up()
            log.error(
                "replica: list %s does not match primary %s (%s): not serving it; "
                "copying it again from the primary",
                name,
                self.connection.server,
                checked.diverged,
            )
            return False
        if checked.verified:
            self._resync_wait = RESYNC_DELAY
            log.info(
                "replica: list %s verified against the primary at version %d; serving it",
                name,
                checked.version,
            )
        return True

    def _apply_all(self, name: str, batches: list[lists_pb2.ChangeBatch]) -> None:
        """Applies one list's batches in order: runs of entry batches together, events
        one by one; stops at a batch that does not check out (the list is reset)."""
        run: list[lists_pb2.ChangeBatch] = []
        for batch in batches:
            if batch.batch_id:
                run.append(batch)
                continue
            if not self._apply_run(name, run) or not self._apply_event(name, batch):
                return
            run = []
        self._apply_run(name, run)

    def _actor(self) -> str:
        return f"replica-of:{self.connection.server}"

    def _apply_event(self, name: str, batch: lists_pb2.ChangeBatch) -> bool:
        """A quarantine, a release or a change of the exposed label keys: it changes no
        entry, so the list must already hold the digest the primary's event carries."""
        meta = self.store.get_list(name)
        if meta is None:
            raise ApplyFailed(f"the primary sent events of {name} before the list")
        reason = None
        if meta.version != batch.version - 1:
            reason = f"the primary's batch {batch.version} does not follow version {meta.version}"
        elif meta.digest != batch.digest:
            reason = f"digest differs from the primary's at version {meta.version}"
        else:
            kind = QUARANTINE if batch.quarantined else RELEASE
            refs = list(batch.quarantined or batch.released)
            try:
                if batch.HasField("exposed_label_keys"):
                    self.store.update_list(
                        name,
                        actor=self._actor(),
                        exposed_label_keys=tuple(batch.exposed_label_keys.keys),
                        expected_version=batch.version - 1,
                    )
                else:
                    self.store.apply_event(
                        name, kind, refs, actor=self._actor(), expected_version=batch.version - 1
                    )
            except StaleVersion as exc:
                reason = f"the primary's batch {batch.version} does not follow {exc.current}"
        if reason is not None:
            resync.reset_list(self.store, name, actor=self._actor(), reason=reason)
            return self._checked(name, resync.Checked(0, diverged=reason))
        target = self._targets.get(name)
        verified = (
            target is not None
            and batch.version >= target
            and not resync.is_verified(self.store, name)
            and resync.mark_verified(self.store, name)
        )
        return self._checked(name, resync.Checked(batch.version, verified=verified))

    def _apply_run(self, name: str, batches: list[lists_pb2.ChangeBatch]) -> bool:
        if not batches:
            return True
        meta = self.store.get_list(name)
        if meta is None:
            raise ApplyFailed(f"the primary sent batches of {name} before the list")
        changes = [
            parse_changes(
                lists_pb2.ApplyChangesRequest(
                    list=name,
                    batch_id=b.batch_id,
                    upserts=b.upserts,
                    retirements=b.retirements,
                    expected_version=b.version - 1,
                ).SerializeToString(),
                meta.pdq_min_quality,
            )
            for b in batches
        ]
        checked = resync.apply_checked(
            self.store,
            name,
            [(c, b.version, b.digest) for c, b in zip(changes, batches, strict=True)],
            actor=self._actor(),
            verify_at=self._targets.get(name),
        )
        return self._checked(name, checked)


def reconnect_ceiling(max_lag: float) -> float:
    """The longest wait between attempts to reach the primary: a quarter of max_lag (at
    least 0.25 s), so a primary back within max_lag is followed again in time."""
    return min(MAX_BACKOFF, max(0.25, max_lag / 4)) if max_lag else MAX_BACKOFF


def _entries(event: replication_pb2.FollowEvent) -> int:
    if event.WhichOneof("event") != "batch":
        return 0
    return len(event.batch.upserts) + len(event.batch.retirements)


def _read(
    call: grpc.Future,
    arrived: queue.Queue[Item],
    closed: threading.Event,
    note: Callable[[replication_pb2.FollowEvent], None],
) -> None:
    """Moves a stream's events to the queue, then how it ended (None, or the error);
    `note` sees each event as it arrives."""
    end: Item = None
    try:
        for event in call:  # type: ignore[attr-defined]
            note(event)
            if not _put(arrived, event, closed):
                return
    except grpc.RpcError as exc:
        end = from_rpc_error(exc)
    except BaseException as exc:  # handed to the applying thread
        end = exc
    _put(arrived, end, closed)


def _put(arrived: queue.Queue[Item], item: Item, closed: threading.Event) -> bool:
    while not closed.is_set():
        try:
            arrived.put(item, timeout=0.5)
            return True
        except queue.Full:
            continue
    return False

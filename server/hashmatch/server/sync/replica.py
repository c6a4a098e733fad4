"""A read replica: copies a primary's tenants and lists into this server's own LMDB.

Each list is followed with WatchChanges from the local version, so a restart or a dropped
connection resumes exactly where the local store stopped. Batches are applied through the
same store path as on the primary, with the primary's batch IDs and versions, and the
digest after each batch is checked against the primary's.
"""

from __future__ import annotations

import logging
import queue
import threading

import grpc

from hashmatch.client.connection import Connection
from hashmatch.client.errors import HashmatchError
from hashmatch.client.list_client import ListClient
from hashmatch.server.core import parse_changes
from hashmatch.server.store import PlatformSettings, Role, StaleVersion, Store, Tenant
from hashmatch.server.store.changelog import QUARANTINE, RELEASE
from hashmatch.server.sync.follower import IndexFollower
from hashmatch.v1 import lists_pb2, replication_pb2, replication_pb2_grpc

log = logging.getLogger(__name__)

# Batches read ahead of the store (the reader waits when this many are queued).
QUEUED_BATCHES = 64
# Entries applied in one store transaction while catching up.
GROUP_ENTRIES = 1_000_000


class Replicator:
    def __init__(
        self,
        store: Store,
        follower: IndexFollower,
        connection: Connection,
        poll_interval: float = 1.0,
    ) -> None:
        self.store = store
        self.follower = follower
        self.connection = connection
        self.poll_interval = poll_interval
        self._stop = threading.Event()
        self._watchers: dict[str, threading.Thread] = {}
        self._thread: threading.Thread | None = None
        self._lists = ListClient(connection)
        self._channel = connection.open_channel()
        self._replication = replication_pb2_grpc.ReplicationServiceStub(self._channel)

    def start(self) -> None:
        self.store.mark_replica(self.connection.server)
        self._thread = threading.Thread(target=self._run, name="replica", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._lists.close()
        self._channel.close()
        for t in [self._thread, *self._watchers.values()]:
            if t is not None:
                t.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
            except (HashmatchError, grpc.RpcError) as exc:
                log.warning("replica: primary %s unreachable: %s", self.connection.server, exc)
            except Exception:
                log.exception("replica: sync failed; retrying")
            self._stop.wait(self.poll_interval)

    def sync_once(self) -> None:
        """Mirrors tenants and creates any new list, starting a watcher for it."""
        response = self.connection.call(
            lambda: self._replication.GetTenants(
                replication_pb2.GetTenantsRequest(),
                timeout=self.connection.timeout,
                metadata=self.connection.metadata(),
            )
        )
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
        for info in self._lists.list_lists():
            if self.store.get_list(info.name) is None:
                # Only this thread creates lists here: a replica refuses every write.
                self.store.create_list(
                    info.name,
                    info.owner,
                    pdq_threshold=info.pdq_threshold,
                    pdq_min_quality=info.pdq_min_quality,
                )
                self.follower.catch_up()
            watcher = self._watchers.get(info.name)
            if watcher is None or not watcher.is_alive():
                watcher = threading.Thread(
                    target=self._watch, args=(info.name,), name=f"watch-{info.name}", daemon=True
                )
                self._watchers[info.name] = watcher
                watcher.start()

    def _watch(self, name: str) -> None:
        """Follows one list until stopped or the stream fails (the next sync restarts it).

        A reader thread takes batches off the stream while this one applies them, as many
        as have arrived at once in one store transaction: a replica catching up on a large
        list then writes each B-tree page once per group, not once per batch.
        """
        meta = self.store.get_list(name)
        if meta is None:
            return
        arrived: queue.Queue[lists_pb2.ChangeBatch | BaseException | None] = queue.Queue(
            maxsize=QUEUED_BATCHES
        )

        def read() -> None:
            try:
                for batch in self._lists.watch_changes(name, meta.version):
                    arrived.put(batch)
                    if self._stop.is_set():
                        break
                arrived.put(None)
            except BaseException as exc:  # handed to the applying thread
                arrived.put(exc)

        threading.Thread(target=read, name=f"read-{name}", daemon=True).start()
        try:
            while not self._stop.is_set():
                try:
                    first = arrived.get(timeout=0.5)
                except queue.Empty:
                    continue
                group = [first]
                size = 0
                while size < GROUP_ENTRIES and isinstance(group[-1], lists_pb2.ChangeBatch):
                    size += len(group[-1].upserts) + len(group[-1].retirements)
                    try:
                        group.append(arrived.get_nowait())
                    except queue.Empty:
                        break
                batches = [b for b in group if isinstance(b, lists_pb2.ChangeBatch)]
                self._apply_all(name, batches)
                end = group[-1]
                if end is None:
                    return
                if isinstance(end, BaseException):
                    raise end
        except HashmatchError as exc:
            if not self._stop.is_set():
                log.warning("replica: watching %s stopped: %s", name, exc)

    def _apply_all(self, name: str, batches: list[lists_pb2.ChangeBatch]) -> None:
        """Applies batches in order: runs of entry batches together, events one by one."""
        run: list[lists_pb2.ChangeBatch] = []
        for batch in batches:
            if batch.batch_id:
                run.append(batch)
                continue
            self._apply_run(name, run)
            run = []
            self._apply_event(name, batch)
        self._apply_run(name, run)
        self.follower.catch_up()

    def _actor(self) -> str:
        return f"replica-of:{self.connection.server}"

    def _diverged(self, name: str, local: int, primary: int) -> HashmatchError:
        log.error(
            "replica: %s diverged (local version %d, primary batch %d); not applying",
            name,
            local,
            primary,
        )
        return HashmatchError("replica diverged")

    def _apply_event(self, name: str, batch: lists_pb2.ChangeBatch) -> None:
        kind = QUARANTINE if batch.quarantined else RELEASE
        refs = list(batch.quarantined or batch.released)
        try:
            self.store.apply_event(
                name, kind, refs, actor=self._actor(), expected_version=batch.version - 1
            )
        except StaleVersion as exc:
            raise self._diverged(name, exc.current, batch.version) from exc

    def _apply_run(self, name: str, batches: list[lists_pb2.ChangeBatch]) -> None:
        if not batches:
            return
        meta = self.store.get_list(name)
        assert meta is not None, "a watched list exists locally"
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
        outcomes, error = self.store.apply_many(name, changes, actor=self._actor())
        for batch, outcome in zip(batches, outcomes, strict=False):
            if outcome.digest != batch.digest:
                log.error(
                    "replica: %s digest differs from the primary's at version %d",
                    name,
                    batch.version,
                )
        if isinstance(error, StaleVersion):
            raise self._diverged(name, error.current, batches[len(outcomes)].version)
        if error is not None:
            raise HashmatchError(f"replica could not apply a batch of {name}: {error}")

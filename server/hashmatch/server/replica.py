"""A read replica: copies a primary's tenants and lists into this server's own LMDB.

Each list is followed with WatchChanges from the local version, so a restart or a dropped
connection resumes exactly where the local store stopped. Batches are applied through the
same store path as on the primary, with the primary's batch IDs and versions, and the
digest after each batch is checked against the primary's.
"""

from __future__ import annotations

import logging
import threading

import grpc

from hashmatch.client.connection import Connection
from hashmatch.client.errors import HashmatchError
from hashmatch.client.list_client import ListClient
from hashmatch.server.changelog import QUARANTINE, RELEASE
from hashmatch.server.core import parse_changes
from hashmatch.server.follower import IndexFollower
from hashmatch.server.store import PlatformSettings, Role, StaleVersion, Store, Tenant
from hashmatch.v1 import lists_pb2, replication_pb2, replication_pb2_grpc

log = logging.getLogger(__name__)


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
        """Follows one list until stopped or the stream fails (the next sync restarts it)."""
        meta = self.store.get_list(name)
        if meta is None:
            return
        try:
            for batch in self._lists.watch_changes(name, meta.version):
                if self._stop.is_set():
                    return
                self._apply(name, batch)
        except HashmatchError as exc:
            if not self._stop.is_set():
                log.warning("replica: watching %s stopped: %s", name, exc)

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

    def _apply(self, name: str, batch: lists_pb2.ChangeBatch) -> None:
        if not batch.batch_id:  # a quarantine or release event
            kind = QUARANTINE if batch.quarantined else RELEASE
            refs = list(batch.quarantined or batch.released)
            try:
                self.store.apply_event(
                    name, kind, refs, actor=self._actor(), expected_version=batch.version - 1
                )
            except StaleVersion as exc:
                raise self._diverged(name, exc.current, batch.version) from exc
            self.follower.catch_up()
            return
        meta = self.store.get_list(name)
        assert meta is not None, "a watched list exists locally"
        request = lists_pb2.ApplyChangesRequest(
            list=name,
            batch_id=batch.batch_id,
            upserts=batch.upserts,
            retirements=batch.retirements,
            expected_version=batch.version - 1,
        )
        changes = parse_changes(request.SerializeToString(), meta.pdq_min_quality)
        try:
            outcome = self.store.apply_changes(name, changes, actor=self._actor())
        except StaleVersion as exc:
            raise self._diverged(name, exc.current, batch.version) from exc
        if outcome.digest != batch.digest:
            log.error(
                "replica: %s digest differs from the primary's at version %d", name, batch.version
            )
        self.follower.catch_up()

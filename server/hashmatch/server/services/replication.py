"""ReplicationService: what a read replica copies, on one stream however many lists."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from hashmatch.server.services.access import require_role
from hashmatch.server.services.lists import change_batch, to_proto
from hashmatch.server.store import ListMeta, Role, Store, Tenant
from hashmatch.server.store import grants as store_grants
from hashmatch.server.store.changelog import ChangeRecord
from hashmatch.server.sync.follower import IndexFollower
from hashmatch.v1 import hashes_pb2, replication_pb2

# Batches read from the change log per list per step of a Follow stream: the lists behind
# take turns a page each, so one long catch-up does not hold back the others.
FOLLOW_PAGE = 64
# While commits keep coming, tenants are re-read at most this often...
TENANTS_CHECK_SECONDS = 0.5
# ...and sent at least this often even when unchanged.
TENANTS_HEARTBEAT_SECONDS = 30.0
# While this stream has nothing pending, an empty event at most this often: a heartbeat that
# tells the replica it has been sent every batch served here (its proof of freshness).
HEARTBEAT_SECONDS = 1.0

_EVENT = replication_pb2.FollowEvent.DESCRIPTOR.fields_by_name
_TENANTS_FIELD = _EVENT["tenants"].number
_LIST_FIELD = _EVENT["list"].number
_BATCH_FIELD = _EVENT["batch"].number


class ReplicationServicer:
    def __init__(self, store: Store, follower: IndexFollower) -> None:
        self.store = store
        self.follower = follower

    def GetTenants(
        self,
        request: replication_pb2.GetTenantsRequest,
        tenant: Tenant,
    ) -> replication_pb2.GetTenantsResponse:
        require_role(tenant, Role.REPLICA)
        return self._tenants()

    async def Follow(
        self,
        request: replication_pb2.FollowRequest,
        tenant: Tenant,
    ) -> AsyncIterator[bytes]:
        """Tenants, lists and every list's batches on one stream, then live changes.

        One coroutine whatever the number of lists: it reads the change log in pages on
        the thread pool, and while nothing is pending it waits for the index follower's
        next catch-up, holding no thread, with an empty event (a heartbeat) each second.
        Batches of one list go out in version order from the replica's position; a new
        list is announced before its first batch.
        """
        require_role(tenant, Role.REPLICA)
        loop = asyncio.get_running_loop()
        start = {p.list: p.version for p in request.positions}
        # Lists announced on this stream: id -> (name, last version sent).
        sent: dict[int, tuple[str, int]] = {}
        tenants_sent = b""
        tenants_seq = -1  # follower seq as of the last tenants read
        tenants_read = tenants_at = heartbeat_at = float("-inf")
        while True:
            # Every commit up to `seen` is visible to the reads below; a later one wakes
            # the wait at the end.
            seen = self.follower.seq()
            now = loop.time()
            heartbeat = now - tenants_at >= TENANTS_HEARTBEAT_SECONDS
            if heartbeat or (seen > tenants_seq and now - tenants_read >= TENANTS_CHECK_SECONDS):
                tenants_seq, tenants_read = seen, now
                body = (await asyncio.to_thread(self._tenants)).SerializeToString()
                if heartbeat or body != tenants_sent:
                    tenants_sent, tenants_at = body, now
                    yield _event(_TENANTS_FIELD, body)

            served = self.follower.lists()
            if served.keys() - sent.keys():
                for meta in await asyncio.to_thread(self._new_lists, set(sent)):
                    sent[meta.id] = (meta.name, start.get(meta.name, 0))
                    yield _event(_LIST_FIELD, to_proto(meta).SerializeToString())

            # One page of each list that is behind, then round again (without waiting)
            # until none is.
            progressed = False
            for list_id, (name, version) in list(sent.items()):
                current = served.get(list_id)
                if current is None or current.version <= version:
                    continue
                records = await asyncio.to_thread(self._page, list_id, version)
                for record in records:
                    yield _event(_BATCH_FIELD, change_batch(name, record))
                    sent[list_id] = (name, record.version)
                progressed = progressed or bool(records)
            if progressed:
                continue

            # Nothing pending: every batch served as of `seen` has been sent.
            if loop.time() - heartbeat_at >= HEARTBEAT_SECONDS:
                heartbeat_at = loop.time()
                yield b""
            if seen > tenants_seq:  # a tenants read is due once the check interval ends
                wait = tenants_read + TENANTS_CHECK_SECONDS - loop.time()
            else:
                wait = tenants_at + TENANTS_HEARTBEAT_SECONDS - loop.time()
            wait = min(wait, heartbeat_at + HEARTBEAT_SECONDS - loop.time())
            if wait > 0:
                await self.follower.changed(seen, timeout=wait)

    def _tenants(self) -> replication_pb2.GetTenantsResponse:
        platforms = self.store.platform_settings()
        out = []
        for t, hashes in self.store.tenant_tokens():
            msg = replication_pb2.ReplicatedTenant(
                name=t.name, role=t.role.value, token_hashes=hashes, created_at=t.created_at
            )
            settings = platforms.get(t.name)
            if t.role == Role.PLATFORM:
                # Every list unless the platform chose otherwise.
                msg.all_lists = settings is None or settings.all_lists
            if settings is not None:
                msg.lists.extend(settings.lists)
                msg.allow_list.extend(
                    hashes_pb2.Hash(algorithm=alg, value=value)  # type: ignore[arg-type]
                    for alg, value in settings.allow
                )
            out.append(msg)
        # Grants too: a grant or a revocation changes this message, so the Follow stream
        # sends it as it does a tenant change.
        grants = [
            replication_pb2.ReplicatedGrant(
                list=g.list, tenant=g.tenant, granted_at=g.granted_at, granted_by=g.granted_by
            )
            for g in store_grants.all_grants(self.store)
        ]
        return replication_pb2.GetTenantsResponse(tenants=out, grants=grants)

    def _new_lists(self, known: set[int]) -> list[ListMeta]:
        """Lists not announced yet, oldest first."""
        return sorted((m for m in self.store.lists() if m.id not in known), key=lambda m: m.id)

    def _page(self, list_id: int, after: int) -> list[ChangeRecord]:
        return self.store.changes_since(list_id, after, FOLLOW_PAGE)


def _event(field_number: int, message: bytes) -> bytes:
    """A FollowEvent with one field set to an already encoded message: the batches'
    bytes go out as the change log encoded them, with no decoding on the way."""
    return _varint(field_number << 3 | 2) + _varint(len(message)) + message


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)

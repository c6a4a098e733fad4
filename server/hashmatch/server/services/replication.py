"""ReplicationService: what a read replica copies besides the lists themselves."""

from __future__ import annotations

from hashmatch.server.services.access import require_role
from hashmatch.server.store import Role, Store, Tenant
from hashmatch.v1 import hashes_pb2, replication_pb2


class ReplicationServicer:
    def __init__(self, store: Store) -> None:
        self.store = store

    def GetTenants(
        self,
        request: replication_pb2.GetTenantsRequest,
        tenant: Tenant,
    ) -> replication_pb2.GetTenantsResponse:
        require_role(tenant, Role.REPLICA)
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
        return replication_pb2.GetTenantsResponse(tenants=out)

"""ReplicationService: what a read replica copies besides the lists themselves."""

from __future__ import annotations

import grpc

from hashmatch.server.handlers import require_role
from hashmatch.server.store import Role, Store, Tenant
from hashmatch.v1 import replication_pb2


class ReplicationServicer:
    def __init__(self, store: Store) -> None:
        self.store = store

    def GetTenants(
        self,
        request: replication_pb2.GetTenantsRequest,
        context: grpc.ServicerContext,
        tenant: Tenant,
    ) -> replication_pb2.GetTenantsResponse:
        require_role(tenant, Role.REPLICA)
        return replication_pb2.GetTenantsResponse(
            tenants=[
                replication_pb2.ReplicatedTenant(
                    name=t.name, role=t.role.value, token_hashes=hashes, created_at=t.created_at
                )
                for t, hashes in self.store.tenant_tokens()
            ]
        )

"""ListService: hotlines create lists and keep them in sync with atomic batches."""

from __future__ import annotations

import grpc
import xxhash
from google.protobuf import timestamp_pb2

from hashmatch.client.algorithms import DIGEST_LENGTHS
from hashmatch.server import store as st
from hashmatch.server import validation
from hashmatch.server.errors import ServiceError, Violation, invalid
from hashmatch.server.follower import IndexFollower
from hashmatch.server.handlers import require_role
from hashmatch.server.store import ListMeta, Role, Store, Tenant
from hashmatch.v1 import hashes_pb2, lists_pb2

DEFAULT_STATS_LIMIT = 100
MAX_STATS_LIMIT = 10_000


class ListServicer:
    def __init__(self, store: Store, follower: IndexFollower) -> None:
        self.store = store
        self.follower = follower

    def CreateList(
        self, request: lists_pb2.CreateListRequest, context: grpc.ServicerContext, tenant: Tenant
    ) -> lists_pb2.CreateListResponse:
        require_role(tenant, Role.HOTLINE)
        violations = validation.create_list(request)
        if violations:
            raise invalid(violations)
        threshold = (
            request.pdq_threshold
            if request.HasField("pdq_threshold")
            else validation.PDQ_DEFAULT_THRESHOLD
        )
        quality = (
            request.pdq_min_quality
            if request.HasField("pdq_min_quality")
            else validation.PDQ_DEFAULT_MIN_QUALITY
        )
        try:
            meta = self.store.create_list(
                request.name, tenant.name, pdq_threshold=threshold, pdq_min_quality=quality
            )
        except st.ListExists:
            raise ServiceError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"a list named {request.name!r} already exists",
                hashes_pb2.ERROR_REASON_LIST_EXISTS,
            ) from None
        except st.StoreFull as exc:
            raise _store_full(exc) from None
        self.follower.catch_up()
        return lists_pb2.CreateListResponse(list=to_proto(meta))

    def GetList(
        self, request: lists_pb2.GetListRequest, context: grpc.ServicerContext, tenant: Tenant
    ) -> lists_pb2.GetListResponse:
        require_role(tenant, Role.HOTLINE, Role.REPLICA)
        return lists_pb2.GetListResponse(list=to_proto(self._readable(request.name, tenant)))

    def ListLists(
        self, request: lists_pb2.ListListsRequest, context: grpc.ServicerContext, tenant: Tenant
    ) -> lists_pb2.ListListsResponse:
        require_role(tenant, Role.HOTLINE, Role.REPLICA)
        lists = [
            to_proto(m)
            for m in self.store.lists()
            if tenant.role == Role.REPLICA or m.owner == tenant.name
        ]
        return lists_pb2.ListListsResponse(lists=lists)

    def ApplyChanges(
        self, request: lists_pb2.ApplyChangesRequest, context: grpc.ServicerContext, tenant: Tenant
    ) -> lists_pb2.ApplyChangesResponse:
        require_role(tenant, Role.HOTLINE)
        meta = self._owned(request.list, tenant)
        batch, violations = validation.apply_changes(request, meta.pdq_min_quality)
        if violations:
            raise invalid(violations)
        try:
            outcome = self.store.apply_changes(
                request.list,
                request.batch_id,
                batch.upserts,
                batch.retirements,
                fingerprint=fingerprint(request),
                expected_version=(
                    request.expected_version if request.HasField("expected_version") else None
                ),
                actor=tenant.name,
            )
        except st.StaleVersion as exc:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"expected_version {request.expected_version} is stale: "
                f"the list is at version {exc.current}",
                hashes_pb2.ERROR_REASON_STALE_VERSION,
                (Violation("expected_version", f"the list is at version {exc.current}"),),
            ) from None
        except st.BatchIdReused:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this batch_id was already applied with different content",
                hashes_pb2.ERROR_REASON_BATCH_ID_REUSED,
                (Violation("batch_id", "already used for a batch with different content"),),
            ) from None
        except st.ListNotFound:
            raise _not_found(request.list) from None
        except st.StoreFull as exc:
            raise _store_full(exc) from None
        # This process serves the batch before the hotline hears it was applied.
        self.follower.catch_up()
        return lists_pb2.ApplyChangesResponse(
            version=outcome.version,
            already_applied=outcome.already_applied,
            upserted=outcome.upserted,
            retired=outcome.retired,
            digest=outcome.digest,
        )

    def GetReferenceStats(
        self,
        request: lists_pb2.GetReferenceStatsRequest,
        context: grpc.ServicerContext,
        tenant: Tenant,
    ) -> lists_pb2.GetReferenceStatsResponse:
        require_role(tenant, Role.HOTLINE)
        meta = self._owned(request.list, tenant)
        limit = request.limit or DEFAULT_STATS_LIMIT
        if limit > MAX_STATS_LIMIT:
            raise invalid([Violation("limit", f"must be at most {MAX_STATS_LIMIT}")])
        counts = sorted(self.store.match_counts(meta.id), key=lambda c: (-c[1], c[0]))[:limit]
        return lists_pb2.GetReferenceStatsResponse(
            references=[
                lists_pb2.ReferenceStats(
                    reference_id=ref, matches=n, last_matched_at=_timestamp(last)
                )
                for ref, n, last in counts
            ]
        )

    def _readable(self, name: str, tenant: Tenant) -> ListMeta:
        meta = self.store.get_list(name)
        if meta is None:
            raise _not_found(name)
        if tenant.role == Role.HOTLINE and meta.owner != tenant.name:
            raise _not_owner(name)
        return meta

    def _owned(self, name: str, tenant: Tenant) -> ListMeta:
        violations: list[Violation] = []
        validation.check_list_name(name, "list", violations)
        if violations:
            raise invalid(violations)
        meta = self.store.get_list(name)
        if meta is None:
            raise _not_found(name)
        if meta.owner != tenant.name:
            raise _not_owner(name)
        return meta


def fingerprint(request: lists_pb2.ApplyChangesRequest) -> bytes:
    """Identifies a batch's content, so a re-sent batch_id can be told from a reused one."""
    content = lists_pb2.ApplyChangesRequest(
        list=request.list, upserts=request.upserts, retirements=request.retirements
    )
    return xxhash.xxh3_128_digest(content.SerializeToString(deterministic=True))


def to_proto(meta: ListMeta) -> lists_pb2.HashList:
    return lists_pb2.HashList(
        name=meta.name,
        owner=meta.owner,
        version=meta.version,
        counts=[
            lists_pb2.EntryCount(algorithm=alg, count=meta.counts[alg - 1])  # type: ignore[arg-type]
            for alg in sorted(DIGEST_LENGTHS)
        ],
        pdq_threshold=meta.pdq_threshold,
        pdq_min_quality=meta.pdq_min_quality,
        digest=meta.digest,
        created_at=_timestamp(meta.created_at),
        updated_at=_timestamp(meta.updated_at),
        last_batch_id=meta.last_batch_id,
    )


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _not_found(name: str) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.NOT_FOUND,
        f"no list named {name!r}",
        hashes_pb2.ERROR_REASON_LIST_NOT_FOUND,
        (Violation("list", "no such list"),),
    )


def _not_owner(name: str) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.PERMISSION_DENIED,
        f"the list {name!r} belongs to another tenant",
        hashes_pb2.ERROR_REASON_NOT_LIST_OWNER,
    )


def _store_full(exc: st.StoreFull) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), hashes_pb2.ERROR_REASON_STORE_FULL
    )

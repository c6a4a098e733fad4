"""PlatformService: a platform's feedback, subscriptions and allow-list.

Each of these changes only what its own platform sees; the list owner reads feedback
through ListService.GetFeedback, never who sent it.
"""

from __future__ import annotations

from hashmatch.server.errors import ReferenceNotFound, Violation, invalid
from hashmatch.server.services import validation
from hashmatch.server.services.access import require_role
from hashmatch.server.store import Role, Store, Tenant
from hashmatch.server.sync.follower import IndexFollower
from hashmatch.v1 import hashes_pb2, lists_pb2, platform_pb2

MAX_NOTE_BYTES = 500
MAX_ALLOW_LIST = 100_000
MAX_ALLOW_CHANGES = 10_000


class PlatformServicer:
    def __init__(self, store: Store, follower: IndexFollower) -> None:
        self.store = store
        self.follower = follower

    def ReportFalsePositive(
        self,
        request: platform_pb2.ReportFalsePositiveRequest,
        tenant: Tenant,
    ) -> platform_pb2.ReportFalsePositiveResponse:
        require_role(tenant, Role.PLATFORM)
        violations: list[Violation] = []
        validation.check_list_name(request.list, "list", violations)
        validation.check_text(
            request.reference_id,
            "reference_id",
            validation.MAX_REFERENCE_BYTES,
            violations,
            required=True,
        )
        if request.reason not in lists_pb2.FeedbackReason.values() or request.reason == 0:
            violations.append(Violation("reason", "unknown or unspecified reason"))
        validation.check_text(request.note, "note", MAX_NOTE_BYTES, violations, required=False)
        if violations:
            raise invalid(violations)
        meta = self.store.get_list(request.list)
        # Only a reference that matched for this platform can be reported as a false
        # positive: it keeps reports from piling up for made-up references, and the refusal
        # is the same whether or not another platform matched it (that is not told).
        if meta is None or not self.store.has_matched(tenant.name, meta.id, request.reference_id):
            raise ReferenceNotFound(
                "that list has no matched reference of that ID",
                (Violation("reference_id", "has not matched in that list"),),
            )
        self.store.add_feedback(meta.id, request.reference_id, request.reason, request.note)
        return platform_pb2.ReportFalsePositiveResponse()

    def GetSubscriptions(
        self,
        request: platform_pb2.GetSubscriptionsRequest,
        tenant: Tenant,
    ) -> platform_pb2.Subscriptions:
        require_role(tenant, Role.PLATFORM)
        return self._subscriptions(tenant)

    def SetSubscriptions(
        self,
        request: platform_pb2.SetSubscriptionsRequest,
        tenant: Tenant,
    ) -> platform_pb2.Subscriptions:
        require_role(tenant, Role.PLATFORM)
        known = {m.name for m in self.store.lists()}
        violations = [
            Violation(f"lists[{i}]", "no such list")
            for i, name in enumerate(request.lists)
            if name not in known
        ]
        if not request.all_lists and not request.lists:
            violations.append(Violation("lists", "name at least one list, or set all_lists"))
        if violations:
            raise invalid(violations)
        self.store.set_subscriptions(tenant.name, request.all_lists, list(request.lists))
        self.follower.catch_up()
        return self._subscriptions(tenant)

    def UpdateAllowList(
        self,
        request: platform_pb2.UpdateAllowListRequest,
        tenant: Tenant,
    ) -> platform_pb2.UpdateAllowListResponse:
        require_role(tenant, Role.PLATFORM)
        violations: list[Violation] = []
        if len(request.add) + len(request.remove) > MAX_ALLOW_CHANGES:
            violations.append(Violation("add", f"at most {MAX_ALLOW_CHANGES} changes per call"))
        if not request.add and not request.remove:
            violations.append(Violation("add", "nothing to add or remove"))
        for field, hashes in (("add", request.add), ("remove", request.remove)):
            for i, h in enumerate(hashes):
                validation.check_hash(h, f"{field}[{i}]", violations)
        if violations:
            raise invalid(violations)
        current = len(self.store.allow_list(tenant.name))
        if current + len(request.add) > MAX_ALLOW_LIST:
            raise invalid([Violation("add", f"an allow-list holds at most {MAX_ALLOW_LIST}")])
        size = self.store.update_allow_list(
            tenant.name,
            [(h.algorithm, h.value) for h in request.add],
            [(h.algorithm, h.value) for h in request.remove],
        )
        self.follower.catch_up()
        return platform_pb2.UpdateAllowListResponse(size=size)

    def GetAllowList(
        self,
        request: platform_pb2.GetAllowListRequest,
        tenant: Tenant,
    ) -> platform_pb2.GetAllowListResponse:
        require_role(tenant, Role.PLATFORM)
        return platform_pb2.GetAllowListResponse(
            hashes=[
                hashes_pb2.Hash(algorithm=alg, value=value)  # type: ignore[arg-type]
                for alg, value in self.store.allow_list(tenant.name)
            ]
        )

    def _subscriptions(self, tenant: Tenant) -> platform_pb2.Subscriptions:
        all_lists, lists = self.store.subscriptions(tenant.name)
        return platform_pb2.Subscriptions(
            all_lists=all_lists,
            lists=lists,
            available=sorted(m.name for m in self.store.lists()),
        )

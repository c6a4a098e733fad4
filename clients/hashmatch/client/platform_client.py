"""Platform settings SDK: false-positive reports, list subscriptions, the allow-list."""

from __future__ import annotations

from collections.abc import Iterable

from hashmatch.client.connection import ChannelClient, Connection
from hashmatch.v1 import hashes_pb2, lists_pb2, platform_pb2, platform_pb2_grpc

REASONS = {
    "benign": lists_pb2.FEEDBACK_REASON_BENIGN,
    "legal-adult": lists_pb2.FEEDBACK_REASON_LEGAL_ADULT,
    "unrelated-content": lists_pb2.FEEDBACK_REASON_UNRELATED_CONTENT,
    "other": lists_pb2.FEEDBACK_REASON_OTHER,
}


class PlatformClient(ChannelClient):
    """Synchronous client for PlatformService; every call acts for the calling platform."""

    def __init__(self, connection: Connection | None = None) -> None:
        super().__init__(connection)
        self._stub = platform_pb2_grpc.PlatformServiceStub(self._channel)

    def report_false_positive(
        self, list_name: str, reference_id: str, reason: str, note: str = ""
    ) -> None:
        """Tells the list's owner a matched reference was benign. `reason` is one of
        REASONS; the note must not identify a user or describe the content."""
        if reason not in REASONS:
            raise ValueError(f"reason must be one of {', '.join(REASONS)}")
        request = platform_pb2.ReportFalsePositiveRequest(
            list=list_name, reference_id=reference_id, reason=REASONS[reason], note=note
        )
        self.connection.call(lambda: self._stub.ReportFalsePositive(request, **self._kw()))

    def subscriptions(self) -> platform_pb2.Subscriptions:
        request = platform_pb2.GetSubscriptionsRequest()
        return self.connection.call(lambda: self._stub.GetSubscriptions(request, **self._kw()))

    def subscribe(self, lists: Iterable[str] | None) -> platform_pb2.Subscriptions:
        """Only these lists apply to this platform's matches; None: every list."""
        request = platform_pb2.SetSubscriptionsRequest(
            all_lists=lists is None, lists=list(lists or [])
        )
        return self.connection.call(lambda: self._stub.SetSubscriptions(request, **self._kw()))

    def update_allow_list(
        self,
        add: Iterable[hashes_pb2.Hash] = (),
        remove: Iterable[hashes_pb2.Hash] = (),
    ) -> int:
        """Hashes reviewed as benign never match for this platform; returns the list size."""
        request = platform_pb2.UpdateAllowListRequest(add=list(add), remove=list(remove))
        response = self.connection.call(lambda: self._stub.UpdateAllowList(request, **self._kw()))
        return response.size

    def allow_list(self) -> list[hashes_pb2.Hash]:
        request = platform_pb2.GetAllowListRequest()
        response = self.connection.call(lambda: self._stub.GetAllowList(request, **self._kw()))
        return list(response.hashes)

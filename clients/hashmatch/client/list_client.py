"""Hotline SDK: create lists and keep them in sync with atomic batches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc

from hashmatch.client.connection import ChannelClient, Connection
from hashmatch.client.errors import from_rpc_error
from hashmatch.client.results import ApplyResult, ListInfo
from hashmatch.v1 import hashes_pb2, lists_pb2, lists_pb2_grpc


@dataclass(frozen=True)
class Change:
    """One upsert (reference_id set) or retirement (reference_id None) of a hash, with the
    upsert's labels (see hashmatch.client.labels)."""

    hash: hashes_pb2.Hash
    reference_id: str | None
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)


class ListClient(ChannelClient):
    """Synchronous client for ListService."""

    def __init__(self, connection: Connection | None = None) -> None:
        super().__init__(connection)
        self._stub = lists_pb2_grpc.ListServiceStub(self._channel)

    def create_list(
        self,
        name: str,
        *,
        pdq_threshold: int | None = None,
        pdq_min_quality: int | None = None,
        flood: lists_pb2.FloodPolicy | None = None,
        exposed_label_keys: Iterable[str] = (),
        video_query_percent: int | None = None,
        video_listed_percent: int | None = None,
    ) -> ListInfo:
        """flood: the quarantine policy (FloodPolicy(factor=0) turns it off);
        exposed_label_keys: the label keys platforms see in verdicts (default none);
        video_query_percent, video_listed_percent: the shares of frames a video match needs
        (defaults 80 and 0)."""
        request = lists_pb2.CreateListRequest(
            name=name, flood=flood, exposed_label_keys=list(exposed_label_keys)
        )
        if pdq_threshold is not None:
            request.pdq_threshold = pdq_threshold
        if pdq_min_quality is not None:
            request.pdq_min_quality = pdq_min_quality
        if video_query_percent is not None:
            request.video_query_percent = video_query_percent
        if video_listed_percent is not None:
            request.video_listed_percent = video_listed_percent
        # Not retried: a create that reached the server would then fail with ALREADY_EXISTS.
        response = self.connection.call(
            lambda: self._stub.CreateList(request, **self._kw()), retry=False
        )
        return ListInfo.from_proto(response.list)

    def get_list(self, name: str) -> ListInfo:
        request = lists_pb2.GetListRequest(name=name)
        response = self.connection.call(lambda: self._stub.GetList(request, **self._kw()))
        return ListInfo.from_proto(response.list)

    def list_lists(self) -> list[ListInfo]:
        request = lists_pb2.ListListsRequest()
        response = self.connection.call(lambda: self._stub.ListLists(request, **self._kw()))
        return [ListInfo.from_proto(x) for x in response.lists]

    def apply_changes(
        self,
        list_name: str,
        batch_id: str,
        changes: Iterable[Change],
        *,
        expected_version: int | None = None,
    ) -> ApplyResult:
        """One atomic batch. Safe to retry: the batch_id makes a re-send a no-op."""
        request = build_batch(list_name, batch_id, changes, expected_version)
        response = self.connection.call(lambda: self._stub.ApplyChanges(request, **self._kw()))
        return ApplyResult.from_proto(response)

    def upload_changes(
        self, batches: Iterable[lists_pb2.ApplyChangesRequest], *, timeout: float | None = None
    ) -> lists_pb2.UploadChangesResponse:
        """Streams batches. With `upload_mode` UPLOAD_MODE_WHOLE (or UPLOAD_MODE_REPLACE)
        on the first one, the service applies them all as one unit when the stream ends,
        or none of them (a refusal, or a stream that breaks off: send them again, from the
        first); without it, each is applied atomically as it comes, in order, and an
        interrupted upload resumes after GetList's last_batch_id. Not retried here (see
        `push`, which does either)."""
        return self.connection.call(
            lambda: self._stub.UploadChanges(
                iter(batches), timeout=timeout, metadata=self.connection.metadata()
            ),
            retry=False,
        )

    def watch_changes(
        self, list_name: str, since_version: int = 0, *, timeout: float | None = None
    ) -> Iterator[lists_pb2.ChangeBatch]:
        """Committed batches after since_version, then new ones as they commit."""
        request = lists_pb2.WatchChangesRequest(list=list_name, since_version=since_version)
        stream = self._stub.WatchChanges(
            request, timeout=timeout, metadata=self.connection.metadata()
        )
        try:
            yield from stream
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            stream.cancel()

    def reference_stats(self, list_name: str, limit: int = 100) -> list[tuple[str, int]]:
        """(reference_id, matches) of the list's most-matched references."""
        request = lists_pb2.GetReferenceStatsRequest(list=list_name, limit=limit)
        response = self.connection.call(lambda: self._stub.GetReferenceStats(request, **self._kw()))
        return [(r.reference_id, r.matches) for r in response.references]

    def reference_stats_detail(
        self, list_name: str, limit: int = 100
    ) -> list[lists_pb2.ReferenceStats]:
        """The list's most-matched references with their match counts and last match time."""
        request = lists_pb2.GetReferenceStatsRequest(list=list_name, limit=limit)
        response = self.connection.call(lambda: self._stub.GetReferenceStats(request, **self._kw()))
        return list(response.references)

    def flood_policy(self, list_name: str) -> lists_pb2.FloodPolicy:
        """The list's flood-quarantine policy (factor 0: off), from GetList."""
        request = lists_pb2.GetListRequest(name=list_name)
        response = self.connection.call(lambda: self._stub.GetList(request, **self._kw()))
        return response.list.flood

    def feedback(self, list_name: str, limit: int = 100) -> list[lists_pb2.ReferenceFeedback]:
        """False-positive reports platforms filed against the list, most reported first."""
        request = lists_pb2.GetFeedbackRequest(list=list_name, limit=limit)
        response = self.connection.call(lambda: self._stub.GetFeedback(request, **self._kw()))
        return list(response.references)

    def quarantine(self, list_name: str) -> list[lists_pb2.QuarantinedReference]:
        """References flood detection quarantined (they answer NO_MATCH), and why."""
        request = lists_pb2.ListQuarantineRequest(list=list_name)
        response = self.connection.call(lambda: self._stub.ListQuarantine(request, **self._kw()))
        return list(response.references)

    def release(self, list_name: str, reference_ids: Iterable[str]) -> int:
        """Lets quarantined references match again; returns how many were released."""
        request = lists_pb2.ReleaseQuarantineRequest(
            list=list_name, reference_ids=list(reference_ids)
        )
        response = self.connection.call(lambda: self._stub.ReleaseQuarantine(request, **self._kw()))
        return response.released

    def set_flood_policy(
        self, list_name: str, *, factor: int, min_matches: int, window_seconds: int
    ) -> ListInfo:
        """factor 0 turns flood quarantine off for the list."""
        policy = lists_pb2.FloodPolicy(
            factor=factor, min_matches=min_matches, window_seconds=window_seconds
        )
        request = lists_pb2.UpdateListRequest(name=list_name, flood=policy)
        response = self.connection.call(lambda: self._stub.UpdateList(request, **self._kw()))
        return ListInfo.from_proto(response.list)

    def set_exposed_labels(self, list_name: str, keys: Iterable[str]) -> ListInfo:
        """Which label keys platforms see in verdicts from now on (none: empty)."""
        request = lists_pb2.UpdateListRequest(
            name=list_name, exposed_label_keys=lists_pb2.LabelKeys(keys=list(keys))
        )
        response = self.connection.call(lambda: self._stub.UpdateList(request, **self._kw()))
        return ListInfo.from_proto(response.list)

    def grant_access(self, list_name: str, tenant: str) -> bool:
        """Lets `tenant` (any role) read `list_name`: GetList, WatchChanges, and the list in
        its list_lists. False when it already could. Owner only."""
        request = lists_pb2.GrantAccessRequest(list=list_name, tenant=tenant)
        response = self.connection.call(lambda: self._stub.GrantAccess(request, **self._kw()))
        return response.granted

    def revoke_access(self, list_name: str, tenant: str) -> bool:
        """Ends `tenant`'s read access to `list_name` (and its open watch streams). False
        when it had none. Owner only."""
        request = lists_pb2.RevokeAccessRequest(list=list_name, tenant=tenant)
        response = self.connection.call(lambda: self._stub.RevokeAccess(request, **self._kw()))
        return response.revoked

    def list_grants(self, list_name: str) -> list[lists_pb2.Grant]:
        """The tenants `list_name` is granted to, by name. Owner only."""
        request = lists_pb2.ListGrantsRequest(list=list_name)
        response = self.connection.call(lambda: self._stub.ListGrants(request, **self._kw()))
        return list(response.grants)

    def audit_log(
        self,
        list_name: str,
        since: datetime | None = None,
        until: datetime | None = None,
        actions: Iterable[str] = (),
        limit: int = 100,
    ) -> list[lists_pb2.AuditRecord]:
        """The list's audit records (who created it, applied batches, changed its policy,
        quarantined, released, granted): the newest `limit` that pass the filters, oldest
        first. since/until: aware datetimes (naive ones are taken as UTC). Owner only."""
        request = lists_pb2.GetAuditLogRequest(list=list_name, actions=list(actions), limit=limit)
        if since is not None:
            request.since.FromDatetime(_utc(since))
        if until is not None:
            request.until.FromDatetime(_utc(until))
        response = self.connection.call(lambda: self._stub.GetAuditLog(request, **self._kw()))
        return list(response.records)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def build_batch(
    list_name: str,
    batch_id: str,
    changes: Iterable[Change],
    expected_version: int | None = None,
) -> lists_pb2.ApplyChangesRequest:
    request = lists_pb2.ApplyChangesRequest(list=list_name, batch_id=batch_id)
    for change in changes:
        if change.reference_id is None:
            request.retirements.append(change.hash)
        else:
            request.upserts.append(
                lists_pb2.Entry(
                    hash=change.hash, reference_id=change.reference_id, labels=change.labels
                )
            )
    if expected_version is not None:
        request.expected_version = expected_version
    return request

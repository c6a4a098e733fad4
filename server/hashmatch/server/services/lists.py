"""ListService: hotlines create lists and keep them in sync with atomic batches."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.message import DecodeError

from hashmatch.client.algorithms import DIGEST_LENGTHS
from hashmatch.client.labels import LABEL_KEYS
from hashmatch.server import errors
from hashmatch.server import store as st
from hashmatch.server.core import (
    Changes,
    encode_entries,
    encode_hashes,
    parse_changes,
    request_list,
)
from hashmatch.server.errors import Refusal, Violation, invalid
from hashmatch.server.matching.flood import DEFAULT_FLOOD, FloodPolicy
from hashmatch.server.services import validation
from hashmatch.server.services.access import (
    may_read,
    not_found,
    owned,
    readable,
    require_role,
    visible_lists,
)
from hashmatch.server.store import ListMeta, Role, Store, Tenant
from hashmatch.server.store import grants as store_grants
from hashmatch.server.store.changelog import CHANGES, EXPOSE, QUARANTINE, RELEASE, ChangeRecord
from hashmatch.server.store.env import audit_nanos
from hashmatch.server.sync.follower import IndexFollower
from hashmatch.v1 import lists_pb2

log = logging.getLogger(__name__)

DEFAULT_STATS_LIMIT = 100
# Entries committed together by UploadChanges (see there).
# LMDB rewrites each B-tree page a transaction touches once, and random hashes touch
# pages everywhere: one commit into a list of n entries rewrites about every page of it.
# So a group grows with its list, to a quarter of it (at most UPLOAD_GROUP_MAX_ENTRIES),
# and loading a list rewrites it a bounded number of times rather than once per million.
UPLOAD_GROUP_ENTRIES = 1_000_000
UPLOAD_GROUP_MAX_ENTRIES = 8_000_000
# The time bound of a group of UPLOAD_GROUP_ENTRIES, and in proportion for a larger one:
# it keeps a slow uploader's batches from waiting long to be served.
UPLOAD_GROUP_SECONDS = 2.0
# A whole-file upload stages its messages a few at a time: up to this many entries per
# write, which bounds what the server holds of the file at once.
STAGE_GROUP_ENTRIES = 200_000
# The most changes one whole-file upload may hold. Publishing holds the file's pages in
# memory until its one commit, about 200 bytes per change (benchmarks/sync/push_file.py):
# some 2 GB at this bound. Larger loads go in several files, each its own unit.
MAX_FILE_CHANGES = 10_000_000
# Batches read from the change log per step of a WatchChanges stream.
WATCH_PAGE = 64
# A watcher is woken by every commit this process serves; without one it looks again
# after this long (a safety net, not a poll).
WATCH_IDLE_SECONDS = 30.0
MAX_STATS_LIMIT = 10_000
# When an upload refused for the ones in progress may try again (those may take minutes).
UPLOAD_RETRY_SECONDS = 10.0
# Whole-file uploads one tenant may have open at once in a serving process.
MAX_TENANT_WHOLE_UPLOADS = 4
# A stream's message of at least this many bytes is read on the thread pool (see _read).
POOL_READ_BYTES = 256 << 10
# Uploads batch by batch one tenant may have open at once in a serving process: each may
# hold a group of up to UPLOAD_GROUP_ENTRIES changes in memory (about 0.1 GB at 1 M), and
# one upload in the process a larger one (see ListServicer._large_group).
MAX_TENANT_UPLOADS = 4
# Actions one GetAuditLog may filter by.
MAX_AUDIT_ACTIONS = 32
# The range of google.protobuf.Timestamp: 0001-01-01 to 9999-12-31, UTC.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799
# Longest tenant name a grant may name (longer ones cannot exist: refused as such).
MAX_TENANT_BYTES = 256


class ListServicer:
    # Batches arrive as bytes: the core's reader is the only thing that reads them.
    RAW = frozenset({"ApplyChanges", "UploadChanges"})

    def __init__(self, store: Store, follower: IndexFollower, primary: str | None = None) -> None:
        self.store = store
        self.follower = follower
        # Set on a read replica: the primary's address, named when refusing writes.
        self.primary = primary
        # Lists with a whole-file upload in progress in this process: one at a time per
        # list, so a hotline cannot stage one list's file over and over at once (each
        # stage may take up to MAX_FILE_CHANGES changes of disk, and publishing holds
        # the store's writer).
        self._uploading: set[int] = set()
        # And at most MAX_TENANT_WHOLE_UPLOADS per tenant (one per list, across its lists).
        self._tenant_uploads: collections.Counter[str] = collections.Counter()
        # Uploads batch by batch open per tenant (at most MAX_TENANT_UPLOADS).
        self._tenant_batch_uploads: collections.Counter[str] = collections.Counter()
        # The one upload in this process whose groups may grow past UPLOAD_GROUP_ENTRIES:
        # what groups hold in memory stays within one large group and 1 M per upload.
        self._large_group: object | None = None

    def CreateList(
        self, request: lists_pb2.CreateListRequest, tenant: Tenant
    ) -> lists_pb2.CreateListResponse:
        self._writable(tenant)
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
        flood = _flood_policy(request.flood) if request.HasField("flood") else DEFAULT_FLOOD
        exposed = _exposed_keys(request.exposed_label_keys, "exposed_label_keys")
        try:
            meta = self.store.create_list(
                request.name,
                tenant.name,
                pdq_threshold=threshold,
                pdq_min_quality=quality,
                flood=flood,
                exposed_label_keys=exposed,
                video_query_percent=(
                    request.video_query_percent
                    if request.HasField("video_query_percent")
                    else validation.VIDEO_DEFAULT_QUERY_PERCENT
                ),
                video_listed_percent=(
                    request.video_listed_percent
                    if request.HasField("video_listed_percent")
                    else validation.VIDEO_DEFAULT_LISTED_PERCENT
                ),
            )
        except st.ListExists:
            raise self._name_taken(request.name, tenant) from None
        self.follower.catch_up()
        return lists_pb2.CreateListResponse(list=self._describe(meta))

    def _name_taken(self, name: str, tenant: Tenant) -> Refusal:
        """CreateList of a name some list already has. Its owner hears ALREADY_EXISTS.
        Anyone else hears only that the name cannot be used: in one global name space
        that much is unavoidable, but not whose list it is, nor that the refusal is about
        a list at all rather than the name. Each such refusal is audited, so an operator
        sees a tenant probing for names."""
        meta = self.store.get_list(name)
        if meta is not None and meta.owner == tenant.name:
            return errors.ListExists(f"a list named {name!r} already exists")
        self.store.record_audit(tenant.name, "create-list-refused", name=name)
        return errors.NameUnavailable(
            "this name cannot be used; choose another",
            (Violation("name", "cannot be used; choose another name"),),
        )

    def GetList(
        self, request: lists_pb2.GetListRequest, tenant: Tenant
    ) -> lists_pb2.GetListResponse:
        # Any role: a list granted to the caller (GrantAccess) is readable whatever its role.
        meta = readable(self.store, request.name, tenant, "name")
        return lists_pb2.GetListResponse(list=self._describe(meta))

    def ListLists(
        self, request: lists_pb2.ListListsRequest, tenant: Tenant
    ) -> lists_pb2.ListListsResponse:
        lists = [self._describe(m) for m in visible_lists(self.store, tenant)]
        return lists_pb2.ListListsResponse(lists=lists)

    def ApplyChanges(
        self, raw: bytes, tenant: Tenant, meter: Callable[[int], None]
    ) -> lists_pb2.ApplyChangesResponse:
        """One atomic batch. The request's bytes go to the core's reader as they came."""
        self._writable(tenant)
        outcome = self._apply(raw, tenant)
        # This process serves the batch before the hotline hears it was applied.
        self.follower.catch_up()
        return lists_pb2.ApplyChangesResponse(
            version=outcome.version,
            already_applied=outcome.already_applied,
            upserted=outcome.upserted,
            retired=outcome.retired,
            digest=outcome.digest,
        )

    async def UploadChanges(
        self,
        requests: AsyncIterator[bytes],
        tenant: Tenant,
        meter: Callable[[int], None],
    ) -> lists_pb2.UploadChangesResponse:
        """A bulk load. The first message's upload_mode chooses: the whole stream as one
        unit (WHOLE, REPLACE: `_upload_whole`), or each message its own batch as it comes
        (unspecified: `_upload_batches`)."""
        self._writable(tenant)
        iterator = requests.__aiter__()
        try:
            first = await iterator.__anext__()
        except StopAsyncIteration:
            return lists_pb2.UploadChangesResponse()
        mode = _upload_mode(first)
        if mode == lists_pb2.UPLOAD_MODE_UNSPECIFIED:
            with _counted(self._tenant_batch_uploads, tenant.name, MAX_TENANT_UPLOADS, "uploads"):
                return await self._upload_batches(first, iterator, tenant)
        if mode not in (lists_pb2.UPLOAD_MODE_WHOLE, lists_pb2.UPLOAD_MODE_REPLACE):
            raise invalid([Violation("messages[0].upload_mode", "unknown upload mode")])
        return await self._upload_whole(
            first, iterator, tenant, replace=mode == lists_pb2.UPLOAD_MODE_REPLACE
        )

    async def _upload_whole(
        self, first: bytes, requests: AsyncIterator[bytes], tenant: Tenant, *, replace: bool
    ) -> lists_pb2.UploadChangesResponse:
        """The stream is one file: every message is checked as it arrives and staged in the
        store (staging.py), a few at a time, so memory stays bounded whatever the file's
        size; when the stream ends cleanly, the stage is published in one commit, each
        message still its own batch with its own version. A refused message, a refusal at
        publishing, or a stream that breaks off leaves nothing of the file visible: the
        stage is discarded, and the uploader sends the file again from its start."""
        head = await self._read(first, tenant, prefix="messages[0].")
        meta = owned(self.store, head.list, tenant, "messages[0].list")
        if meta.id in self._uploading:
            raise errors.Overloaded(
                f"a whole-file upload of list {head.list!r} is already in progress; "
                "send this file when it has ended",
                retry_after=UPLOAD_RETRY_SECONDS,
            )
        with _counted(
            self._tenant_uploads, tenant.name, MAX_TENANT_WHOLE_UPLOADS, "whole-file uploads"
        ):
            self._uploading.add(meta.id)
            try:
                return await self._upload_staged(head, first, requests, tenant, meta, replace)
            finally:
                self._uploading.discard(meta.id)

    async def _upload_staged(
        self,
        head: Changes,
        first: bytes,
        requests: AsyncIterator[bytes],
        tenant: Tenant,
        meta: ListMeta,
        replace: bool,
    ) -> lists_pb2.UploadChangesResponse:
        stage = await asyncio.to_thread(self.store.open_stage, meta.id, tenant.name)
        summary = lists_pb2.UploadChangesResponse()
        index = 0
        try:
            pending: list[bytes] = []
            keys: list[bytes] = []
            size = total = staged = 0
            raw: bytes | None = first
            while raw is not None:
                prefix = f"messages[{index}]."
                changes = head if index == 0 else await self._read(raw, tenant, prefix=prefix)
                if changes.list != head.list:
                    raise invalid(
                        [Violation(prefix + "list", "must name the list of the first message")]
                    )
                entries = changes.n_upserts + changes.n_retirements
                total += entries
                if total > MAX_FILE_CHANGES:
                    raise invalid(
                        [Violation(prefix.rstrip("."), f"a file holds at most {MAX_FILE_CHANGES}")]
                    )
                pending.append(raw)
                if replace:
                    keys += changes.upsert_keys(b"")
                size += entries
                index += 1
                if size >= STAGE_GROUP_ENTRIES:
                    await asyncio.to_thread(self.store.stage, stage, staged, pending, keys)
                    staged += len(pending)
                    pending, keys, size = [], [], 0
                # Reading the next message can fail too (e.g. malformed UTF-8).
                try:
                    raw = await requests.__anext__()
                except StopAsyncIteration:
                    raw = None
            await asyncio.to_thread(self.store.stage, stage, staged, pending, keys)
            retire = self._retire_batch(head.list, meta.pdq_min_quality) if replace else None
            try:
                published = await asyncio.to_thread(
                    self.store.publish, stage, head.list, actor=tenant.name, retire=retire
                )
            except st.StageRefused as refused:
                index = max(refused.index, 0)
                raise _stage_refusal(refused, head.list) from None
        except Refusal as exc:
            exc.message = (
                f"message {index} of the file was refused; nothing of the file was applied: "
                f"{exc.message}"
            )
            exc.args = (exc.message,)
            raise
        finally:
            # Also when the call is cancelled (the uploader went away): shielded, the
            # discard runs to its end.
            await asyncio.shield(asyncio.to_thread(self._discard, stage))
        for batch_id, outcome in published.outcomes:
            _count(summary, batch_id, outcome)
        summary.replaced = published.replaced
        await asyncio.to_thread(self.follower.catch_up)
        return summary

    def _discard(self, stage: int) -> None:
        """Drops a stage. A failure (a full disk) only leaves it for the first whole-file
        upload after a restart to discard, so it is logged rather than raised over the
        upload's own outcome."""
        try:
            self.store.discard_stage(stage)
        except st.StoreError as exc:
            log.warning("staged upload %d not discarded: %s", stage, exc)

    def _retire_batch(self, list_name: str, pdq_min_quality: int) -> st.RetireBatch:
        """How a replacement's retirements are written: as a batch any replica reads."""

        def build(batch_id: str, algs: bytes, slots: bytes) -> Changes:
            head = lists_pb2.ApplyChangesRequest(list=list_name, batch_id=batch_id)
            raw = head.SerializeToString() + encode_hashes(_RETIRE_FIELD, algs, slots)
            return parse_changes(raw, pdq_min_quality)

        return build

    async def _upload_batches(
        self, first: bytes, rest: AsyncIterator[bytes], tenant: Tenant
    ) -> lists_pb2.UploadChangesResponse:
        """Applies each message as its own batch, in order, stopping at the first refusal.

        Consecutive batches of one list are committed together (see `_group_bound`),
        which is what makes bulk loads fast; each stays atomic and gets its own version. A
        batch with retirements is committed on its own, at once: the group before it is
        committed first, so a retraction waits for no group, and new entries are still
        inserted in key order (Lists._insert_new_entries). A refusal's message says how
        many batches were applied before it, and GetList's last_batch_id names the last
        one, so the uploader resumes right after. Small messages are read on the event
        loop, large ones (see `_read`) and commits, which wait for the disk, on the thread
        pool.
        """
        summary = lists_pb2.UploadChangesResponse()
        group: list[tuple[str, Changes]] = []
        size = 0
        opened = time.monotonic()
        bound, seconds = UPLOAD_GROUP_ENTRIES, UPLOAD_GROUP_SECONDS
        upload = object()

        async def flush() -> None:
            nonlocal size, opened
            opened = time.monotonic()
            if group:
                batches = list(group)
                group.clear()
                size = 0
                outcomes = await asyncio.to_thread(
                    self._store, batches[0][0], [c for _, c in batches], tenant, summary
                )
                for (_, changes), outcome in zip(batches, outcomes, strict=True):
                    _count(summary, changes.batch_id, outcome)

        try:
            index = 0
            request: bytes | None = first
            while True:
                try:
                    # Reading the next message can fail too (e.g. malformed UTF-8): what
                    # came before it is applied all the same.
                    if request is None:
                        try:
                            request = await rest.__anext__()
                        except StopAsyncIteration:
                            break
                    changes = await self._read(request, tenant, prefix=f"messages[{index}].")
                    request = None
                except Refusal:
                    await flush()
                    raise
                index += 1
                if group and (group[0][0] != changes.list or changes.n_retirements):
                    await flush()
                if not group:
                    opened = time.monotonic()
                    bound, seconds = self._group_bound(changes.list, upload)
                group.append((changes.list, changes))
                size += changes.n_upserts + changes.n_retirements
                late = time.monotonic() - opened > seconds
                if changes.n_retirements or size >= bound or late:
                    await flush()
            await flush()
        except Refusal as exc:
            done = summary.batches_applied + summary.batches_already_applied
            exc.message = (
                f"message {done} of the upload was refused; the {done} before it are applied: "
                f"{exc.message}"
            )
            exc.args = (exc.message,)
            raise
        finally:
            if self._large_group is upload:
                self._large_group = None
            await asyncio.to_thread(self.follower.catch_up)
        return summary

    def _group_bound(self, list_name: str, upload: object) -> tuple[int, float]:
        """How many entries the group `upload` opens for `list_name` may hold, and for how
        long: UPLOAD_GROUP_ENTRIES and UPLOAD_GROUP_SECONDS, or more for a list of over
        four times that many entries while no other upload in this process holds a large
        group (the first one asking gets it, until it ends)."""
        meta = self.store.get_list(list_name)
        wanted = min(UPLOAD_GROUP_MAX_ENTRIES, sum(meta.counts) // 4) if meta else 0
        if wanted <= UPLOAD_GROUP_ENTRIES or self._large_group not in (None, upload):
            return UPLOAD_GROUP_ENTRIES, UPLOAD_GROUP_SECONDS
        self._large_group = upload
        return wanted, UPLOAD_GROUP_SECONDS * wanted / UPLOAD_GROUP_ENTRIES

    async def WatchChanges(
        self,
        request: lists_pb2.WatchChangesRequest,
        tenant: Tenant,
    ) -> AsyncIterator[bytes]:
        """Replays committed batches after since_version, then follows new ones live.

        A grantee's stream (a caller that reads the list only through GrantAccess) looks
        at its grant again on every wake-up and before every page, and ends with the same
        NOT_FOUND as a list it never could read once the grant is revoked.
        """
        meta = readable(self.store, request.list, tenant)
        # Owners and replicas cannot lose access to a list; a grantee can.
        revocable = tenant.role != Role.REPLICA and meta.owner != tenant.name
        version = request.since_version
        while True:
            seq = self.follower.seq()
            records = await asyncio.to_thread(
                self.store.changes_since, meta.id, version, WATCH_PAGE
            )
            # Looked at after the page is read: a batch committed after a revocation is
            # never sent.
            if revocable and not await asyncio.to_thread(may_read, self.store, meta, tenant):
                raise not_found(request.list)
            if not records:
                if revocable:
                    # Woken by any commit, a revocation included.
                    await self.follower.changed(seq, timeout=WATCH_IDLE_SECONDS)
                else:
                    await self.follower.committed(meta.id, version, timeout=WATCH_IDLE_SECONDS)
                continue
            for record in records:
                yield change_batch(meta.name, record)
                version = record.version

    def GetReferenceStats(
        self,
        request: lists_pb2.GetReferenceStatsRequest,
        tenant: Tenant,
    ) -> lists_pb2.GetReferenceStatsResponse:
        require_role(tenant, Role.HOTLINE)
        meta = owned(self.store, request.list, tenant)
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

    def _apply(self, raw: bytes, tenant: Tenant) -> st.ApplyOutcome:
        changes = self._checked(raw, tenant)
        return self._store(changes.list, [changes], tenant)[0]

    async def _read(self, raw: bytes, tenant: Tenant, prefix: str) -> Changes:
        """`_checked` for a message of a stream: a large one on the thread pool, so the
        event loop goes on answering other calls meanwhile (a bulk load's messages of
        tens of thousands of entries take milliseconds each to read)."""
        if len(raw) < POOL_READ_BYTES:
            return self._checked(raw, tenant, prefix)
        return await asyncio.to_thread(self._checked, raw, tenant, prefix)

    def _checked(self, raw: bytes, tenant: Tenant, prefix: str = "") -> Changes:
        """Reads and checks a batch from its wire bytes; INVALID_ARGUMENT names every bad
        field. The core reads the request once, entries and all, against the list's
        settings (which is why it first reads only the list's name)."""
        try:
            name = request_list(raw)
            meta = owned(self.store, name, tenant, f"{prefix}list")
            changes = parse_changes(raw, meta.pdq_min_quality)
        except ValueError as exc:
            raise invalid([undecodable(exc, prefix)]) from None
        violations = validation.batch_fields(
            changes.batch_id, changes.n_upserts, changes.n_retirements
        )
        violations += [Violation(f, d) for f, d in changes.violations]
        if violations:
            raise invalid([Violation(prefix + v.field, v.description) for v in violations])
        return changes

    def _store(
        self,
        list_name: str,
        batches: list[Changes],
        tenant: Tenant,
        summary: lists_pb2.UploadChangesResponse | None = None,
    ) -> list[st.ApplyOutcome]:
        """Commits checked batches together; a store refusal becomes its status, after
        the batches before it are committed (and counted into `summary`)."""
        try:
            return self.store.apply_many(list_name, batches, actor=tenant.name)
        except st.BatchRefused as stopped:
            applied, error = stopped.applied, stopped.cause
        if summary is not None:
            for changes, outcome in zip(batches, applied, strict=False):
                _count(summary, changes.batch_id, outcome)
        raise _store_refusal(error, batches[len(applied)].expected_version, list_name)

    def _writable(self, tenant: Tenant) -> None:
        require_role(tenant, Role.HOTLINE)
        if self.primary is not None:
            raise errors.ReadOnlyReplica(
                f"this server is a read replica; send writes to the primary at {self.primary}"
            )

    def GetFeedback(
        self, request: lists_pb2.GetFeedbackRequest, tenant: Tenant
    ) -> lists_pb2.GetFeedbackResponse:
        require_role(tenant, Role.HOTLINE)
        meta = owned(self.store, request.list, tenant)
        limit = request.limit or DEFAULT_STATS_LIMIT
        if limit > MAX_STATS_LIMIT:
            raise invalid([Violation("limit", f"must be at most {MAX_STATS_LIMIT}")])
        reports = self.store.feedback(meta.id)
        ranked = sorted(reports.items(), key=lambda kv: (-sum(kv[1]["counts"].values()), kv[0]))
        return lists_pb2.GetFeedbackResponse(
            references=[
                lists_pb2.ReferenceFeedback(
                    reference_id=ref,
                    total=sum(record["counts"].values()),
                    counts=[
                        lists_pb2.ReasonCount(reason=int(reason), count=n)  # type: ignore[arg-type]
                        for reason, n in sorted(record["counts"].items())
                    ],
                    notes=record["notes"],
                    last_reported_at=_timestamp(record["last"]),
                )
                for ref, record in ranked[:limit]
            ]
        )

    def ListQuarantine(
        self,
        request: lists_pb2.ListQuarantineRequest,
        tenant: Tenant,
    ) -> lists_pb2.ListQuarantineResponse:
        require_role(tenant, Role.HOTLINE)
        meta = owned(self.store, request.list, tenant)
        return lists_pb2.ListQuarantineResponse(
            references=[
                lists_pb2.QuarantinedReference(
                    reference_id=ref,
                    since=_timestamp(record["since"]),
                    window_matches=record["window_matches"],
                    baseline=record["baseline"],
                )
                for ref, record in sorted(self.store.quarantined(meta.id).items())
            ]
        )

    def ReleaseQuarantine(
        self,
        request: lists_pb2.ReleaseQuarantineRequest,
        tenant: Tenant,
    ) -> lists_pb2.ReleaseQuarantineResponse:
        self._writable(tenant)
        owned(self.store, request.list, tenant)
        violations: list[Violation] = []
        if not request.reference_ids:
            violations.append(Violation("reference_ids", "at least one is required"))
        for i, ref in enumerate(request.reference_ids):
            validation.check_text(
                ref,
                f"reference_ids[{i}]",
                validation.MAX_REFERENCE_BYTES,
                violations,
                required=True,
            )
        if violations:
            raise invalid(violations)
        version, released = self.store.apply_event(
            request.list, RELEASE, list(request.reference_ids), actor=tenant.name
        )
        self.follower.catch_up()
        return lists_pb2.ReleaseQuarantineResponse(version=version, released=released)

    def UpdateList(
        self, request: lists_pb2.UpdateListRequest, tenant: Tenant
    ) -> lists_pb2.UpdateListResponse:
        self._writable(tenant)
        owned(self.store, request.name, tenant, "name")
        has_flood = request.HasField("flood")
        has_exposed = request.HasField("exposed_label_keys")
        if not has_flood and not has_exposed:
            raise invalid([Violation("flood", "flood or exposed_label_keys is required")])
        meta = self.store.update_list(
            request.name,
            actor=tenant.name,
            flood=_flood_policy(request.flood) if has_flood else None,
            exposed_label_keys=(
                _exposed_keys(request.exposed_label_keys.keys, "exposed_label_keys.keys")
                if has_exposed
                else None
            ),
        )
        # This process shows the new keys before the owner hears they are set.
        self.follower.catch_up()
        return lists_pb2.UpdateListResponse(list=self._describe(meta))

    def GrantAccess(
        self, request: lists_pb2.GrantAccessRequest, tenant: Tenant
    ) -> lists_pb2.GrantAccessResponse:
        self._writable(tenant)
        meta = owned(self.store, request.list, tenant)
        grantee = self._grantee(request.tenant, tenant)
        try:
            granted = store_grants.grant(self.store, meta, grantee, actor=tenant.name)
        except st.TenantNotFound:
            raise _no_such_tenant() from None
        except st.ListNotFound:
            raise not_found(request.list) from None
        self.follower.catch_up()
        return lists_pb2.GrantAccessResponse(granted=granted)

    def RevokeAccess(
        self, request: lists_pb2.RevokeAccessRequest, tenant: Tenant
    ) -> lists_pb2.RevokeAccessResponse:
        self._writable(tenant)
        meta = owned(self.store, request.list, tenant)
        grantee = self._grantee(request.tenant, tenant)
        revoked = store_grants.revoke(self.store, meta, grantee, actor=tenant.name)
        # Wakes this process's watchers now; other processes on their next catch-up.
        self.follower.catch_up()
        return lists_pb2.RevokeAccessResponse(revoked=revoked)

    def ListGrants(
        self, request: lists_pb2.ListGrantsRequest, tenant: Tenant
    ) -> lists_pb2.ListGrantsResponse:
        require_role(tenant, Role.HOTLINE)
        meta = owned(self.store, request.list, tenant)
        return lists_pb2.ListGrantsResponse(
            grants=[
                lists_pb2.Grant(
                    tenant=g.tenant,
                    granted_at=_timestamp(g.granted_at),
                    granted_by=g.granted_by,
                )
                for g in store_grants.grants_of(self.store, meta.id)
            ]
        )

    def GetAuditLog(
        self, request: lists_pb2.GetAuditLogRequest, tenant: Tenant
    ) -> lists_pb2.GetAuditLogResponse:
        """The list's own audit records (those whose `list` field names it), newest last.
        Owner only: the records name who acted, so a grantee does not read them."""
        require_role(tenant, Role.HOTLINE)
        meta = owned(self.store, request.list, tenant)
        violations: list[Violation] = []
        limit = request.limit or DEFAULT_STATS_LIMIT
        if limit > MAX_STATS_LIMIT:
            violations.append(Violation("limit", f"must be at most {MAX_STATS_LIMIT}"))
        since = _bound(request, "since", violations)
        until = _bound(request, "until", violations)
        if since is not None and until is not None and since > until:
            violations.append(Violation("since", "must not be after until"))
        if len(request.actions) > MAX_AUDIT_ACTIONS:
            violations.append(Violation("actions", f"at most {MAX_AUDIT_ACTIONS}"))
        for i, action in enumerate(request.actions[:MAX_AUDIT_ACTIONS]):
            validation.check_text(action, f"actions[{i}]", 64, violations, required=True)
        if violations:
            raise invalid(violations)
        records = self.store.audit_log(
            limit,
            list_name=meta.name,
            since_ns=since,
            until_ns=until,
            actions=request.actions,
        )
        return lists_pb2.GetAuditLogResponse(records=[_audit_record(r) for r in records])

    @staticmethod
    def _grantee(name: str, owner: Tenant) -> str:
        """The grantee named by a grant request (checked after the list, so only the list's
        owner hears anything about tenant names)."""
        violations: list[Violation] = []
        validation.check_text(name, "tenant", MAX_TENANT_BYTES, violations, required=True)
        if not violations and name == owner.name:
            violations.append(Violation("tenant", "the owner always reads its own lists"))
        if violations:
            raise invalid(violations)
        return name

    def _describe(self, meta: ListMeta) -> lists_pb2.HashList:
        return to_proto(meta, len(self.store.quarantined(meta.id)))


def _bound(request: lists_pb2.GetAuditLogRequest, field: str, out: list[Violation]) -> int | None:
    """A time filter of GetAuditLog in nanoseconds since the epoch, or None when unset."""
    if not request.HasField(field):  # type: ignore[arg-type]
        return None
    ts: timestamp_pb2.Timestamp = getattr(request, field)
    if not MIN_TIMESTAMP_SECONDS <= ts.seconds <= MAX_TIMESTAMP_SECONDS or not (
        0 <= ts.nanos < 1_000_000_000
    ):
        out.append(Violation(field, "is not a valid timestamp"))
        return None
    return ts.seconds * 1_000_000_000 + ts.nanos


def _audit_record(record: dict[str, Any]) -> lists_pb2.AuditRecord:
    at = timestamp_pb2.Timestamp()
    at.FromNanoseconds(audit_nanos(record))
    details = {k: v for k, v in record.items() if k not in ("at", "actor", "action")}
    return lists_pb2.AuditRecord(
        at=at,
        actor=str(record.get("actor", "")),
        action=str(record.get("action", "")),
        details=json.dumps(details, sort_keys=True),
    )


def _no_such_tenant() -> Refusal:
    return invalid([Violation("tenant", "no such tenant")], "no such tenant")


_FIELD_PATH = re.compile(r"\(request\)|[a-z_]+(\[\d+\])?(\.[a-z_]+(\[\d+\])?)*")


def undecodable(exc: ValueError, prefix: str = "") -> Violation:
    """The core's "FIELD: description" for bytes it could not read, as a violation
    naming that field ("(request)" for the request's own framing)."""
    field, _, description = str(exc).partition(": ")
    if not _FIELD_PATH.fullmatch(field) or not description:
        field, description = "(request)", "is not a valid protobuf message"
    whole = field == "(request)"
    return Violation((prefix.rstrip(".") or field) if whole else prefix + field, description)


def _store_refusal(
    error: st.StoreError, expected_version: int | None, list_name: str, prefix: str = ""
) -> Exception:
    """The status of a batch the store refused."""
    if isinstance(error, st.StaleVersion):
        return errors.StaleVersion(
            error.current,
            f"expected_version {expected_version} is stale: the list is at version {error.current}",
        )
    if isinstance(error, st.BatchIdReused):
        return errors.BatchIdReused(
            "this batch_id was already applied with different content",
            (Violation(prefix + "batch_id", "already used for a batch with different content"),),
        )
    if isinstance(error, st.ListNotFound):
        return not_found(list_name)
    return error


def _stage_refusal(refused: st.StageRefused, list_name: str) -> Exception:
    """The status of a staged file the store refused while publishing it."""
    if refused.index < 0:  # a replacement's own retirements: their batch_id is taken
        return errors.BatchIdReused(
            "a batch_id the replacement's retirements need was already used",
            (Violation("batch_id", "already used"),),
        )
    return _store_refusal(
        refused.cause, refused.expected_version, list_name, f"messages[{refused.index}]."
    )


@contextlib.contextmanager
def _counted(
    open_now: collections.Counter[str], tenant: str, limit: int, what: str
) -> Iterator[None]:
    """One more of the tenant's `what` open while the block runs; RESOURCE_EXHAUSTED when
    `limit` of them are open already."""
    if open_now[tenant] >= limit:
        raise errors.Overloaded(
            f"{limit} {what} of yours are in progress; send this one when one has ended",
            retry_after=UPLOAD_RETRY_SECONDS,
        )
    open_now[tenant] += 1
    try:
        yield
    finally:
        open_now[tenant] -= 1
        if not open_now[tenant]:
            del open_now[tenant]


def _upload_mode(first: bytes) -> int:
    """The upload_mode of an UploadChanges stream's first message (unspecified when the
    message does not decode: the batch path then refuses it, naming what is wrong)."""
    try:
        return int(lists_pb2.ApplyChangesRequest.FromString(first).upload_mode)
    except DecodeError:
        return lists_pb2.UPLOAD_MODE_UNSPECIFIED


def _count(
    summary: lists_pb2.UploadChangesResponse, batch_id: str, outcome: st.ApplyOutcome
) -> None:
    if outcome.already_applied:
        summary.batches_already_applied += 1
    else:
        summary.batches_applied += 1
    summary.version = outcome.version
    summary.last_batch_id = batch_id
    summary.upserted += outcome.upserted
    summary.retired += outcome.retired
    summary.digest = outcome.digest


def change_batch(name: str, record: ChangeRecord) -> bytes:
    """The wire bytes of a committed batch as WatchChanges sends it. The entries are
    encoded by the core straight from the change log's columns (a replica catching up
    reads millions of them); protobuf takes the fields in any order."""
    head = lists_pb2.ChangeBatch(
        list=name,
        version=record.version,
        batch_id=record.batch_id,
        committed_at=_timestamp(record.committed_at),
        digest=record.digest,
    )
    if record.kind == EXPOSE:
        head.exposed_label_keys.keys.extend(record.references())
        return head.SerializeToString()
    if record.kind != CHANGES:
        refs = record.references()
        target = head.quarantined if record.kind == QUARANTINE else head.released
        target.extend(refs)
        return head.SerializeToString()
    upserts = encode_entries(
        _UPSERTS_FIELD, record.upsert_algs, record.upsert_slots, record.ref_ends, record.refs
    )
    retirements = encode_hashes(_RETIREMENTS_FIELD, record.retire_algs, record.retire_slots)
    return head.SerializeToString() + upserts + retirements


_UPSERTS_FIELD = lists_pb2.ChangeBatch.DESCRIPTOR.fields_by_name["upserts"].number
_RETIRE_FIELD = lists_pb2.ApplyChangesRequest.DESCRIPTOR.fields_by_name["retirements"].number
_RETIREMENTS_FIELD = lists_pb2.ChangeBatch.DESCRIPTOR.fields_by_name["retirements"].number


def _exposed_keys(keys: Sequence[str], field: str) -> tuple[str, ...]:
    """The label keys a list shows in verdicts, in the documented order; an unknown key is
    refused by name."""
    known = ", ".join(LABEL_KEYS)
    violations = [
        Violation(f"{field}[{i}]", f"unknown label key {key[:64]!r}; the keys are {known}")
        for i, key in enumerate(keys)
        if key not in LABEL_KEYS
    ]
    if violations:
        raise invalid(violations)
    return tuple(k for k in LABEL_KEYS if k in keys)


def _flood_policy(msg: lists_pb2.FloodPolicy) -> FloodPolicy:
    if msg.factor == 0:  # off: the other fields mean nothing then
        return FloodPolicy(0, DEFAULT_FLOOD.min_matches, DEFAULT_FLOOD.window_seconds)
    violations: list[Violation] = []
    if msg.factor > 1000:
        violations.append(Violation("flood.factor", "must be 0-1000 (0 turns it off)"))
    if not 1 <= msg.min_matches <= 1_000_000_000:
        violations.append(Violation("flood.min_matches", "must be 1-1000000000"))
    if not 10 <= msg.window_seconds <= 86_400:
        violations.append(Violation("flood.window_seconds", "must be 10-86400"))
    if violations:
        raise invalid(violations)
    return FloodPolicy(msg.factor, msg.min_matches, msg.window_seconds)


def to_proto(meta: ListMeta, quarantined: int = 0) -> lists_pb2.HashList:
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
        flood=lists_pb2.FloodPolicy(
            factor=meta.flood.factor,
            min_matches=meta.flood.min_matches,
            window_seconds=meta.flood.window_seconds,
        ),
        quarantined=quarantined,
        exposed_label_keys=meta.exposed_label_keys,
        video_query_percent=meta.video_query_percent,
        video_listed_percent=meta.video_listed_percent,
    )


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts

import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from hashmatch.v1 import hashes_pb2 as _hashes_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UploadMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UPLOAD_MODE_UNSPECIFIED: _ClassVar[UploadMode]
    UPLOAD_MODE_WHOLE: _ClassVar[UploadMode]
    UPLOAD_MODE_REPLACE: _ClassVar[UploadMode]

class FeedbackReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEEDBACK_REASON_UNSPECIFIED: _ClassVar[FeedbackReason]
    FEEDBACK_REASON_BENIGN: _ClassVar[FeedbackReason]
    FEEDBACK_REASON_LEGAL_ADULT: _ClassVar[FeedbackReason]
    FEEDBACK_REASON_UNRELATED_CONTENT: _ClassVar[FeedbackReason]
    FEEDBACK_REASON_OTHER: _ClassVar[FeedbackReason]
UPLOAD_MODE_UNSPECIFIED: UploadMode
UPLOAD_MODE_WHOLE: UploadMode
UPLOAD_MODE_REPLACE: UploadMode
FEEDBACK_REASON_UNSPECIFIED: FeedbackReason
FEEDBACK_REASON_BENIGN: FeedbackReason
FEEDBACK_REASON_LEGAL_ADULT: FeedbackReason
FEEDBACK_REASON_UNRELATED_CONTENT: FeedbackReason
FEEDBACK_REASON_OTHER: FeedbackReason

class FloodPolicy(_message.Message):
    __slots__ = ("factor", "min_matches", "window_seconds")
    FACTOR_FIELD_NUMBER: _ClassVar[int]
    MIN_MATCHES_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    factor: int
    min_matches: int
    window_seconds: int
    def __init__(self, factor: _Optional[int] = ..., min_matches: _Optional[int] = ..., window_seconds: _Optional[int] = ...) -> None: ...

class EntryCount(_message.Message):
    __slots__ = ("algorithm", "count")
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    algorithm: _hashes_pb2.Algorithm
    count: int
    def __init__(self, algorithm: _Optional[_Union[_hashes_pb2.Algorithm, str]] = ..., count: _Optional[int] = ...) -> None: ...

class HashList(_message.Message):
    __slots__ = ("name", "owner", "version", "counts", "pdq_threshold", "pdq_min_quality", "digest", "created_at", "updated_at", "last_batch_id", "flood", "quarantined", "exposed_label_keys", "video_query_percent", "video_listed_percent")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    PDQ_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PDQ_MIN_QUALITY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    FLOOD_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    EXPOSED_LABEL_KEYS_FIELD_NUMBER: _ClassVar[int]
    VIDEO_QUERY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    VIDEO_LISTED_PERCENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    owner: str
    version: int
    counts: _containers.RepeatedCompositeFieldContainer[EntryCount]
    pdq_threshold: int
    pdq_min_quality: int
    digest: bytes
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    last_batch_id: str
    flood: FloodPolicy
    quarantined: int
    exposed_label_keys: _containers.RepeatedScalarFieldContainer[str]
    video_query_percent: int
    video_listed_percent: int
    def __init__(self, name: _Optional[str] = ..., owner: _Optional[str] = ..., version: _Optional[int] = ..., counts: _Optional[_Iterable[_Union[EntryCount, _Mapping]]] = ..., pdq_threshold: _Optional[int] = ..., pdq_min_quality: _Optional[int] = ..., digest: _Optional[bytes] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_batch_id: _Optional[str] = ..., flood: _Optional[_Union[FloodPolicy, _Mapping]] = ..., quarantined: _Optional[int] = ..., exposed_label_keys: _Optional[_Iterable[str]] = ..., video_query_percent: _Optional[int] = ..., video_listed_percent: _Optional[int] = ...) -> None: ...

class LabelKeys(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, keys: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateListRequest(_message.Message):
    __slots__ = ("name", "pdq_threshold", "pdq_min_quality", "flood", "exposed_label_keys", "video_query_percent", "video_listed_percent")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PDQ_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PDQ_MIN_QUALITY_FIELD_NUMBER: _ClassVar[int]
    FLOOD_FIELD_NUMBER: _ClassVar[int]
    EXPOSED_LABEL_KEYS_FIELD_NUMBER: _ClassVar[int]
    VIDEO_QUERY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    VIDEO_LISTED_PERCENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    pdq_threshold: int
    pdq_min_quality: int
    flood: FloodPolicy
    exposed_label_keys: _containers.RepeatedScalarFieldContainer[str]
    video_query_percent: int
    video_listed_percent: int
    def __init__(self, name: _Optional[str] = ..., pdq_threshold: _Optional[int] = ..., pdq_min_quality: _Optional[int] = ..., flood: _Optional[_Union[FloodPolicy, _Mapping]] = ..., exposed_label_keys: _Optional[_Iterable[str]] = ..., video_query_percent: _Optional[int] = ..., video_listed_percent: _Optional[int] = ...) -> None: ...

class CreateListResponse(_message.Message):
    __slots__ = ("list",)
    LIST_FIELD_NUMBER: _ClassVar[int]
    list: HashList
    def __init__(self, list: _Optional[_Union[HashList, _Mapping]] = ...) -> None: ...

class GetListRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetListResponse(_message.Message):
    __slots__ = ("list",)
    LIST_FIELD_NUMBER: _ClassVar[int]
    list: HashList
    def __init__(self, list: _Optional[_Union[HashList, _Mapping]] = ...) -> None: ...

class ListListsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListListsResponse(_message.Message):
    __slots__ = ("lists",)
    LISTS_FIELD_NUMBER: _ClassVar[int]
    lists: _containers.RepeatedCompositeFieldContainer[HashList]
    def __init__(self, lists: _Optional[_Iterable[_Union[HashList, _Mapping]]] = ...) -> None: ...

class Entry(_message.Message):
    __slots__ = ("hash", "reference_id", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    HASH_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    hash: _hashes_pb2.Hash
    reference_id: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, hash: _Optional[_Union[_hashes_pb2.Hash, _Mapping]] = ..., reference_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ApplyChangesRequest(_message.Message):
    __slots__ = ("list", "batch_id", "upserts", "retirements", "expected_version", "upload_mode")
    LIST_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    UPSERTS_FIELD_NUMBER: _ClassVar[int]
    RETIREMENTS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_MODE_FIELD_NUMBER: _ClassVar[int]
    list: str
    batch_id: str
    upserts: _containers.RepeatedCompositeFieldContainer[Entry]
    retirements: _containers.RepeatedCompositeFieldContainer[_hashes_pb2.Hash]
    expected_version: int
    upload_mode: UploadMode
    def __init__(self, list: _Optional[str] = ..., batch_id: _Optional[str] = ..., upserts: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., retirements: _Optional[_Iterable[_Union[_hashes_pb2.Hash, _Mapping]]] = ..., expected_version: _Optional[int] = ..., upload_mode: _Optional[_Union[UploadMode, str]] = ...) -> None: ...

class ApplyChangesResponse(_message.Message):
    __slots__ = ("version", "already_applied", "upserted", "retired", "digest")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALREADY_APPLIED_FIELD_NUMBER: _ClassVar[int]
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    RETIRED_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    version: int
    already_applied: bool
    upserted: int
    retired: int
    digest: bytes
    def __init__(self, version: _Optional[int] = ..., already_applied: _Optional[bool] = ..., upserted: _Optional[int] = ..., retired: _Optional[int] = ..., digest: _Optional[bytes] = ...) -> None: ...

class UploadChangesResponse(_message.Message):
    __slots__ = ("version", "last_batch_id", "batches_applied", "batches_already_applied", "upserted", "retired", "digest", "replaced")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    BATCHES_APPLIED_FIELD_NUMBER: _ClassVar[int]
    BATCHES_ALREADY_APPLIED_FIELD_NUMBER: _ClassVar[int]
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    RETIRED_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    version: int
    last_batch_id: str
    batches_applied: int
    batches_already_applied: int
    upserted: int
    retired: int
    digest: bytes
    replaced: int
    def __init__(self, version: _Optional[int] = ..., last_batch_id: _Optional[str] = ..., batches_applied: _Optional[int] = ..., batches_already_applied: _Optional[int] = ..., upserted: _Optional[int] = ..., retired: _Optional[int] = ..., digest: _Optional[bytes] = ..., replaced: _Optional[int] = ...) -> None: ...

class WatchChangesRequest(_message.Message):
    __slots__ = ("list", "since_version")
    LIST_FIELD_NUMBER: _ClassVar[int]
    SINCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    list: str
    since_version: int
    def __init__(self, list: _Optional[str] = ..., since_version: _Optional[int] = ...) -> None: ...

class ChangeBatch(_message.Message):
    __slots__ = ("list", "version", "batch_id", "upserts", "retirements", "committed_at", "digest", "quarantined", "released", "exposed_label_keys")
    LIST_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    UPSERTS_FIELD_NUMBER: _ClassVar[int]
    RETIREMENTS_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    EXPOSED_LABEL_KEYS_FIELD_NUMBER: _ClassVar[int]
    list: str
    version: int
    batch_id: str
    upserts: _containers.RepeatedCompositeFieldContainer[Entry]
    retirements: _containers.RepeatedCompositeFieldContainer[_hashes_pb2.Hash]
    committed_at: _timestamp_pb2.Timestamp
    digest: bytes
    quarantined: _containers.RepeatedScalarFieldContainer[str]
    released: _containers.RepeatedScalarFieldContainer[str]
    exposed_label_keys: LabelKeys
    def __init__(self, list: _Optional[str] = ..., version: _Optional[int] = ..., batch_id: _Optional[str] = ..., upserts: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., retirements: _Optional[_Iterable[_Union[_hashes_pb2.Hash, _Mapping]]] = ..., committed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., digest: _Optional[bytes] = ..., quarantined: _Optional[_Iterable[str]] = ..., released: _Optional[_Iterable[str]] = ..., exposed_label_keys: _Optional[_Union[LabelKeys, _Mapping]] = ...) -> None: ...

class GetReferenceStatsRequest(_message.Message):
    __slots__ = ("list", "limit")
    LIST_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    list: str
    limit: int
    def __init__(self, list: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ReferenceStats(_message.Message):
    __slots__ = ("reference_id", "matches", "last_matched_at")
    REFERENCE_ID_FIELD_NUMBER: _ClassVar[int]
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    LAST_MATCHED_AT_FIELD_NUMBER: _ClassVar[int]
    reference_id: str
    matches: int
    last_matched_at: _timestamp_pb2.Timestamp
    def __init__(self, reference_id: _Optional[str] = ..., matches: _Optional[int] = ..., last_matched_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetReferenceStatsResponse(_message.Message):
    __slots__ = ("references",)
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    references: _containers.RepeatedCompositeFieldContainer[ReferenceStats]
    def __init__(self, references: _Optional[_Iterable[_Union[ReferenceStats, _Mapping]]] = ...) -> None: ...

class GetFeedbackRequest(_message.Message):
    __slots__ = ("list", "limit")
    LIST_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    list: str
    limit: int
    def __init__(self, list: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ReasonCount(_message.Message):
    __slots__ = ("reason", "count")
    REASON_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    reason: FeedbackReason
    count: int
    def __init__(self, reason: _Optional[_Union[FeedbackReason, str]] = ..., count: _Optional[int] = ...) -> None: ...

class ReferenceFeedback(_message.Message):
    __slots__ = ("reference_id", "total", "counts", "notes", "last_reported_at")
    REFERENCE_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    LAST_REPORTED_AT_FIELD_NUMBER: _ClassVar[int]
    reference_id: str
    total: int
    counts: _containers.RepeatedCompositeFieldContainer[ReasonCount]
    notes: _containers.RepeatedScalarFieldContainer[str]
    last_reported_at: _timestamp_pb2.Timestamp
    def __init__(self, reference_id: _Optional[str] = ..., total: _Optional[int] = ..., counts: _Optional[_Iterable[_Union[ReasonCount, _Mapping]]] = ..., notes: _Optional[_Iterable[str]] = ..., last_reported_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetFeedbackResponse(_message.Message):
    __slots__ = ("references",)
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    references: _containers.RepeatedCompositeFieldContainer[ReferenceFeedback]
    def __init__(self, references: _Optional[_Iterable[_Union[ReferenceFeedback, _Mapping]]] = ...) -> None: ...

class ListQuarantineRequest(_message.Message):
    __slots__ = ("list",)
    LIST_FIELD_NUMBER: _ClassVar[int]
    list: str
    def __init__(self, list: _Optional[str] = ...) -> None: ...

class QuarantinedReference(_message.Message):
    __slots__ = ("reference_id", "since", "window_matches", "baseline")
    REFERENCE_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_MATCHES_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    reference_id: str
    since: _timestamp_pb2.Timestamp
    window_matches: int
    baseline: float
    def __init__(self, reference_id: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_matches: _Optional[int] = ..., baseline: _Optional[float] = ...) -> None: ...

class ListQuarantineResponse(_message.Message):
    __slots__ = ("references",)
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    references: _containers.RepeatedCompositeFieldContainer[QuarantinedReference]
    def __init__(self, references: _Optional[_Iterable[_Union[QuarantinedReference, _Mapping]]] = ...) -> None: ...

class ReleaseQuarantineRequest(_message.Message):
    __slots__ = ("list", "reference_ids")
    LIST_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_IDS_FIELD_NUMBER: _ClassVar[int]
    list: str
    reference_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, list: _Optional[str] = ..., reference_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ReleaseQuarantineResponse(_message.Message):
    __slots__ = ("version", "released")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    version: int
    released: int
    def __init__(self, version: _Optional[int] = ..., released: _Optional[int] = ...) -> None: ...

class UpdateListRequest(_message.Message):
    __slots__ = ("name", "flood", "exposed_label_keys")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FLOOD_FIELD_NUMBER: _ClassVar[int]
    EXPOSED_LABEL_KEYS_FIELD_NUMBER: _ClassVar[int]
    name: str
    flood: FloodPolicy
    exposed_label_keys: LabelKeys
    def __init__(self, name: _Optional[str] = ..., flood: _Optional[_Union[FloodPolicy, _Mapping]] = ..., exposed_label_keys: _Optional[_Union[LabelKeys, _Mapping]] = ...) -> None: ...

class UpdateListResponse(_message.Message):
    __slots__ = ("list",)
    LIST_FIELD_NUMBER: _ClassVar[int]
    list: HashList
    def __init__(self, list: _Optional[_Union[HashList, _Mapping]] = ...) -> None: ...

class GrantAccessRequest(_message.Message):
    __slots__ = ("list", "tenant")
    LIST_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    list: str
    tenant: str
    def __init__(self, list: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class GrantAccessResponse(_message.Message):
    __slots__ = ("granted",)
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    def __init__(self, granted: _Optional[bool] = ...) -> None: ...

class RevokeAccessRequest(_message.Message):
    __slots__ = ("list", "tenant")
    LIST_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    list: str
    tenant: str
    def __init__(self, list: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class RevokeAccessResponse(_message.Message):
    __slots__ = ("revoked",)
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    revoked: bool
    def __init__(self, revoked: _Optional[bool] = ...) -> None: ...

class ListGrantsRequest(_message.Message):
    __slots__ = ("list",)
    LIST_FIELD_NUMBER: _ClassVar[int]
    list: str
    def __init__(self, list: _Optional[str] = ...) -> None: ...

class Grant(_message.Message):
    __slots__ = ("tenant", "granted_at", "granted_by")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    GRANTED_AT_FIELD_NUMBER: _ClassVar[int]
    GRANTED_BY_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    granted_at: _timestamp_pb2.Timestamp
    granted_by: str
    def __init__(self, tenant: _Optional[str] = ..., granted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., granted_by: _Optional[str] = ...) -> None: ...

class ListGrantsResponse(_message.Message):
    __slots__ = ("grants",)
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    grants: _containers.RepeatedCompositeFieldContainer[Grant]
    def __init__(self, grants: _Optional[_Iterable[_Union[Grant, _Mapping]]] = ...) -> None: ...

class GetAuditLogRequest(_message.Message):
    __slots__ = ("list", "since", "until", "actions", "limit")
    LIST_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    list: str
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    actions: _containers.RepeatedScalarFieldContainer[str]
    limit: int
    def __init__(self, list: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actions: _Optional[_Iterable[str]] = ..., limit: _Optional[int] = ...) -> None: ...

class AuditRecord(_message.Message):
    __slots__ = ("at", "actor", "action", "details")
    AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    at: _timestamp_pb2.Timestamp
    actor: str
    action: str
    details: str
    def __init__(self, at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., action: _Optional[str] = ..., details: _Optional[str] = ...) -> None: ...

class GetAuditLogResponse(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[AuditRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[AuditRecord, _Mapping]]] = ...) -> None: ...

from google.rpc import status_pb2 as _status_pb2
from hashmatch.v1 import hashes_pb2 as _hashes_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    VERDICT_NO_MATCH: _ClassVar[Verdict]
    VERDICT_MATCH: _ClassVar[Verdict]
VERDICT_UNSPECIFIED: Verdict
VERDICT_NO_MATCH: Verdict
VERDICT_MATCH: Verdict

class MatchRequest(_message.Message):
    __slots__ = ("item_id", "hashes")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    hashes: _containers.RepeatedCompositeFieldContainer[_hashes_pb2.Hash]
    def __init__(self, item_id: _Optional[str] = ..., hashes: _Optional[_Iterable[_Union[_hashes_pb2.Hash, _Mapping]]] = ...) -> None: ...

class Reference(_message.Message):
    __slots__ = ("list", "reference_id", "list_version", "labels", "video_segment")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LIST_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_ID_FIELD_NUMBER: _ClassVar[int]
    LIST_VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    VIDEO_SEGMENT_FIELD_NUMBER: _ClassVar[int]
    list: str
    reference_id: str
    list_version: int
    labels: _containers.ScalarMap[str, str]
    video_segment: VideoSegment
    def __init__(self, list: _Optional[str] = ..., reference_id: _Optional[str] = ..., list_version: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., video_segment: _Optional[_Union[VideoSegment, _Mapping]] = ...) -> None: ...

class VideoSegment(_message.Message):
    __slots__ = ("first_ms", "last_ms")
    FIRST_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_MS_FIELD_NUMBER: _ClassVar[int]
    first_ms: int
    last_ms: int
    def __init__(self, first_ms: _Optional[int] = ..., last_ms: _Optional[int] = ...) -> None: ...

class MatchResponse(_message.Message):
    __slots__ = ("item_id", "verdict", "references", "error")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    verdict: Verdict
    references: _containers.RepeatedCompositeFieldContainer[Reference]
    error: _status_pb2.Status
    def __init__(self, item_id: _Optional[str] = ..., verdict: _Optional[_Union[Verdict, str]] = ..., references: _Optional[_Iterable[_Union[Reference, _Mapping]]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class MatchBatchRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[MatchRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[MatchRequest, _Mapping]]] = ...) -> None: ...

class MatchBatchResponse(_message.Message):
    __slots__ = ("results", "error")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[MatchResponse]
    error: _status_pb2.Status
    def __init__(self, results: _Optional[_Iterable[_Union[MatchResponse, _Mapping]]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

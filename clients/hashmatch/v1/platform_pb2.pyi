from hashmatch.v1 import hashes_pb2 as _hashes_pb2
from hashmatch.v1 import lists_pb2 as _lists_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReportFalsePositiveRequest(_message.Message):
    __slots__ = ("list", "reference_id", "reason", "note")
    LIST_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    list: str
    reference_id: str
    reason: _lists_pb2.FeedbackReason
    note: str
    def __init__(self, list: _Optional[str] = ..., reference_id: _Optional[str] = ..., reason: _Optional[_Union[_lists_pb2.FeedbackReason, str]] = ..., note: _Optional[str] = ...) -> None: ...

class ReportFalsePositiveResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSubscriptionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetSubscriptionsRequest(_message.Message):
    __slots__ = ("all_lists", "lists")
    ALL_LISTS_FIELD_NUMBER: _ClassVar[int]
    LISTS_FIELD_NUMBER: _ClassVar[int]
    all_lists: bool
    lists: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, all_lists: _Optional[bool] = ..., lists: _Optional[_Iterable[str]] = ...) -> None: ...

class Subscriptions(_message.Message):
    __slots__ = ("all_lists", "lists", "available")
    ALL_LISTS_FIELD_NUMBER: _ClassVar[int]
    LISTS_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    all_lists: bool
    lists: _containers.RepeatedScalarFieldContainer[str]
    available: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, all_lists: _Optional[bool] = ..., lists: _Optional[_Iterable[str]] = ..., available: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateAllowListRequest(_message.Message):
    __slots__ = ("add", "remove")
    ADD_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    add: _containers.RepeatedCompositeFieldContainer[_hashes_pb2.Hash]
    remove: _containers.RepeatedCompositeFieldContainer[_hashes_pb2.Hash]
    def __init__(self, add: _Optional[_Iterable[_Union[_hashes_pb2.Hash, _Mapping]]] = ..., remove: _Optional[_Iterable[_Union[_hashes_pb2.Hash, _Mapping]]] = ...) -> None: ...

class UpdateAllowListResponse(_message.Message):
    __slots__ = ("size",)
    SIZE_FIELD_NUMBER: _ClassVar[int]
    size: int
    def __init__(self, size: _Optional[int] = ...) -> None: ...

class GetAllowListRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetAllowListResponse(_message.Message):
    __slots__ = ("hashes",)
    HASHES_FIELD_NUMBER: _ClassVar[int]
    hashes: _containers.RepeatedCompositeFieldContainer[_hashes_pb2.Hash]
    def __init__(self, hashes: _Optional[_Iterable[_Union[_hashes_pb2.Hash, _Mapping]]] = ...) -> None: ...

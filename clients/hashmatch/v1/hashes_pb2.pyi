from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Algorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALGORITHM_UNSPECIFIED: _ClassVar[Algorithm]
    ALGORITHM_MD5: _ClassVar[Algorithm]
    ALGORITHM_SHA1: _ClassVar[Algorithm]
    ALGORITHM_SHA256: _ClassVar[Algorithm]
    ALGORITHM_PDQ: _ClassVar[Algorithm]
    ALGORITHM_VPDQ: _ClassVar[Algorithm]

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    ERROR_REASON_INVALID_FIELD: _ClassVar[ErrorReason]
    ERROR_REASON_UNAUTHENTICATED: _ClassVar[ErrorReason]
    ERROR_REASON_WRONG_ROLE: _ClassVar[ErrorReason]
    ERROR_REASON_NOT_LIST_OWNER: _ClassVar[ErrorReason]
    ERROR_REASON_LIST_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_LIST_EXISTS: _ClassVar[ErrorReason]
    ERROR_REASON_STALE_VERSION: _ClassVar[ErrorReason]
    ERROR_REASON_TOO_LARGE: _ClassVar[ErrorReason]
    ERROR_REASON_STORE_FULL: _ClassVar[ErrorReason]
    ERROR_REASON_RATE_LIMITED: _ClassVar[ErrorReason]
    ERROR_REASON_READ_ONLY_REPLICA: _ClassVar[ErrorReason]
    ERROR_REASON_BATCH_ID_REUSED: _ClassVar[ErrorReason]
    ERROR_REASON_OVERLOADED: _ClassVar[ErrorReason]
    ERROR_REASON_STREAM_IDLE: _ClassVar[ErrorReason]
ALGORITHM_UNSPECIFIED: Algorithm
ALGORITHM_MD5: Algorithm
ALGORITHM_SHA1: Algorithm
ALGORITHM_SHA256: Algorithm
ALGORITHM_PDQ: Algorithm
ALGORITHM_VPDQ: Algorithm
ERROR_REASON_UNSPECIFIED: ErrorReason
ERROR_REASON_INVALID_FIELD: ErrorReason
ERROR_REASON_UNAUTHENTICATED: ErrorReason
ERROR_REASON_WRONG_ROLE: ErrorReason
ERROR_REASON_NOT_LIST_OWNER: ErrorReason
ERROR_REASON_LIST_NOT_FOUND: ErrorReason
ERROR_REASON_LIST_EXISTS: ErrorReason
ERROR_REASON_STALE_VERSION: ErrorReason
ERROR_REASON_TOO_LARGE: ErrorReason
ERROR_REASON_STORE_FULL: ErrorReason
ERROR_REASON_RATE_LIMITED: ErrorReason
ERROR_REASON_READ_ONLY_REPLICA: ErrorReason
ERROR_REASON_BATCH_ID_REUSED: ErrorReason
ERROR_REASON_OVERLOADED: ErrorReason
ERROR_REASON_STREAM_IDLE: ErrorReason

class VideoFrame(_message.Message):
    __slots__ = ("pdq", "quality", "timestamp_ms")
    PDQ_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    pdq: bytes
    quality: int
    timestamp_ms: int
    def __init__(self, pdq: _Optional[bytes] = ..., quality: _Optional[int] = ..., timestamp_ms: _Optional[int] = ...) -> None: ...

class Hash(_message.Message):
    __slots__ = ("algorithm", "value", "quality", "frames")
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    algorithm: Algorithm
    value: bytes
    quality: int
    frames: _containers.RepeatedCompositeFieldContainer[VideoFrame]
    def __init__(self, algorithm: _Optional[_Union[Algorithm, str]] = ..., value: _Optional[bytes] = ..., quality: _Optional[int] = ..., frames: _Optional[_Iterable[_Union[VideoFrame, _Mapping]]] = ...) -> None: ...

from hashmatch.v1 import hashes_pb2 as _hashes_pb2
from hashmatch.v1 import lists_pb2 as _lists_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetTenantsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReplicatedTenant(_message.Message):
    __slots__ = ("name", "role", "token_hashes", "created_at", "all_lists", "lists", "allow_list")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_HASHES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ALL_LISTS_FIELD_NUMBER: _ClassVar[int]
    LISTS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_LIST_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    token_hashes: _containers.RepeatedScalarFieldContainer[bytes]
    created_at: float
    all_lists: bool
    lists: _containers.RepeatedScalarFieldContainer[str]
    allow_list: _containers.RepeatedCompositeFieldContainer[_hashes_pb2.Hash]
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ..., token_hashes: _Optional[_Iterable[bytes]] = ..., created_at: _Optional[float] = ..., all_lists: _Optional[bool] = ..., lists: _Optional[_Iterable[str]] = ..., allow_list: _Optional[_Iterable[_Union[_hashes_pb2.Hash, _Mapping]]] = ...) -> None: ...

class ReplicatedGrant(_message.Message):
    __slots__ = ("list", "tenant", "granted_at", "granted_by")
    LIST_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    GRANTED_AT_FIELD_NUMBER: _ClassVar[int]
    GRANTED_BY_FIELD_NUMBER: _ClassVar[int]
    list: str
    tenant: str
    granted_at: float
    granted_by: str
    def __init__(self, list: _Optional[str] = ..., tenant: _Optional[str] = ..., granted_at: _Optional[float] = ..., granted_by: _Optional[str] = ...) -> None: ...

class GetTenantsResponse(_message.Message):
    __slots__ = ("tenants", "grants")
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    tenants: _containers.RepeatedCompositeFieldContainer[ReplicatedTenant]
    grants: _containers.RepeatedCompositeFieldContainer[ReplicatedGrant]
    def __init__(self, tenants: _Optional[_Iterable[_Union[ReplicatedTenant, _Mapping]]] = ..., grants: _Optional[_Iterable[_Union[ReplicatedGrant, _Mapping]]] = ...) -> None: ...

class ListPosition(_message.Message):
    __slots__ = ("list", "version")
    LIST_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    list: str
    version: int
    def __init__(self, list: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class FollowRequest(_message.Message):
    __slots__ = ("positions",)
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    positions: _containers.RepeatedCompositeFieldContainer[ListPosition]
    def __init__(self, positions: _Optional[_Iterable[_Union[ListPosition, _Mapping]]] = ...) -> None: ...

class FollowEvent(_message.Message):
    __slots__ = ("tenants", "list", "batch")
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    LIST_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    tenants: GetTenantsResponse
    list: _lists_pb2.HashList
    batch: _lists_pb2.ChangeBatch
    def __init__(self, tenants: _Optional[_Union[GetTenantsResponse, _Mapping]] = ..., list: _Optional[_Union[_lists_pb2.HashList, _Mapping]] = ..., batch: _Optional[_Union[_lists_pb2.ChangeBatch, _Mapping]] = ...) -> None: ...

"""hashmatch client SDK: match uploads (platforms) and keep hash lists in sync (hotlines)."""

from hashmatch.client.algorithms import MD5, PDQ, SHA1, SHA256, make_hash
from hashmatch.client.connection import Connection, RetryPolicy, TlsConfig
from hashmatch.client.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    HashmatchError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from hashmatch.client.list_client import Change, ListClient
from hashmatch.client.match_client import MatchClient
from hashmatch.client.results import ApplyResult, ListInfo, MatchResult, Reference

__all__ = [
    "MD5",
    "PDQ",
    "SHA1",
    "SHA256",
    "AlreadyExists",
    "ApplyResult",
    "Change",
    "Connection",
    "FailedPrecondition",
    "FieldViolation",
    "HashmatchError",
    "InvalidArgument",
    "ListClient",
    "ListInfo",
    "MatchClient",
    "MatchResult",
    "NotFound",
    "PermissionDenied",
    "Reference",
    "ResourceExhausted",
    "RetryPolicy",
    "TlsConfig",
    "Unauthenticated",
    "Unavailable",
    "make_hash",
]

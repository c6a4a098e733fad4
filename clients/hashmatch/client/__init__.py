"""hashmatch client SDK: match uploads (platforms) and keep hash lists in sync (hotlines)."""

from hashmatch.client.aio import AsyncMatchClient
from hashmatch.client.algorithms import MD5, PDQ, SHA1, SHA256, VPDQ, make_hash, make_video_hash
from hashmatch.client.connection import Connection, RetryPolicy, TlsConfig
from hashmatch.client.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    HashmatchError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from hashmatch.client.hashing import FileHashes, PdqNotInstalled, UnreadableFile, hash_file
from hashmatch.client.list_client import Change, ListClient
from hashmatch.client.match_client import MatchClient, file_hashes_to_proto
from hashmatch.client.results import (
    ApplyResult,
    FileResult,
    ListInfo,
    MatchResult,
    Reference,
    Verdict,
)

__all__ = [
    "MD5",
    "PDQ",
    "SHA1",
    "SHA256",
    "VPDQ",
    "AlreadyExists",
    "ApplyResult",
    "AsyncMatchClient",
    "Change",
    "Connection",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "FileHashes",
    "FileResult",
    "HashmatchError",
    "InvalidArgument",
    "ListClient",
    "ListInfo",
    "MatchClient",
    "MatchResult",
    "NotFound",
    "PdqNotInstalled",
    "PermissionDenied",
    "Reference",
    "ResourceExhausted",
    "RetryPolicy",
    "TlsConfig",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "UnreadableFile",
    "Verdict",
    "file_hashes_to_proto",
    "hash_file",
    "make_hash",
    "make_video_hash",
]

"""What the store holds, as typed records (what it returns and takes)."""

from __future__ import annotations

import hashlib
import json
import secrets
import struct
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import NamedTuple


class FloodPolicy(NamedTuple):
    """A list's flood settings (matching/flood.py decides with them)."""

    # Times the baseline a window must exceed; 0 turns detection off for the list.
    factor: int = 20
    # Matches a window needs before it can trip at all.
    min_matches: int = 100
    window_seconds: int = 60


DEFAULT_FLOOD = FloodPolicy()
# Algorithms a list counts entries of (md5, sha1, sha256, pdq, vpdq).
ALGORITHMS = 5
_STAT = struct.Struct(">QddQd")
_SHARE = struct.Struct(">QddQ")


@dataclass(frozen=True)
class FloodStat:
    """A reference's matches, every tenant summed: the total, the last, and the current
    flood window with the baseline it is judged against."""

    total: int = 0
    last: float = 0.0
    window_start: float = 0.0
    window_count: int = 0
    baseline: float = 0.0

    @classmethod
    def unpack(cls, raw: bytes) -> FloodStat:
        return cls(*_STAT.unpack(raw))

    def pack(self) -> bytes:
        return _STAT.pack(
            self.total, self.last, self.window_start, self.window_count, self.baseline
        )


@dataclass(frozen=True)
class TenantShare:
    """One tenant's matches of one reference: how many, when last, and how many of them
    counted toward the flood window that starts at `window_start`."""

    matches: int = 0
    last: float = 0.0
    window_start: float = 0.0
    window_count: int = 0

    @classmethod
    def unpack(cls, raw: bytes) -> TenantShare:
        return cls(*_SHARE.unpack(raw))

    def pack(self) -> bytes:
        return _SHARE.pack(self.matches, self.last, self.window_start, self.window_count)


class Role(StrEnum):
    PLATFORM = "platform"
    HOTLINE = "hotline"
    REPLICA = "replica"


@dataclass(frozen=True)
class Tenant:
    name: str
    role: Role
    created_at: float


@dataclass(frozen=True)
class ListMeta:
    id: int
    name: str
    owner: str
    version: int
    counts: tuple[int, ...]  # md5, sha1, sha256, pdq, vpdq
    pdq_threshold: int
    pdq_min_quality: int
    digest: bytes
    next_entry_id: int
    created_at: float
    updated_at: float
    last_batch_id: str = ""
    flood: FloodPolicy = DEFAULT_FLOOD
    # Label keys platforms see in a verdict (none by default).
    exposed_label_keys: tuple[str, ...] = ()
    # When a video query matches a listed video (shares of frames, percent).
    video_query_percent: int = 80
    video_listed_percent: int = 0

    def to_json(self) -> bytes:
        data = asdict(self)
        data["digest"] = self.digest.hex()
        return json.dumps(data).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ListMeta:
        data = json.loads(raw)
        data["digest"] = bytes.fromhex(data["digest"])
        # Lists stored before VPDQ have four counts.
        data["counts"] = tuple(data["counts"]) + (0,) * (ALGORITHMS - len(data["counts"]))
        data["flood"] = FloodPolicy(*data.get("flood", DEFAULT_FLOOD))
        data["exposed_label_keys"] = tuple(data.get("exposed_label_keys", ()))
        return cls(**data)


@dataclass(frozen=True)
class PlatformSettings:
    """Which lists apply to a platform, and the (algorithm, hash) pairs it allow-listed."""

    all_lists: bool
    lists: list[str]
    allow: list[tuple[int, bytes]]


@dataclass(frozen=True)
class ApplyOutcome:
    version: int
    already_applied: bool
    upserted: int
    retired: int
    digest: bytes


def token_hash(token: str) -> bytes:
    # Tokens are 256-bit random values, so a plain SHA-256 cannot be brute-forced.
    return hashlib.sha256(token.encode("utf-8")).digest()


def new_token() -> str:
    return "hm_" + secrets.token_urlsafe(32)


def tenant_from_json(name: str, raw: bytes) -> Tenant:
    data = json.loads(raw)
    return Tenant(name=name, role=Role(data["role"]), created_at=data["created_at"])

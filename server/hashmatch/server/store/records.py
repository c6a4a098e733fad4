"""What the store holds, as typed records (what it returns and takes)."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import asdict, dataclass
from enum import StrEnum

from hashmatch.server.matching.flood import (
    DEFAULT_FLOOD,
    FloodPolicy,
)


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
    counts: tuple[int, int, int, int]  # md5, sha1, sha256, pdq
    pdq_threshold: int
    pdq_min_quality: int
    digest: bytes
    next_entry_id: int
    created_at: float
    updated_at: float
    last_batch_id: str = ""
    flood: FloodPolicy = DEFAULT_FLOOD

    def to_json(self) -> bytes:
        data = asdict(self)
        data["digest"] = self.digest.hex()
        return json.dumps(data).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ListMeta:
        data = json.loads(raw)
        data["digest"] = bytes.fromhex(data["digest"])
        data["counts"] = tuple(data["counts"])
        data["flood"] = FloodPolicy(*data.get("flood", DEFAULT_FLOOD))
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

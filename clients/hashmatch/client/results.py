"""What the SDK returns: plain, typed values instead of protobuf messages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from hashmatch.client.algorithms import NAMES
from hashmatch.client.errors import HashmatchError, from_status
from hashmatch.v1 import lists_pb2, match_pb2


@dataclass(frozen=True)
class Reference:
    """Where to send a takedown report: the list and its owner's reference ID."""

    list: str
    reference_id: str
    list_version: int


@dataclass(frozen=True)
class MatchResult:
    item_id: str
    matched: bool
    references: tuple[Reference, ...]
    # Set when the server refused this item (MatchBatch/MatchStream); matched is then False.
    error: HashmatchError | None = None

    @classmethod
    def from_proto(cls, msg: match_pb2.MatchResponse) -> MatchResult:
        error = from_status(msg.error) if msg.HasField("error") else None
        return cls(
            item_id=msg.item_id,
            matched=msg.verdict == match_pb2.VERDICT_MATCH,
            references=tuple(
                Reference(r.list, r.reference_id, r.list_version) for r in msg.references
            ),
            error=error,
        )


@dataclass(frozen=True)
class ListInfo:
    name: str
    owner: str
    version: int
    counts: dict[str, int]
    pdq_threshold: int
    pdq_min_quality: int
    digest: str
    created_at: datetime
    updated_at: datetime
    # Where an interrupted upload resumes: the batch_id of the last applied batch.
    last_batch_id: str

    @classmethod
    def from_proto(cls, msg: lists_pb2.HashList) -> ListInfo:
        return cls(
            name=msg.name,
            owner=msg.owner,
            version=msg.version,
            counts={NAMES.get(c.algorithm, str(c.algorithm)): c.count for c in msg.counts},
            pdq_threshold=msg.pdq_threshold,
            pdq_min_quality=msg.pdq_min_quality,
            digest=msg.digest.hex(),
            created_at=msg.created_at.ToDatetime(),
            updated_at=msg.updated_at.ToDatetime(),
            last_batch_id=msg.last_batch_id,
        )


@dataclass(frozen=True)
class ApplyResult:
    version: int
    already_applied: bool
    upserted: int
    retired: int
    digest: str

    @classmethod
    def from_proto(cls, msg: lists_pb2.ApplyChangesResponse) -> ApplyResult:
        return cls(
            version=msg.version,
            already_applied=msg.already_applied,
            upserted=msg.upserted,
            retired=msg.retired,
            digest=msg.digest.hex(),
        )

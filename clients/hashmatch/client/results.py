"""What the SDK returns: plain, typed values instead of protobuf messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from hashmatch.client.algorithms import NAMES
from hashmatch.client.errors import HashmatchError, from_status
from hashmatch.v1 import lists_pb2, match_pb2


@dataclass(frozen=True)
class Reference:
    """Where to send a takedown report: the list and its owner's reference ID, and the
    matching entry's labels that the list's owner shows platforms (e.g. ``{"category":
    "A"}``; empty unless the owner exposes some keys)."""

    list: str
    reference_id: str
    list_version: int
    labels: dict[str, str] = field(default_factory=dict, compare=True, hash=False)
    # For a video query: the first and last timestamp (ms) of its frames that matched.
    video_segment: tuple[int, int] | None = None


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
                Reference(
                    r.list,
                    r.reference_id,
                    r.list_version,
                    dict(sorted(r.labels.items())),
                    (
                        (r.video_segment.first_ms, r.video_segment.last_ms)
                        if r.HasField("video_segment")
                        else None
                    ),
                )
                for r in msg.references
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
    # The label keys platforms see in a verdict (none by default).
    exposed_label_keys: tuple[str, ...] = ()
    # Shares of frames (percent) a video match needs: of the query's, of the listed video's.
    video_query_percent: int = 80
    video_listed_percent: int = 0

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
            exposed_label_keys=tuple(msg.exposed_label_keys),
            video_query_percent=msg.video_query_percent,
            video_listed_percent=msg.video_listed_percent,
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


class Verdict(StrEnum):
    """The outcome for one file: checked (MATCH / NO_MATCH) or not (SKIPPED / ERROR)."""

    MATCH = "MATCH"
    NO_MATCH = "NO_MATCH"
    # The file could not be hashed at all (unreadable, vanished, not a regular file).
    SKIPPED = "SKIPPED"
    # Hashed, but the server refused or could not answer for it.
    ERROR = "ERROR"


@dataclass(frozen=True)
class FileResult:
    """One file's verdict, as `MatchClient.match_files` and the scan report give it.

    ``reason`` says why a file was skipped or failed, and for checked files why no PDQ hash
    was sent (e.g. "not an image", "low PDQ quality 3 < 50"): such files were still matched
    by their MD5, SHA-1 and SHA-256.
    """

    path: str
    verdict: Verdict
    references: tuple[Reference, ...] = ()
    reason: str | None = None
    size: int | None = None

    @property
    def matched(self) -> bool:
        return self.verdict is Verdict.MATCH

    @property
    def checked(self) -> bool:
        return self.verdict in (Verdict.MATCH, Verdict.NO_MATCH)

    @classmethod
    def from_match(
        cls, path: str, result: MatchResult, *, reason: str | None, size: int | None
    ) -> FileResult:
        if result.error is not None:
            return cls(path, Verdict.ERROR, reason=str(result.error), size=size)
        verdict = Verdict.MATCH if result.matched else Verdict.NO_MATCH
        return cls(path, verdict, result.references, reason, size)

    def to_record(self) -> dict[str, Any]:
        """The report record: path, verdict, references (list, reference_id, list_version,
        labels), reason."""
        return {
            "path": self.path,
            "verdict": self.verdict.value,
            "references": [
                {
                    "list": r.list,
                    "reference_id": r.reference_id,
                    "list_version": r.list_version,
                    "labels": dict(r.labels),
                }
                for r in self.references
            ],
            "reason": self.reason,
        }

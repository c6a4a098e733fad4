"""Field checks of the list and platform requests, producing violations that name the field
by its path (match requests are checked by the core, which reads them).

Nothing here echoes a submitted hash or list content back: descriptions state the rule.
"""

from __future__ import annotations

import re

from hashmatch.client.algorithms import DIGEST_LENGTHS, PDQ, VPDQ
from hashmatch.server.errors import Violation
from hashmatch.v1 import hashes_pb2, lists_pb2

MAX_REFERENCE_BYTES = 128
MAX_BATCH_ID_BYTES = 128
MAX_CHANGES_PER_BATCH = 100_000
PDQ_DEFAULT_THRESHOLD = 31
PDQ_DEFAULT_MIN_QUALITY = 50
PDQ_MAX_THRESHOLD = 63
VIDEO_DEFAULT_QUERY_PERCENT = 80
VIDEO_DEFAULT_LISTED_PERCENT = 0

_LIST_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_hash(msg: hashes_pb2.Hash, path: str, out: list[Violation]) -> bool:
    """Checks one hash; appends violations and returns False when it is unusable."""
    expected = DIGEST_LENGTHS.get(msg.algorithm)
    if expected is None:
        out.append(Violation(f"{path}.algorithm", "unknown or unspecified algorithm"))
        return False
    ok = True
    if len(msg.value) != expected:
        out.append(
            Violation(
                f"{path}.value",
                f"must be {expected} bytes for this algorithm, got {len(msg.value)}",
            )
        )
        ok = False
    if msg.HasField("quality"):
        if msg.algorithm not in (PDQ, VPDQ):
            out.append(Violation(f"{path}.quality", "only PDQ hashes carry a quality"))
            ok = False
        elif msg.quality > 100:
            out.append(Violation(f"{path}.quality", "must be 0-100"))
            ok = False
    return ok


def check_text(
    value: str, path: str, max_bytes: int, out: list[Violation], *, required: bool
) -> None:
    size = len(value.encode("utf-8"))
    if required and size == 0:
        out.append(Violation(path, "is required"))
    elif size > max_bytes:
        out.append(Violation(path, f"must be at most {max_bytes} bytes, got {size}"))
    elif _CONTROL.search(value):
        out.append(Violation(path, "must not contain control characters"))


def check_list_name(name: str, path: str, out: list[Violation]) -> None:
    if not _LIST_NAME.fullmatch(name):
        out.append(
            Violation(
                path,
                "must be 1-64 characters of a-z, 0-9, '.', '_' or '-', "
                "starting with a letter or digit",
            )
        )


def create_list(req: lists_pb2.CreateListRequest) -> list[Violation]:
    out: list[Violation] = []
    check_list_name(req.name, "name", out)
    if req.HasField("pdq_threshold") and req.pdq_threshold > PDQ_MAX_THRESHOLD:
        out.append(Violation("pdq_threshold", f"must be 0-{PDQ_MAX_THRESHOLD}"))
    if req.HasField("pdq_min_quality") and req.pdq_min_quality > 100:
        out.append(Violation("pdq_min_quality", "must be 0-100"))
    for field in ("video_query_percent", "video_listed_percent"):
        if req.HasField(field) and getattr(req, field) > 100:
            out.append(Violation(field, "must be 0-100"))
    return out


def batch_fields(batch_id: str, n_upserts: int, n_retirements: int) -> list[Violation]:
    """The batch-level checks of ApplyChanges; the core checks each entry."""
    out: list[Violation] = []
    check_text(batch_id, "batch_id", MAX_BATCH_ID_BYTES, out, required=True)
    total = n_upserts + n_retirements
    if total == 0:
        out.append(Violation("upserts", "a batch needs at least one upsert or retirement"))
    elif total > MAX_CHANGES_PER_BATCH:
        out.append(
            Violation("upserts", f"at most {MAX_CHANGES_PER_BATCH} changes per batch, got {total}")
        )
    return out

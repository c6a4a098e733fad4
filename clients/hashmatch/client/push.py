"""Pushes a list file to the service in atomic batches, resumably, and proves the result.

Batch IDs are `<upload_id>:<n>`, with upload_id derived from the file's content unless
given, so pushing the same file again resumes after the last batch the service applied
(GetList's last_batch_id) and re-sent batches are no-ops: no duplicates, no gaps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import xxhash

from hashmatch.client.algorithms import make_hash
from hashmatch.client.digest import ListDigest
from hashmatch.client.entrychecks import check_rows
from hashmatch.client.errors import Unavailable
from hashmatch.client.list_client import ListClient
from hashmatch.client.listfile import BadRow, Row, detect_format, read_rows
from hashmatch.v1 import lists_pb2

DEFAULT_BATCH_SIZE = 10_000


@dataclass(frozen=True)
class FileSummary:
    """A list file read once: its entry count, the digest of its upserts, and its bad rows
    (the first MAX_REPORTED_BAD of them, and how many there are)."""

    rows: int
    digest: str
    bad: list[BadRow]
    format: str | None = None
    bad_count: int = 0


# Bad rows kept for the report; the rest are only counted.
MAX_REPORTED_BAD = 20


@dataclass(frozen=True)
class PushResult:
    rows: int
    batches: int
    skipped_batches: int
    version: int
    file_digest: str
    list_digest: str

    @property
    def digest_matches(self) -> bool:
        return self.file_digest == self.list_digest


def upload_id_for(path: Path, *, retire: bool = False) -> str:
    """The upload id of a push of this file's content; retiring the file is another upload
    (else retiring a file just pushed would "resume" after its batches and send nothing)."""
    h = xxhash.xxh3_64()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return f"{'retire' if retire else 'push'}-{h.hexdigest()}"


def summarize(
    path: Path, *, retire: bool, fmt: str | None = None, pdq_min_quality: int | None = None
) -> FileSummary:
    """One streaming pass: reads the file in `fmt` (None: detected), makes every check the
    server would make on its entries (`pdq_min_quality`: the list's, None when no list is
    at hand), counts rows and bad rows, and computes the list digest the service should
    report once the file's upserts are the list's whole content."""
    fmt = fmt or detect_format(path)
    digest = ListDigest()
    bad: list[BadRow] = []
    bad_count = rows = 0
    for row in check_rows(read_rows(path, fmt), retire=retire, pdq_min_quality=pdq_min_quality):
        if isinstance(row, BadRow):
            bad_count += 1
            if len(bad) < MAX_REPORTED_BAD:
                bad.append(row)
            continue
        rows += 1
        if not (retire or row.retire):
            digest.add(row.algorithm, row.value, row.reference_id, row.labels)
    return FileSummary(rows, digest.hex(), bad, fmt, bad_count)


def batches(
    path: Path,
    list_name: str,
    upload_id: str,
    batch_size: int,
    *,
    retire: bool,
    skip: int,
    fmt: str | None = None,
) -> Iterator[tuple[int, lists_pb2.ApplyChangesRequest]]:
    """(row count, request) per batch of the file, leaving out the first `skip` batches."""
    request = lists_pb2.ApplyChangesRequest()
    n = 0

    def finish() -> tuple[int, lists_pb2.ApplyChangesRequest]:
        request.list = list_name
        request.batch_id = f"{upload_id}:{n:08d}"
        return len(request.upserts) + len(request.retirements), request

    for row in read_rows(path, fmt):
        assert isinstance(row, Row), "bad rows are refused before pushing"
        h = make_hash(row.algorithm, row.value, row.quality)
        if retire or row.retire:
            request.retirements.append(h)
        else:
            request.upserts.append(
                lists_pb2.Entry(hash=h, reference_id=row.reference_id, labels=row.labels)
            )
        if len(request.upserts) + len(request.retirements) >= batch_size:
            if n >= skip:
                yield finish()
            n += 1
            request = lists_pb2.ApplyChangesRequest()
    if (request.upserts or request.retirements) and n >= skip:
        yield finish()


def resume_point(client: ListClient, list_name: str, upload_id: str) -> int:
    """How many batches of this upload the service has already applied."""
    last = client.get_list(list_name).last_batch_id
    prefix = f"{upload_id}:"
    if last.startswith(prefix) and last[len(prefix) :].isdigit():
        return int(last[len(prefix) :]) + 1
    return 0


def push(
    client: ListClient,
    path: Path,
    list_name: str,
    *,
    summary: FileSummary,
    upload_id: str,
    batch_size: int = DEFAULT_BATCH_SIZE,
    retire: bool = False,
    attempts: int = 5,
    progress: Callable[[int], None] = lambda rows: None,
) -> PushResult:
    """Streams the file in batches; after a dropped connection, resumes where it stopped.
    `progress` is called with the number of rows sent so far."""
    total_batches = -(-summary.rows // batch_size)
    first_skip = skip = resume_point(client, list_name, upload_id)
    progress(min(skip * batch_size, summary.rows))
    for attempt in range(attempts):
        try:
            if skip < total_batches:
                stream = batches(
                    path,
                    list_name,
                    upload_id,
                    batch_size,
                    retire=retire,
                    skip=skip,
                    fmt=summary.format,
                )
                client.upload_changes(_reporting(stream, skip * batch_size, progress))
            break
        except Unavailable:
            if attempt == attempts - 1:
                raise
            time.sleep(min(2.0**attempt, 10.0))
            skip = resume_point(client, list_name, upload_id)
    info = client.get_list(list_name)
    return PushResult(
        rows=summary.rows,
        batches=total_batches,
        skipped_batches=first_skip,
        version=info.version,
        file_digest=summary.digest,
        list_digest=info.digest,
    )


def _reporting(
    stream: Iterator[tuple[int, lists_pb2.ApplyChangesRequest]],
    done: int,
    progress: Callable[[int], None],
) -> Iterator[lists_pb2.ApplyChangesRequest]:
    for rows, request in stream:
        yield request
        done += rows
        progress(done)

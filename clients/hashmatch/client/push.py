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
from hashmatch.client.errors import Unavailable
from hashmatch.client.list_client import ListClient
from hashmatch.client.listfile import BadRow, Row, read_rows
from hashmatch.v1 import lists_pb2

DEFAULT_BATCH_SIZE = 10_000


@dataclass(frozen=True)
class FileSummary:
    rows: int
    digest: str
    bad: list[BadRow]


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


def summarize(path: Path, *, retire: bool) -> FileSummary:
    """One streaming pass: counts rows, collects bad ones, and computes the list digest
    the service should report once the file is the list's whole content."""
    digest = ListDigest()
    latest: dict[tuple[int, bytes], str] = {}
    bad: list[BadRow] = []
    rows = 0
    for row in read_rows(path):
        if isinstance(row, BadRow):
            bad.append(row)
            continue
        rows += 1
        if not retire:
            latest[(row.algorithm, row.value)] = row.reference_id
    for (alg, value), ref in latest.items():
        digest.add(alg, value, ref)
    return FileSummary(rows, digest.hex(), bad)


def batches(
    path: Path, list_name: str, upload_id: str, batch_size: int, *, retire: bool, skip: int
) -> Iterator[tuple[int, lists_pb2.ApplyChangesRequest]]:
    """(row count, request) per batch of the file, leaving out the first `skip` batches."""
    request = lists_pb2.ApplyChangesRequest()
    n = 0

    def finish() -> tuple[int, lists_pb2.ApplyChangesRequest]:
        request.list = list_name
        request.batch_id = f"{upload_id}:{n:08d}"
        return len(request.upserts) + len(request.retirements), request

    for row in read_rows(path):
        assert isinstance(row, Row), "bad rows are refused before pushing"
        h = make_hash(row.algorithm, row.value, row.quality)
        if retire:
            request.retirements.append(h)
        else:
            request.upserts.append(lists_pb2.Entry(hash=h, reference_id=row.reference_id))
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
                stream = batches(path, list_name, upload_id, batch_size, retire=retire, skip=skip)
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

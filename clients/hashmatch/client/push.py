"""Pushes a list file to the service as one unit, and proves the result.

The file travels in batches on one UploadChanges stream whose first message asks for a
whole-file upload: the service checks and stages every batch, and publishes them all in
one commit when the stream ends, or nothing (a refused row anywhere, or a connection that
drops). A refusal names the file lines of the rows it concerns: the client knows which row
went into which batch, and where.

Batch IDs are `<upload_id>:<n>`, with upload_id derived from the file's content unless
given, so pushing a file that was applied already changes nothing (each batch answers
"already applied"); after a dropped connection the push sends the whole file again.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import xxhash

from hashmatch.client.algorithms import make_hash
from hashmatch.client.digest import ListDigest
from hashmatch.client.entrychecks import check_rows
from hashmatch.client.errors import FailedPrecondition, HashmatchError, InvalidArgument, Unavailable
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


# A refused field of a whole-file upload: messages[i].upserts[j]... or .retirements[j]...
_ROW_FIELD = re.compile(r"messages\[(\d+)\]\.(upserts|retirements)\[(\d+)\](.*)")
_MESSAGE_FIELD = re.compile(r"messages\[(\d+)\]\.?(.*)")


class FileRefused(Exception):
    """The service refused the file; nothing of it was applied. `lines` holds (file line,
    what is wrong) for each refused row the service named (line 0: not a row's field, e.g.
    a batch_id), `error` the service's answer."""

    def __init__(self, error: HashmatchError, lines: list[tuple[int, str]]) -> None:
        super().__init__(error.message)
        self.error = error
        self.lines = lines


@dataclass(frozen=True)
class PushResult:
    rows: int
    batches: int
    skipped_batches: int
    version: int
    file_digest: str
    list_digest: str
    # Batches the service found applied already (a file pushed before): nothing changed.
    already_applied: int = 0
    # --replace: entries the file did not list, retired.
    replaced: int = 0

    @property
    def digest_matches(self) -> bool:
        return self.file_digest == self.list_digest


def upload_id_for(path: Path, *, retire: bool = False, batch_size: int = DEFAULT_BATCH_SIZE) -> str:
    """The upload id of a push of this file's content in batches of `batch_size`; retiring
    the file is another upload (else retiring a file just pushed would "resume" after its
    batches and send nothing), and so is another batch size (its batches hold other rows)."""
    h = xxhash.xxh3_64()
    h.update(batch_size.to_bytes(8, "little"))
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
    mode: int = lists_pb2.UPLOAD_MODE_WHOLE,
    fmt: str | None = None,
) -> Iterator[tuple[int, lists_pb2.ApplyChangesRequest]]:
    """(row count, request) per batch of the file, leaving out the first `skip` batches.
    The first request sent carries `mode`. A row marked retire (or every row, with
    `retire`) is sent as a retirement; the others as upserts."""
    request = lists_pb2.ApplyChangesRequest()
    n = 0
    first = True

    def finish() -> tuple[int, lists_pb2.ApplyChangesRequest]:
        nonlocal first
        request.list = list_name
        request.batch_id = f"{upload_id}:{n:08d}"
        if first:
            request.upload_mode = mode  # type: ignore[assignment]
            first = False
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
    """How many batches of this upload the service has already applied: all of them when
    the file was published, or the first few when an upload of batches one by one (an
    older client, or `upload_changes` without a mode) stopped part-way."""
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
    replace: bool = False,
    fmt: str | None = None,
    attempts: int = 5,
    progress: Callable[[int], None] = lambda rows: None,
) -> PushResult:
    """Streams the file as one unit: the list takes all of it or none of it. With
    `replace`, the list becomes equal to the file (entries it does not list are retired in
    the same unit). After a dropped connection nothing of the file is applied, and the push
    sends it again, whole. Raises FileRefused when the service refuses the file.
    `progress` is called with the number of rows sent so far."""
    if replace and not summary.rows:
        # An empty or cut-short export must not empty the list.
        raise ValueError(f"{path} holds no entries: an empty file does not replace a list")
    total_batches = -(-summary.rows // batch_size)
    mode = lists_pb2.UPLOAD_MODE_REPLACE if replace else lists_pb2.UPLOAD_MODE_WHOLE

    def plan() -> tuple[str, int]:
        """This attempt's upload id and how many of its batches to leave out."""
        if replace:
            # Every batch, named after the list's version: the service must see all of the
            # file's entries in this upload, and none of its batches may be taken for one
            # applied before (whose entries the list may have lost since).
            return f"{upload_id}@v{client.get_list(list_name).version}", 0
        return upload_id, resume_point(client, list_name, upload_id)

    name, skip = plan()
    first_skip = skip
    progress(min(skip * batch_size, summary.rows))
    response = lists_pb2.UploadChangesResponse()
    for attempt in range(attempts):
        try:
            if skip < total_batches:
                stream = batches(
                    path,
                    list_name,
                    name,
                    batch_size,
                    retire=retire,
                    skip=skip,
                    mode=mode,
                    fmt=fmt,
                )
                response = client.upload_changes(_reporting(stream, skip * batch_size, progress))
            break
        except Unavailable:
            if attempt == attempts - 1:
                raise
            time.sleep(min(2.0**attempt, 10.0))
            name, skip = plan()
            progress(min(skip * batch_size, summary.rows))
        except (InvalidArgument, FailedPrecondition) as exc:
            raise FileRefused(
                exc, refused_lines(path, exc, batch_size, skip, retire, fmt)
            ) from None
    info = client.get_list(list_name)
    return PushResult(
        rows=summary.rows,
        batches=total_batches,
        skipped_batches=first_skip,
        version=info.version,
        file_digest=summary.digest,
        list_digest=info.digest,
        already_applied=response.batches_already_applied,
        replaced=response.replaced,
    )


def refused_lines(
    path: Path,
    error: HashmatchError,
    batch_size: int,
    skip: int,
    retire: bool,
    fmt: str | None = None,
) -> list[tuple[int, str]]:
    """(file line, what is wrong) for each field violation of a refused upload: message i
    of the stream is batch skip + i, and its upserts[j] / retirements[j] the j-th row of
    that batch sent as an upsert / a retirement. One more pass over the file, only when
    refused. Violations that name no row come with line 0."""
    wanted: dict[tuple[int, str, int], list[str]] = {}
    out: list[tuple[int, str]] = []
    for v in error.violations:
        row_field = _ROW_FIELD.fullmatch(v.field)
        if row_field is None:
            message = _MESSAGE_FIELD.fullmatch(v.field)
            where = f"batch {skip + int(message[1])}" if message else v.field
            what = " ".join(filter(None, (message[2] if message else "", v.description)))
            out.append((0, f"{where}: {what}"))
            continue
        i, kind, j, rest = row_field.groups()
        what = f"{rest.lstrip('.')} {v.description}".strip()
        wanted.setdefault((skip + int(i), kind, int(j)), []).append(what)
    if not wanted:
        return out
    counts = {"upserts": 0, "retirements": 0}
    batch = -1
    good = 0
    for row in read_rows(path, fmt):
        if not isinstance(row, Row):
            continue
        if good % batch_size == 0:
            batch, counts = good // batch_size, {"upserts": 0, "retirements": 0}
        good += 1
        kind = "retirements" if retire or row.retire else "upserts"
        found = wanted.pop((batch, kind, counts[kind]), None)
        counts[kind] += 1
        out += [(row.line, what) for what in found or ()]
        if not wanted:
            break
    return sorted(out)


def _reporting(
    stream: Iterator[tuple[int, lists_pb2.ApplyChangesRequest]],
    done: int,
    progress: Callable[[int], None],
) -> Iterator[lists_pb2.ApplyChangesRequest]:
    for rows, request in stream:
        yield request
        done += rows
        progress(done)

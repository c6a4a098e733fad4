"""Platform SDK: send the hashes of an upload, get a verdict.

`MatchClient.match_file` hashes a file locally (MD5, SHA-1, SHA-256 and, with the ``[pdq]``
extra, PDQ) and matches it: only the hashes leave the machine, never the content or the path.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import grpc

from hashmatch.client.algorithms import MD5, PDQ, SHA1, SHA256, make_hash, make_video_hash
from hashmatch.client.connection import ChannelClient, Connection
from hashmatch.client.errors import HashmatchError, from_rpc_error, from_status
from hashmatch.client.hashing import (
    FileHashes,
    PdqNotInstalled,
    UnreadableFile,
    hash_file,
    pdq_available,
)
from hashmatch.client.results import FileResult, MatchResult, Verdict
from hashmatch.client.video import UndecodableVideo, VideoNotInstalled, hash_video
from hashmatch.v1 import hashes_pb2, match_pb2, match_pb2_grpc

Item = tuple[str, Sequence[hashes_pb2.Hash]]
# The server's cap on items per MatchBatch call.
MAX_BATCH_ITEMS = 10_000
DEFAULT_BATCH_ITEMS = 1_000
# The server's cap on video frames per call (and per video).
MAX_REQUEST_FRAMES = 100_000

StrPath = str | os.PathLike[str]


def file_hashes_to_proto(hashes: FileHashes) -> list[hashes_pb2.Hash]:
    """The hashes of one file as one item: its digests and every PDQ variant with quality."""
    out = [
        make_hash(MD5, hashes.md5),
        make_hash(SHA1, hashes.sha1),
        make_hash(SHA256, hashes.sha256),
    ]
    seen: set[bytes] = set()
    for pdq in hashes.pdq:
        if pdq.value not in seen:  # a symmetric image has equal dihedral variants
            seen.add(pdq.value)
            out.append(make_hash(PDQ, pdq.value, pdq.quality))
    return out


# hash_file's reason for a file that holds no image: a video is then tried.
NOT_AN_IMAGE = "not an image"


def video_query_hash(path: StrPath, fps: float = 1.0) -> hashes_pb2.Hash | None:
    """The VPDQ query hash of a video file, `fps` frames a second, or None when this client
    cannot hash it as a video (no ``[video]`` extra, no decodable video stream, no frame)."""
    try:
        video = hash_video(path, fps=fps)
    except (VideoNotInstalled, UndecodableVideo):
        return None
    if not video.frames:
        return None
    return make_video_hash((f.pdq, f.quality, round(f.timestamp * 1000)) for f in video.frames)


def batch_request(items: Iterable[Item]) -> match_pb2.MatchBatchRequest:
    return match_pb2.MatchBatchRequest(
        items=[match_pb2.MatchRequest(item_id=i, hashes=h) for i, h in items]
    )


PDQ_EXTRA = "hashmatch-client[pdq]"
# The reason on results hashed with pdq=None while the [pdq] extra is missing.
PDQ_NOT_COMPUTED = f"PDQ not computed: the {PDQ_EXTRA} extra is not installed"


def resolve_pdq(pdq: bool | None, dihedral: bool) -> bool:
    """Whether to compute PDQ: ``pdq`` if given, else when the ``[pdq]`` extra is installed.

    Raises PdqNotInstalled when PDQ is asked for (``pdq=True``, or ``dihedral`` without
    ``pdq=False``) and the extra is missing, instead of quietly matching by digests alone.
    """
    if pdq is False:
        return False
    if pdq_available():
        return True
    if pdq is True or dihedral:
        wanted = "dihedral=True" if dihedral else "pdq=True"
        raise PdqNotInstalled(
            f"{wanted} needs PDQ hashing, which needs the optional extra: "
            f"pip install '{PDQ_EXTRA}' (pdqhash, numpy, pillow)"
        )
    return False


def hash_for_request(
    path: StrPath, *, dihedral: bool, pdq: bool | None, min_quality: int
) -> FileHashes:
    """`hash_file` with PDQ resolved by `resolve_pdq`; when ``pdq`` was left to None and the
    extra is missing, ``pdq_skip_reason`` says PDQ was not computed."""
    use_pdq = resolve_pdq(pdq, dihedral)
    hashes = hash_file(path, pdq=use_pdq, dihedral=dihedral, min_quality=min_quality)
    if pdq is None and not use_pdq:
        hashes = dataclasses.replace(hashes, pdq_skip_reason=PDQ_NOT_COMPUTED)
    return hashes


@dataclass(frozen=True)
class HashedFile:
    """A file hashed for matching (``hashes`` set) or one that could not be (``skipped``)."""

    path: str
    hashes: FileHashes | None = None
    skipped: FileResult | None = None
    # The vPDQ query hash of a file that holds a video rather than an image.
    video: hashes_pb2.Hash | None = None

    @property
    def frames(self) -> int:
        return len(self.video.frames) if self.video is not None else 0

    def answered(self, result: MatchResult) -> FileResult:
        """This file's result from its item's answer."""
        assert self.hashes is not None, "a skipped file has no item"
        return FileResult.from_match(self.path, result, reason=self.reason, size=self.hashes.size)

    @property
    def reason(self) -> str | None:
        """Why no perceptual hash was sent (None when one was)."""
        if self.hashes is None or self.video is not None:
            return None
        return self.hashes.pdq_skip_reason


def hash_item(
    path: StrPath,
    *,
    dihedral: bool = False,
    pdq: bool | None = None,
    min_quality: int = 50,
    video_fps: float = 1.0,
) -> HashedFile:
    """Hashes one file for a match item: `hash_for_request`, and for a file that holds no
    image but a video (with the ``[video]`` extra) its vPDQ frames, ``video_fps`` a second,
    unless ``pdq=False``. Raises UnreadableFile, and PdqNotInstalled as `resolve_pdq` does."""
    name = os.fspath(path)
    hashes = hash_for_request(name, dihedral=dihedral, pdq=pdq, min_quality=min_quality)
    video = None
    if pdq is not False and hashes.pdq_skip_reason == NOT_AN_IMAGE:
        video = video_query_hash(name, video_fps)
    return HashedFile(name, hashes, video=video)


def hash_for_matching(
    path: StrPath,
    *,
    dihedral: bool = False,
    pdq: bool | None = None,
    min_quality: int = 50,
    video_fps: float = 1.0,
) -> HashedFile:
    """`hash_item`, with an unreadable file a SKIPPED result instead of an exception."""
    try:
        return hash_item(
            path, dihedral=dihedral, pdq=pdq, min_quality=min_quality, video_fps=video_fps
        )
    except UnreadableFile as exc:
        name = os.fspath(path)
        return HashedFile(name, skipped=FileResult(name, Verdict.SKIPPED, reason=exc.strerror))


def item_hashes(hashed: HashedFile) -> list[hashes_pb2.Hash]:
    """The hashes of one hashed file's match item."""
    assert hashed.hashes is not None, "a skipped file has no item"
    hashes = file_hashes_to_proto(hashed.hashes)
    if hashed.video is not None:
        hashes.append(hashed.video)
    return hashes


def chunks(files: Sequence[HashedFile], size: int) -> Iterator[list[HashedFile]]:
    """Calls of at most `size` files and MAX_REQUEST_FRAMES video frames (a video over
    that goes alone: the server names what is wrong with it)."""
    if not 1 <= size <= MAX_BATCH_ITEMS:
        raise ValueError(f"batch size must be 1-{MAX_BATCH_ITEMS}")
    chunk: list[HashedFile] = []
    frames = 0
    for f in files:
        if chunk and (len(chunk) >= size or frames + f.frames > MAX_REQUEST_FRAMES):
            yield chunk
            chunk, frames = [], 0
        chunk.append(f)
        frames += f.frames
    if chunk:
        yield chunk


def batch_items(files: Sequence[HashedFile]) -> list[Item]:
    """MatchBatch items for the hashed files, with opaque item IDs (never the path)."""
    hashed = [f for f in files if f.hashes is not None]
    return [(str(i), item_hashes(f)) for i, f in enumerate(hashed)]


def merge_results(files: Sequence[HashedFile], answered: Sequence[MatchResult]) -> list[FileResult]:
    """One FileResult per file, in the order given: skipped ones as they are, the rest answered."""
    out: list[FileResult] = []
    index = 0
    for f in files:
        if f.hashes is None:
            assert f.skipped is not None
            out.append(f.skipped)
            continue
        result = answered[index]
        if result.item_id != str(index):
            raise HashmatchError(f"the server answered item {result.item_id!r} for {index}")
        index += 1
        out.append(f.answered(result))
    if index != len(answered):
        raise HashmatchError(f"the server answered {len(answered)} items for {index}")
    return out


class MatchClient(ChannelClient):
    """Synchronous client for MatchService. Thread-safe; reuse one per process.

    Every call takes an optional ``timeout`` (seconds, retries included) overriding the
    connection's; UNAVAILABLE and RESOURCE_EXHAUSTED are retried per its RetryPolicy.
    """

    def __init__(self, connection: Connection | None = None) -> None:
        super().__init__(connection)
        self._stub = match_pb2_grpc.MatchServiceStub(self._channel)

    def match(
        self,
        hashes: Sequence[hashes_pb2.Hash],
        item_id: str = "",
        *,
        timeout: float | None = None,
    ) -> MatchResult:
        request = match_pb2.MatchRequest(item_id=item_id, hashes=hashes)
        metadata = self.connection.metadata()
        response = self.connection.invoke(
            lambda t: self._stub.Match(request, timeout=t, metadata=metadata), timeout=timeout
        )
        return MatchResult.from_proto(response)

    def match_batch(
        self, items: Iterable[Item], *, timeout: float | None = None
    ) -> list[MatchResult]:
        """Results in request order; a refused item has `error` set, the rest are answered."""
        request = batch_request(items)
        metadata = self.connection.metadata()
        response = self.connection.invoke(
            lambda t: self._stub.MatchBatch(request, timeout=t, metadata=metadata),
            timeout=timeout,
        )
        return [MatchResult.from_proto(r) for r in response.results]

    def match_batch_stream(
        self, batches: Iterable[Sequence[Item]], *, timeout: float | None = None
    ) -> Iterator[list[MatchResult]]:
        """MatchBatchStream, for pipelines: one list of results per batch, in order, each as
        `match_batch` answers it. Not retried: a failure, or a batch refused as a whole (such
        as an empty one: `InvalidArgument`), raises; the batches before it were answered."""
        stream = self._stub.MatchBatchStream(
            (batch_request(b) for b in batches),
            timeout=timeout,
            metadata=self.connection.metadata(),
        )
        try:
            for response in stream:
                if response.HasField("error"):
                    raise from_status(response.error)
                yield [MatchResult.from_proto(r) for r in response.results]
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            stream.cancel()

    def match_file(
        self,
        path: StrPath,
        *,
        item_id: str = "",
        dihedral: bool = False,
        pdq: bool | None = None,
        min_quality: int = 50,
        timeout: float | None = None,
        video_fps: float = 1.0,
    ) -> FileResult:
        """Hashes a file here and matches it: the upload-time check.

        A video (with the ``[video]`` extra) is also sent as its vPDQ frames, ``video_fps``
        frames a second, unless ``pdq=False``; the result's ``reason`` is then None.

        PDQ is computed when the ``[pdq]`` extra is installed (``pdq=None``) and the file is
        an image of at least ``min_quality``; ``dihedral`` also sends its 7 rotations and
        mirrors. Without the extra, ``pdq=None`` matches by the digests alone and the result's
        ``reason`` says PDQ was not computed; ``pdq=True`` or ``dihedral`` raise
        PdqNotInstalled. Raises UnreadableFile when the file cannot be read, HashmatchError
        when the server refuses or cannot be reached.
        """
        hashed = hash_item(
            path, dihedral=dihedral, pdq=pdq, min_quality=min_quality, video_fps=video_fps
        )
        result = self.match(item_hashes(hashed), item_id, timeout=timeout)
        return hashed.answered(result)

    def match_files(
        self,
        paths: Iterable[StrPath],
        *,
        dihedral: bool = False,
        pdq: bool | None = None,
        min_quality: int = 50,
        batch_size: int = DEFAULT_BATCH_ITEMS,
        timeout: float | None = None,
        video_fps: float = 1.0,
    ) -> list[FileResult]:
        """Hashes files in this process and matches them in MatchBatch calls, in order.

        Unreadable files come back SKIPPED instead of raising; a failed call raises. PDQ and
        videos as in `match_file`. For folders and parallel hashing use
        `hashmatch.client.scan`.
        """
        resolve_pdq(pdq, dihedral)  # before any hashing: PdqNotInstalled
        files = [
            hash_for_matching(
                p, dihedral=dihedral, pdq=pdq, min_quality=min_quality, video_fps=video_fps
            )
            for p in paths
        ]
        out: list[FileResult] = []
        for chunk in chunks(files, batch_size):
            items = batch_items(chunk)
            answered = self.match_batch(items, timeout=timeout) if items else []
            out += merge_results(chunk, answered)
        return out

"""vPDQ hashing of videos on the platform's side: a PDQ hash of each sampled frame.

The hash of a video is its list of frames, each ``(frame_number, quality, pdq, timestamp)``, as
Meta's reference implementation (ThreatExchange ``vpdq``) makes it: frames are decoded in
order and numbered from 0, every ``int(frame_rate / fps)``-th frame is converted to RGB at the
stream's size (area scaling) and hashed with PDQ, and its timestamp is ``frame_number /
frame_rate`` (the stream's average frame rate, else its base rate). With ``fps=0`` every frame
is hashed. A frame whose PDQ hash equals an earlier frame's is kept once, the first: the
reference keeps them all in its hash and drops the repeats when it matches, so the verdicts
are the same and the hash is smaller.

Beyond the reference, black letterbox and pillarbox bars are cut from each frame before PDQ
(``trim_letterbox``, on by default; see `hashmatch.client.letterbox`), so a barred copy of a
listed video still matches; with it off the frames agree with the reference's hashes.

Needs the optional extra ``hashmatch-client[video]``: PyAV, whose wheels carry FFmpeg (no
system FFmpeg needed), and the PDQ extra. The file is read as the demuxer asks, never whole.
"""

from __future__ import annotations

import math
import mimetypes
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from hashmatch.client.hashing import PDQ_BYTES, UnreadableFile, _open_regular, _pdq_backend

if TYPE_CHECKING:
    import io

    import numpy as np
    from av.container import InputContainer
    from numpy.typing import NDArray

__all__ = [
    "MAX_FRAME_PIXELS",
    "UndecodableVideo",
    "VideoFrameHash",
    "VideoHash",
    "VideoNotInstalled",
    "hash_video",
    "holds_video",
]

# 8K UHD. A frame costs about 11 bytes a pixel while it is hashed (RGB, then PDQ's two float
# luma planes): 400 MB here. A hostile file can declare any size, so larger ones are refused.
MAX_FRAME_PIXELS = 7680 * 4320
# The reference refuses frames below this side, where PDQ's 64x64 downsampling has no meaning.
_MIN_SIDE = 5

_VIDEO_EXTRA_HINT = (
    "video hashing needs the optional extra: pip install 'hashmatch-client[video]' (av, pdqhash)"
)


class VideoNotInstalled(ImportError):
    """Video hashing was requested but the ``hashmatch-client[video]`` extra is not installed."""


class UndecodableVideo(ValueError):
    """The file holds no video stream that can be hashed; ``reason`` says why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot hash video {self.path}: {self.reason}"


@dataclass(frozen=True, slots=True)
class VideoFrameHash:
    """One hashed frame: its number in decoding order (from 0), PDQ quality and hash, and time."""

    frame_number: int
    quality: int
    pdq: bytes
    timestamp: float  # seconds: frame_number / frame rate, as the reference computes it

    def __post_init__(self) -> None:
        if len(self.pdq) != PDQ_BYTES:
            raise ValueError(f"PDQ hash must be {PDQ_BYTES} bytes, got {len(self.pdq)}")
        if self.frame_number < 0:
            raise ValueError(f"frame_number must be 0 or more, got {self.frame_number}")
        if not 0 <= self.quality <= 100:
            raise ValueError(f"quality must be 0..100, got {self.quality}")
        if not (math.isfinite(self.timestamp) and self.timestamp >= 0):
            raise ValueError(f"timestamp must be finite and 0 or more, got {self.timestamp}")


@dataclass(frozen=True, slots=True)
class VideoHash:
    """The vPDQ hash of a video: its hashed frames in order, and what they were taken from."""

    frames: tuple[VideoFrameHash, ...]
    frames_decoded: int
    frame_rate: float
    width: int
    height: int


def hash_video(
    path: str | os.PathLike[str],
    *,
    fps: float = 1.0,
    trim_letterbox: bool = True,
    progress: Callable[[int, int], None] | None = None,
    max_frame_pixels: int = MAX_FRAME_PIXELS,
) -> VideoHash:
    """Hash the first video stream of a file with vPDQ.

    ``fps`` is how many frames a second are hashed (1 for queries; 0 hashes every frame, as a
    listed video should be hashed). ``progress(bytes_read, file_size)`` is called as the file
    is read. Raises VideoNotInstalled without the extra, UnreadableFile when the file cannot
    be read, and UndecodableVideo when it holds no video that can be hashed (not a video, no
    frame rate, frames larger than ``max_frame_pixels``, a decoding error).
    """
    if not (math.isfinite(fps) and fps >= 0):
        raise ValueError(f"fps must be a finite number, 0 or more, got {fps}")
    if max_frame_pixels <= 0:
        raise ValueError("max_frame_pixels must be positive")
    backend = _video_backend()  # fail before any I/O when the extra is missing
    fspath = os.fspath(path)
    try:
        with _open_regular(fspath) as fh:
            hasher = _Hasher(backend, fspath, fh, progress)
            return hasher.run(fps=fps, trim=trim_letterbox, max_pixels=max_frame_pixels)
    except (UnreadableFile, UndecodableVideo):
        raise
    except backend.av.FFmpegError as exc:
        raise UndecodableVideo(fspath, _ffmpeg_reason(exc)) from exc
    except OSError as exc:
        raise UnreadableFile(exc.errno, exc.strerror or str(exc), fspath) from exc


def holds_video(path: str | os.PathLike[str]) -> bool:
    """Whether the file has a video stream, from its header alone (nothing is decoded).

    Without the ``[video]`` extra the file's name decides (``video/*`` by its extension), so
    a caller can still say that a video was not hashed as one.
    """
    fspath = os.fspath(path)
    try:
        import av
    except ImportError:
        kind = mimetypes.guess_type(fspath)[0]
        return kind is not None and kind.startswith("video/")
    try:
        with _open_regular(fspath) as fh, av.open(fh, mode="r") as container:
            return bool(container.streams.video)
    except (av.FFmpegError, OSError):
        return False


@dataclass(frozen=True, slots=True)
class _VideoBackend:
    av: Any  # the av module; typed where it is used
    np: Any
    pdqhash: Any  # untyped compiled extension
    content_box: Callable[[NDArray[np.uint8]], tuple[int, int, int, int]]


def _video_backend() -> _VideoBackend:
    # Imported on demand: the extra is optional, and PyAV loads all of FFmpeg.
    try:
        import av
    except ImportError as exc:
        raise VideoNotInstalled(f"{_VIDEO_EXTRA_HINT}; import failed: {exc}") from exc
    pdq = _pdq_backend()
    from hashmatch.client.letterbox import content_box

    return _VideoBackend(av, pdq.np, pdq.pdqhash, content_box)


def _ffmpeg_reason(exc: Exception) -> str:
    # FFmpeg errors carry the file name we passed; the caller's path is said once already.
    strerror = getattr(exc, "strerror", None)
    return strerror or str(exc) or type(exc).__name__


class _Hasher:
    def __init__(
        self,
        b: _VideoBackend,
        path: str,
        fh: io.BufferedReader,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        self._b = b
        self._path = path
        self._fh = fh
        self._size = os.fstat(fh.fileno()).st_size
        self._progress = progress
        self._reported = -1

    def run(self, *, fps: float, trim: bool, max_pixels: int) -> VideoHash:
        container: InputContainer = self._b.av.open(self._fh, mode="r")
        with container:
            return self._hash(container, fps=fps, trim=trim, max_pixels=max_pixels)

    def _hash(
        self, container: InputContainer, *, fps: float, trim: bool, max_pixels: int
    ) -> VideoHash:
        if not container.streams.video:
            raise UndecodableVideo(self._path, "no video stream")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if width < _MIN_SIDE or height < _MIN_SIDE:
            raise UndecodableVideo(self._path, f"frame size {width}x{height} is too small")
        if width * height > max_pixels:
            raise UndecodableVideo(
                self._path, f"frame size {width}x{height} is over {max_pixels} pixels"
            )
        rate = stream.average_rate or stream.base_rate
        if rate is None or rate <= 0:
            raise UndecodableVideo(self._path, "the video stream has no frame rate")
        frame_rate = float(rate)
        # The reference's sampling rule, floating-point steps included: int(seconds * rate).
        step = max(1, int((1.0 / fps) * frame_rate)) if fps > 0 else 1
        stream.thread_type = "AUTO"
        # The header's size is only a claim: a hostile stream can switch to huge frames midway.
        # FFmpeg's decoder then refuses them itself, before allocating them.
        stream.codec_context.options = {"max_pixels": str(max_pixels)}

        frames: list[VideoFrameHash] = []
        seen: set[bytes] = set()
        decoded = 0
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    if decoded % step == 0:
                        # Scaled to the stream's size, as the reference does, so a later
                        # frame of another size is hashed like the first ones.
                        rgb = cast(
                            "NDArray[np.uint8]",
                            frame.to_ndarray(
                                format="rgb24", width=width, height=height, interpolation="AREA"
                            ),
                        )
                        hashed = self._hash_frame(rgb, decoded, frame_rate, trim)
                        if hashed.pdq not in seen:
                            seen.add(hashed.pdq)
                            frames.append(hashed)
                    decoded += 1
                self._report(self._fh.tell())
        except self._b.av.FFmpegError as exc:
            reason = f"after {decoded} frames: {_ffmpeg_reason(exc)}"
            raise UndecodableVideo(self._path, reason) from exc
        if decoded == 0:
            raise UndecodableVideo(self._path, "no frame could be decoded")
        self._report(self._size)
        return VideoHash(tuple(frames), decoded, frame_rate, width, height)

    def _hash_frame(
        self, rgb: NDArray[np.uint8], frame_number: int, frame_rate: float, trim: bool
    ) -> VideoFrameHash:
        np = self._b.np
        if trim:
            top, bottom, left, right = self._b.content_box(rgb)
            rgb = np.ascontiguousarray(rgb[top:bottom, left:right])
        vector, quality = self._b.pdqhash.compute(rgb)
        # Bits most significant first, as hashing.py packs image PDQ hashes: the reference's
        # hex order, so frame and image hashes compare bit for bit.
        pdq = np.packbits(vector.astype(np.uint8)).tobytes()
        return VideoFrameHash(frame_number, int(quality), pdq, frame_number / frame_rate)

    def _report(self, position: int) -> None:
        # The demuxer may seek back (an MP4 index at the end): progress never goes backwards.
        done = min(position, self._size)
        if self._progress is not None and done > self._reported:
            self._reported = done
            self._progress(done, self._size)

"""List-file rows made from files: what `hashmatch-client hash` prints and `push` reads.

A hotline hashes the material it vetted with the same hasher the platforms run, so the list
matches what they send. Each file gives its MD5, SHA-1 and SHA-256 and, per media kind, its
perceptual hashes: for an image its PDQ (both PDQs of a photo with an EXIF orientation: the
upright picture and the pixels as stored), for a video one VPDQ row per distinct frame.
Rows are the positional list-file layout, ``algorithm,hash_hex,reference_id[,quality]``
(see listfile.py).

Each image kind is one function in ``MEDIA_ROWS``: it is given the file and what `hash_file`
computed, and returns its rows, or none when the file is not of its kind. A video, which
`hash_file` does not decode, gets its rows from ``video_rows``.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from hashmatch.client.algorithms import MD5, NAMES, PDQ, SHA1, SHA256, VPDQ
from hashmatch.client.entrychecks import is_degenerate_pdq
from hashmatch.client.hashing import FileHashes, hash_file
from hashmatch.client.scan import Found, walk
from hashmatch.client.video import UndecodableVideo, VideoNotInstalled, hash_video, holds_video


@dataclass(frozen=True)
class ListRow:
    """One entry of a list file: ``algorithm,hash_hex,reference_id[,quality]``."""

    algorithm: int
    value: bytes
    reference_id: str
    quality: int | None = None

    def csv_line(self) -> str:
        out = io.StringIO()
        fields = [NAMES[self.algorithm], self.value.hex(), self.reference_id]
        if self.quality is not None:
            fields.append(str(self.quality))
        # csv quotes a reference ID holding a comma or a quote, as listfile's reader expects.
        csv.writer(out, lineterminator="\n").writerow(fields)
        return out.getvalue()


@dataclass
class FileRows:
    """The rows of one file, and what the reader should know (PDQ not made, and why)."""

    path: str
    rows: list[ListRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def image_rows(path: str, hashes: FileHashes, reference_id: str) -> list[ListRow]:
    """PDQ rows of an image: one, or two for a photo with an EXIF orientation."""
    return [ListRow(PDQ, h.value, reference_id, h.quality) for h in hashes.pdq]


# One function per media kind; each returns no rows for a file not of its kind.
MEDIA_ROWS: tuple[Callable[[str, FileHashes, str], list[ListRow]], ...] = (image_rows,)


def file_rows(
    path: str, reference_id: str, *, pdq: bool, min_quality: int, full_decode: bool = False
) -> FileRows:
    """The rows of one file: its digests, then each media kind's rows.

    Raises UnreadableFile when the file cannot be read, PdqNotInstalled as `hash_file` does.
    """
    hashes = hash_file(path, pdq=pdq, min_quality=min_quality, full_decode=full_decode)
    out = FileRows(path)
    for algorithm, value in ((MD5, hashes.md5), (SHA1, hashes.sha1), (SHA256, hashes.sha256)):
        out.rows.append(ListRow(algorithm, value, reference_id))
    for kind in MEDIA_ROWS:
        out.rows += kind(path, hashes, reference_id)
    if pdq and hashes.pdq_skip_reason not in (None, "not an image"):
        out.notes.append(f"no PDQ: {hashes.pdq_skip_reason}")
    if pdq and hashes.pdq_skip_reason == "not an image" and holds_video(path):
        out.rows += video_rows(path, reference_id, min_quality, out.notes)
    return out


def video_rows(path: str, reference_id: str, min_quality: int, notes: list[str]) -> list[ListRow]:
    """A listed video's VPDQ rows: every frame hashed, each distinct hash once, frames
    below `min_quality` and degenerate ones left out (the list would refuse them); what was
    left out, or why there are none, goes in `notes`."""
    try:
        video = hash_video(path, fps=0)
    except VideoNotInstalled:
        notes.append("a video: only its digests are listed (the [video] extra is not installed)")
        return []
    except UndecodableVideo as exc:
        notes.append(f"a video: only its digests are listed ({exc.reason})")
        return []
    kept = [f for f in video.frames if f.quality >= min_quality and not is_degenerate_pdq(f.pdq)]
    if len(kept) < len(video.frames):
        notes.append(
            f"a video: {len(video.frames) - len(kept)} of its {len(video.frames)} distinct "
            f"frames left out (quality below {min_quality}, or flat)"
        )
    return [ListRow(VPDQ, f.pdq, reference_id, f.quality) for f in kept]


def named_files(paths: Iterable[str], fixed: str | None) -> Iterator[tuple[Found, str]]:
    """Each file to hash with its reference ID: ``fixed`` when given, else the file's name, or
    for a file found in a folder given, its path inside that folder (``a/b.jpg``). Folders
    are walked as `scan` walks them (sorted, never out of the folder through a link)."""
    for given in paths:
        if not os.path.isdir(given):
            yield Found(given), fixed or os.path.basename(os.path.normpath(given))
            continue
        for found in walk([given]):
            inside = os.path.relpath(found.path, given).replace(os.sep, "/")
            yield found, fixed or inside


def without_repeats(files: Iterable[FileRows]) -> Iterator[FileRows]:
    """Leaves out a hash an earlier file already gave: a list holds a hash once, and a batch
    naming it twice is refused. A note on the file says which file had it first."""
    first: dict[tuple[int, bytes], str] = {}
    for f in files:
        kept: list[ListRow] = []
        here: set[tuple[int, bytes]] = set()
        for row in f.rows:
            key = (row.algorithm, row.value)
            earlier = first.setdefault(key, f.path)
            if earlier != f.path:
                f.notes.append(f"{NAMES[row.algorithm]} already given for {earlier}: left out")
            elif key not in here:  # a symmetric photo: its two PDQs are one
                here.add(key)
                kept.append(row)
        f.rows = kept
        yield f

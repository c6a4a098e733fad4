"""Local hashing of files: MD5, SHA-1, SHA-256 and PDQ, so only hashes ever leave the platform.

PDQ needs the optional extra ``hashmatch-client[pdq]`` (pdqhash, numpy, Pillow). Those are
imported only when a PDQ hash is asked for, so digest-only use works on a bare install.

Two choices keep our PDQ hashes in agreement with the rest of the ecosystem:

- A photo whose EXIF orientation is not 1 gets two PDQ hashes: the upright picture (as a
  viewer shows it) and the pixels as stored (what Meta's tools — threatexchange, HMA,
  pdqhash, the C++ reference — hash, since they ignore the tag). The two are some 130 bits
  apart, so a list built either way matches only when both are sent.
- Large JPEGs are decoded at a reduced scale (1/2, 1/4 or 1/8, done inside the JPEG decoder)
  that keeps the shorter side at least ``DRAFT_MIN_SIDE`` pixels: PDQ shrinks every image to
  64x64 anyway, and a 12-megapixel photo then hashes about four times faster. The
  distance to the full-size decode this costs is measured in
  benchmarks/client/bench_decode_scale.py and bounded in tests/test_client_decode_scale.py.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import stat
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = [
    "DIHEDRAL_TRANSFORMS",
    "FileHashes",
    "PdqHash",
    "PdqNotInstalled",
    "UnreadableFile",
    "hash_file",
    "pdq_available",
]

PDQ_BYTES = 32

# A JPEG is decoded at the largest reduction (1/2, 1/4, 1/8) that leaves its shorter side at
# least this many pixels; 12-megapixel photos decode at 1/2. Chosen from the distance
# distribution (full decode vs each scale) in benchmarks/client/bench_decode_scale.py: with
# a shorter side of 1024 or more the hash moved at most 6 bits, inside the 10 that two
# conforming decoders may differ by; at 512-1023 pixels it moved up to 16, more than resizing
# the image does, which would eat half the default match threshold (31).
DRAFT_MIN_SIDE = 1024

# The order pdqhash.compute_dihedral returns its hashes in (the C++ reference's argument order),
# named as the reference names them. Checked against testdata/pdq/images/dihedral/: variant i of
# the original is within a few bits of the plain hash of file bridge-<i+1>-*.jpg. In Pillow terms:
# rotate90 = Transpose.ROTATE_90 (counter-clockwise), flipx = FLIP_TOP_BOTTOM (mirror across the
# x axis), flipy = FLIP_LEFT_RIGHT, flipplus1 = TRANSPOSE, flipminus1 = TRANSVERSE.
DIHEDRAL_TRANSFORMS: tuple[str, ...] = (
    "original",
    "rotate90",
    "rotate180",
    "rotate270",
    "flipx",
    "flipy",
    "flipplus1",
    "flipminus1",
)

_PDQ_EXTRA_HINT = (
    "PDQ hashing needs the optional extra: pip install 'hashmatch-client[pdq]' "
    "(pdqhash, numpy, pillow)"
)


class UnreadableFile(OSError):
    """The file could not be read (permissions, vanished, not a regular file, I/O error).

    An OSError so that callers already handling I/O errors catch it. Built like OSError,
    ``(errno, strerror, filename)``, so it survives pickling back from a worker process;
    ``filename`` is the path and ``errno`` is None when no system call failed.
    """

    def __str__(self) -> str:
        return f"cannot read {self.filename}: {self.strerror}"


class PdqNotInstalled(ImportError):
    """PDQ was requested but the ``hashmatch-client[pdq]`` extra is not installed."""


@dataclass(frozen=True, slots=True)
class PdqHash:
    """One PDQ hash: 32 bytes in the reference's big-endian order (hex prints as the C++ tool)."""

    value: bytes
    quality: int
    transform: str = "original"

    def __post_init__(self) -> None:
        if len(self.value) != PDQ_BYTES:
            raise ValueError(f"PDQ hash must be {PDQ_BYTES} bytes, got {len(self.value)}")


@dataclass(frozen=True, slots=True)
class FileHashes:
    """Everything hashed from one file.

    ``pdq`` is empty when no PDQ is sent; ``pdq_skip_reason`` then says why (not an image, low
    quality, unreadable image, too large). Both are empty/None when PDQ was not requested.
    """

    md5: bytes
    sha1: bytes
    sha256: bytes
    size: int
    pdq: list[PdqHash] = field(default_factory=list)
    pdq_skip_reason: str | None = None


class _PdqBackend(NamedTuple):
    np: ModuleType
    pdqhash: Any  # untyped compiled extension
    Image: ModuleType


def _pdq_backend() -> _PdqBackend:
    # Imported on demand: the extra is optional and numpy/Pillow are slow to import.
    try:
        np = importlib.import_module("numpy")
        pdqhash = importlib.import_module("pdqhash")
        image = importlib.import_module("PIL.Image")
    except ImportError as exc:
        raise PdqNotInstalled(f"{_PDQ_EXTRA_HINT}; import failed: {exc}") from exc
    return _PdqBackend(np, pdqhash, image)


def pdq_available() -> bool:
    """True when the ``[pdq]`` extra is installed, so `hash_file` can compute PDQ hashes."""
    try:
        _pdq_backend()
    except PdqNotInstalled:
        return False
    return True


def _open_regular(path: str) -> io.BufferedReader:
    # O_NONBLOCK so a FIFO met while walking a tree cannot hang the open; anything that is not
    # a regular file (FIFO, device, socket) could block or never end, so it is refused.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UnreadableFile(None, "not a regular file", path)
        # Buffered: Pillow parses headers in many tiny reads; readinto() of a whole chunk
        # bypasses the buffer anyway, so the digest pass pays nothing for it.
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def hash_file(
    path: str | os.PathLike[str],
    *,
    pdq: bool = True,
    dihedral: bool = False,
    min_quality: int = 50,
    chunk_size: int = 1 << 20,
    full_decode: bool = False,
) -> FileHashes:
    """Hash one file: MD5, SHA-1, SHA-256 over its bytes and, for images, PDQ.

    The digests are streamed in one pass of ``chunk_size`` reads. The image is then decoded
    from the same open file (so digests and PDQ describe the same inode) and hashed with PDQ:
    the upright picture first (``transform`` "original"), then, when its EXIF orientation is
    not 1, the pixels as stored, named for the dihedral transform that turns the upright
    picture into them (orientation 6 stores it turned by "rotate90"). With ``dihedral`` all 8
    rotations and mirrors of the upright picture are returned instead (the stored pixels are
    one of them), so a rotated or flipped copy of a listed image still matches. Images below
    ``min_quality`` get no PDQ: a near-featureless hash matches too much. Large JPEGs are
    decoded at a reduced scale (see ``DRAFT_MIN_SIDE``) unless ``full_decode``.

    Raises UnreadableFile when the file cannot be read, and PdqNotInstalled when ``pdq`` is
    true and the ``[pdq]`` extra is missing. Files that are not decodable images never raise:
    they get their digests and a ``pdq_skip_reason``.
    """
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    backend = _pdq_backend() if pdq else None  # fail before any I/O when the extra is missing
    fspath = os.fspath(path)

    try:
        with _open_regular(fspath) as fh:
            md5, sha1, sha256, size = _digests(fh, chunk_size)
            if backend is None:
                return FileHashes(md5, sha1, sha256, size)
            fh.seek(0)
            hashes, reason = _pdq_of(
                fh, backend, dihedral=dihedral, min_quality=min_quality, full_decode=full_decode
            )
    except UnreadableFile:
        raise
    except OSError as exc:
        raise UnreadableFile(exc.errno, exc.strerror or str(exc), fspath) from exc
    return FileHashes(md5, sha1, sha256, size, hashes, reason)


def _digests(fh: io.BufferedReader, chunk_size: int) -> tuple[bytes, bytes, bytes, int]:
    # usedforsecurity=False: these identify content, and FIPS-mode OpenSSL refuses MD5 otherwise.
    md5 = hashlib.md5(usedforsecurity=False)
    sha1 = hashlib.sha1(usedforsecurity=False)
    sha256 = hashlib.sha256()
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    size = 0
    # One reused buffer: no per-chunk allocation, and hashlib drops the GIL on large updates.
    while n := fh.readinto(buf):
        chunk = view[:n]
        md5.update(chunk)
        sha1.update(chunk)
        sha256.update(chunk)
        size += n
    return md5.digest(), sha1.digest(), sha256.digest(), size


def _pdq_of(
    fh: io.BufferedReader, b: _PdqBackend, *, dihedral: bool, min_quality: int, full_decode: bool
) -> tuple[list[PdqHash], str | None]:
    try:
        img: PILImage.Image = b.Image.open(fh)
    except b.Image.UnidentifiedImageError:
        return [], "not an image"
    except Exception as exc:
        return [], _image_failure(exc, b)

    with img:
        try:
            if not full_decode:
                # Only JPEG (and MPO, a phone's JPEG) decoders honour a draft; other formats
                # ignore it. The size asked for is a floor on each side.
                img.draft(None, (DRAFT_MIN_SIDE, DRAFT_MIN_SIDE))
            # PDQ is defined on RGB luma: only the first frame of an animation is hashed, and
            # alpha is dropped, so transparent areas count as whatever colour they store.
            stored = img.convert("RGB")
            orientation = _orientation(img)
            show = _SHOW.get(orientation)
            upright = stored if show is None else stored.transpose(b.Image.Transpose[show])
            if dihedral:
                vectors, quality = b.pdqhash.compute_dihedral(b.np.asarray(upright))
                computed = [
                    (v, quality, name) for v, name in zip(vectors, DIHEDRAL_TRANSFORMS, strict=True)
                ]
            else:
                vector, quality = b.pdqhash.compute(b.np.asarray(upright))
                computed = [(vector, quality, DIHEDRAL_TRANSFORMS[0])]
                if upright is not stored:
                    vector, stored_quality = b.pdqhash.compute(b.np.asarray(stored))
                    computed.append((vector, stored_quality, _STORED_AS[orientation]))
        except Exception as exc:
            return [], _image_failure(exc, b)

    # pdqhash gives the 256 bits most significant first (its vector reverses the C++ word
    # layout), so packbits yields the reference byte order; checked against the reference
    # vectors (bridge original 6 bits away, the documented decoder difference).
    hashes = [
        PdqHash(b.np.packbits(v.astype(b.np.uint8)).tobytes(), int(q), name)
        for v, q, name in computed
        if int(q) >= min_quality
    ]
    if not hashes:
        return [], f"low PDQ quality {int(computed[0][1])} < {min_quality}"
    return hashes, None


# By EXIF orientation: the transpose that shows the stored pixels upright, and the dihedral
# transform (as DIHEDRAL_TRANSFORMS names it) that turned the upright picture into them. The
# transposes are their own inverses except the quarter turns, which swap.
_ORIENTATION_TAG = 0x0112
_SHOW = {
    2: "FLIP_LEFT_RIGHT",
    3: "ROTATE_180",
    4: "FLIP_TOP_BOTTOM",
    5: "TRANSPOSE",
    6: "ROTATE_270",
    7: "TRANSVERSE",
    8: "ROTATE_90",
}
_STORED_AS = {
    2: "flipy",
    3: "rotate180",
    4: "flipx",
    5: "flipplus1",
    6: "rotate90",
    7: "flipminus1",
    8: "rotate270",
}


def _orientation(img: PILImage.Image) -> int:
    try:
        return int(img.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:
        # A damaged EXIF block must not cost the file its PDQ hash: the pixels as stored are
        # hashed, as decoders that ignore orientation (the C++ reference among them) do.
        return 1


def _image_failure(exc: Exception, b: _PdqBackend) -> str:
    """Turn a decoding failure into a skip reason; re-raise failures to read the file itself."""
    if isinstance(exc, b.Image.DecompressionBombError | b.Image.DecompressionBombWarning):
        # The warning only arrives as an exception when the caller's filters make it one;
        # either way the pixel count is beyond what the caller lets Pillow decode.
        return f"image too large: {exc}"
    if isinstance(exc, OSError) and exc.errno is not None:
        # A system call failed (EIO, ...): that is the file being unreadable, not the image.
        # Pillow's own format complaints ("image file is truncated") carry no errno.
        raise exc
    # Plugins raise nearly anything on malformed data; the file is still reported, never fatal.
    return f"unreadable image: {type(exc).__name__}: {exc}"

"""Tests for hashmatch.client.hashing against Meta's PDQ test data (testdata/pdq, its README)."""

from __future__ import annotations

import csv
import errno
import hashlib
import os
import pickle
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from hashmatch.client.hashing import (
    DIHEDRAL_TRANSFORMS,
    FileHashes,
    PdqHash,
    PdqNotInstalled,
    UnreadableFile,
    hash_file,
)

TESTDATA = Path(__file__).resolve().parent / "data" / "pdq"

# Conformance rule of the PDQ reference: another decoder may differ by up to 10 bits.
CONFORMANCE_BITS = 10
# The default list threshold: what "matches" means to the service.
MATCH_BITS = 31

# The digests README.md gives for images/bridge-mods/aaa-orig.jpg.
ORIG_MD5 = "d35c785545392755e7e4164457657269"
ORIG_SHA1 = "ea45d7166b30f98aac6af52f952193ce3083cb4c"
ORIG_SHA256 = "b5b0799616df52d475a3968dc7e54f1d0724c912244ffa6175bc786375dd7298"

# The dihedral variant of an upright image that reproduces the pixels as stored under each
# EXIF orientation (the reference CSV hashes stored pixels: the C++ tool ignores orientation).
STORED_VARIANT_BY_ORIENTATION = {1: "original", 3: "rotate180", 6: "rotate90", 8: "rotate270"}


def distance(a: bytes, b: bytes) -> int:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


@pytest.fixture(scope="session")
def pdq_data() -> Path:
    # The data is part of the repository: its absence is a broken checkout, not a skip.
    assert (TESTDATA / "images").is_dir(), f"PDQ test data folder {TESTDATA} is missing"
    pytest.importorskip("pdqhash", reason="the hashmatch-client[pdq] extra is not installed")
    return TESTDATA


@pytest.fixture(scope="session")
def reference(pdq_data: Path) -> dict[str, tuple[bytes, int]]:
    with (pdq_data / "vectors" / "reference-image-hashes.csv").open(newline="") as fh:
        return {
            row["image"]: (bytes.fromhex(row["pdq_hex"]), int(row["quality"]))
            for row in csv.DictReader(fh)
        }


@pytest.fixture(scope="session")
def bridge(pdq_data: Path) -> bytes:
    """PDQ of the upright bridge original, the entry a list would hold."""
    result = hash_file(pdq_data / "images" / "bridge-mods" / "aaa-orig.jpg")
    assert [h.transform for h in result.pdq] == ["original"]
    return result.pdq[0].value


def exif_orientation(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as img:
        return int(img.getexif().get(0x0112, 1))


# --- PDQ against the C++ reference --------------------------------------------------------


def test_reference_hashes_within_conformance(
    pdq_data: Path, reference: dict[str, tuple[bytes, int]]
) -> None:
    checked = 0
    for image, (ref_hash, ref_quality) in reference.items():
        if ref_quality < 80 or exif_orientation(pdq_data / image) not in (0, 1):
            continue  # rotated EXIF photos: see test_exif_rotated_photos_match_stored_pixels
        result = hash_file(pdq_data / image, min_quality=0)
        assert result.pdq_skip_reason is None, image
        (pdq,) = result.pdq
        assert pdq.quality >= 80, image
        assert distance(pdq.value, ref_hash) <= CONFORMANCE_BITS, image
        checked += 1
    assert checked >= 25


def test_byte_order_is_the_reference_big_endian(
    pdq_data: Path, reference: dict[str, tuple[bytes, int]]
) -> None:
    # The bridge original is the README's worked example: 6 bits from the reference in
    # Python builds. A byte- or bit-reversed conversion lands ~128 bits away instead.
    ref_hash, _ = reference["images/bridge-mods/aaa-orig.jpg"]
    value = hash_file(pdq_data / "images" / "bridge-mods" / "aaa-orig.jpg").pdq[0].value
    assert len(value) == 32
    assert distance(value, ref_hash) <= CONFORMANCE_BITS
    words = [value[i : i + 2] for i in range(0, 32, 2)]
    wrong_orders = {
        "bytes reversed": value[::-1],
        "bits reversed": int(f"{int.from_bytes(value, 'big'):0256b}"[::-1], 2).to_bytes(32, "big"),
        "16-bit words reversed (C++ memory order)": b"".join(words[::-1]),
        "bytes swapped within words": b"".join(w[::-1] for w in words),
    }
    for label, wrong in wrong_orders.items():
        assert wrong != value, label
        assert distance(wrong, ref_hash) > MATCH_BITS, label


def test_bridge_edits_match_original(pdq_data: Path, bridge: bytes) -> None:
    edits = sorted((pdq_data / "images" / "bridge-mods").glob("*.jpg"))
    assert len(edits) == 12
    for path in edits:
        (pdq,) = hash_file(path).pdq
        assert distance(pdq.value, bridge) <= MATCH_BITS, path.name


# --- dihedral variants ---------------------------------------------------------------------

DIHEDRAL_FILES = {
    "bridge-1-original.jpg": "original",
    "bridge-2-rotate-90.jpg": "rotate90",
    "bridge-3-rotate-180.jpg": "rotate180",
    "bridge-4-rotate-270.jpg": "rotate270",
    "bridge-5-flipx.jpg": "flipx",
    "bridge-6-flipy.jpg": "flipy",
    "bridge-7-flip-plus-1.jpg": "flipplus1",
    "bridge-8-flip-minus-1.jpg": "flipminus1",
}


def test_dihedral_on_every_transform_matches(pdq_data: Path, bridge: bytes) -> None:
    folder = pdq_data / "images" / "dihedral"
    assert sorted(p.name for p in folder.glob("*.jpg")) == sorted(DIHEDRAL_FILES)
    for name in DIHEDRAL_FILES:
        result = hash_file(folder / name, dihedral=True)
        assert [h.transform for h in result.pdq] == list(DIHEDRAL_TRANSFORMS)
        assert len({h.quality for h in result.pdq}) == 1
        best = min(distance(h.value, bridge) for h in result.pdq)
        assert best <= MATCH_BITS, name


def test_dihedral_off_rotated_copies_do_not_match(pdq_data: Path, bridge: bytes) -> None:
    folder = pdq_data / "images" / "dihedral"
    for name, transform in DIHEDRAL_FILES.items():
        (pdq,) = hash_file(folder / name).pdq
        if transform == "original":
            assert distance(pdq.value, bridge) <= MATCH_BITS
        else:
            assert distance(pdq.value, bridge) > MATCH_BITS, name


def test_dihedral_variants_are_named_for_their_transform(pdq_data: Path) -> None:
    # Variant "rotate90" of the original must be the hash of the original rotated 90 degrees,
    # i.e. of bridge-2-rotate-90.jpg, and so on: names are what reports and lists show.
    folder = pdq_data / "images" / "dihedral"
    variants = {
        h.transform: h.value for h in hash_file(folder / "bridge-1-original.jpg", dihedral=True).pdq
    }
    for name, transform in DIHEDRAL_FILES.items():
        (pdq,) = hash_file(folder / name).pdq
        nearest = min(variants, key=lambda t: distance(variants[t], pdq.value))
        assert nearest == transform, name
        assert distance(variants[transform], pdq.value) <= MATCH_BITS, name


# --- EXIF orientation ----------------------------------------------------------------------


def test_exif_rotated_photos_match_stored_pixels(
    pdq_data: Path, reference: dict[str, tuple[bytes, int]]
) -> None:
    # The exif-rotn photos are different shots of one desk (110+ bits apart upright), so
    # they cannot be compared with each other. What the data does support: the reference
    # hashed the stored pixels, ignoring the tag; after orientation our upright hash must be
    # far from that, while the dihedral variant undoing the orientation lands on it.
    folder = pdq_data / "images" / "exif-rotn"
    for path in sorted(folder.glob("exif-rotn-*.jpg")):
        orientation = exif_orientation(path)
        stored_variant = STORED_VARIANT_BY_ORIENTATION[orientation]
        ref_hash, _ = reference[f"images/exif-rotn/{path.name}"]
        variants = {h.transform: h.value for h in hash_file(path, dihedral=True).pdq}
        nearest = min(variants, key=lambda t: distance(variants[t], ref_hash))
        assert nearest == stored_variant, path.name
        assert distance(variants[stored_variant], ref_hash) <= MATCH_BITS, path.name
        if orientation != 1:
            assert distance(variants["original"], ref_hash) > MATCH_BITS, path.name


@pytest.mark.parametrize("orientation", range(2, 9))
def test_exif_orientation_hashes_like_upright(
    pdq_data: Path, tmp_path: Path, orientation: int
) -> None:
    from PIL import Image, ImageOps

    # Store an upright photo the way a phone does: pixels as the sensor saw them plus the tag
    # that tells viewers how to turn them. Transposes listed are what writing needs, the
    # inverse of what displaying does.
    transpose = Image.Transpose
    store = {
        2: transpose.FLIP_LEFT_RIGHT,
        3: transpose.ROTATE_180,
        4: transpose.FLIP_TOP_BOTTOM,
        5: transpose.TRANSPOSE,
        6: transpose.ROTATE_90,
        7: transpose.TRANSVERSE,
        8: transpose.ROTATE_270,
    }
    with Image.open(pdq_data / "images" / "exif-rotn" / "exif-rotn-1.jpg") as img:
        upright = ImageOps.exif_transpose(img).convert("RGB").resize((1008, 756))
    upright.save(tmp_path / "upright.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = orientation
    upright.transpose(store[orientation]).save(tmp_path / "tagged.jpg", quality=95, exif=exif)

    expected = hash_file(tmp_path / "upright.jpg").pdq[0].value
    got = hash_file(tmp_path / "tagged.jpg").pdq[0].value
    assert distance(got, expected) <= CONFORMANCE_BITS


# --- quality -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "quality"),
    [("labelme-subset/q0003.jpg", 3), ("labelme-subset/q0004.jpg", 4), ("misc/small.jpg", 0)],
)
def test_low_quality_is_reported_not_hashed(pdq_data: Path, image: str, quality: int) -> None:
    result = hash_file(pdq_data / "images" / image)
    assert result.pdq == []
    assert result.pdq_skip_reason == f"low PDQ quality {quality} < 50"
    assert len(result.sha256) == 32  # still matchable by its digests

    assert hash_file(pdq_data / "images" / image, min_quality=0).pdq[0].quality == quality


def test_min_quality_applies_to_dihedral(pdq_data: Path) -> None:
    result = hash_file(pdq_data / "images" / "labelme-subset" / "q0004.jpg", dihedral=True)
    assert result.pdq == []
    assert result.pdq_skip_reason == "low PDQ quality 4 < 50"


# --- digests -------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 4093, 1 << 20])
def test_digests_of_original_match_readme(pdq_data: Path, chunk_size: int) -> None:
    path = pdq_data / "images" / "bridge-mods" / "aaa-orig.jpg"
    result = hash_file(path, pdq=chunk_size == 1 << 20, chunk_size=chunk_size)
    assert result.md5.hex() == ORIG_MD5
    assert result.sha1.hex() == ORIG_SHA1
    assert result.sha256.hex() == ORIG_SHA256
    assert result.size == path.stat().st_size


def test_non_image_gets_digests_and_reason(tmp_path: Path) -> None:
    pytest.importorskip("pdqhash", reason="the hashmatch-client[pdq] extra is not installed")
    data = b"not a picture\n" * 100_000
    path = tmp_path / "notes.txt"
    path.write_bytes(data)
    result = hash_file(path, dihedral=True, chunk_size=65536)
    assert result == FileHashes(
        md5=hashlib.md5(data).digest(),
        sha1=hashlib.sha1(data).digest(),
        sha256=hashlib.sha256(data).digest(),
        size=len(data),
        pdq=[],
        pdq_skip_reason="not an image",
    )


def test_empty_file(tmp_path: Path) -> None:
    pytest.importorskip("pdqhash", reason="the hashmatch-client[pdq] extra is not installed")
    path = tmp_path / "empty"
    path.write_bytes(b"")
    result = hash_file(path)
    assert result.size == 0
    assert result.sha256 == hashlib.sha256(b"").digest()
    assert result.pdq_skip_reason == "not an image"


def test_digests_only_needs_no_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"abc")
    for name in ("pdqhash", "numpy", "PIL.Image", "PIL.ImageOps"):
        monkeypatch.setitem(sys.modules, name, None)  # makes "import name" fail

    result = hash_file(path, pdq=False)
    assert result.sha1 == hashlib.sha1(b"abc").digest()
    assert (result.pdq, result.pdq_skip_reason) == ([], None)

    with pytest.raises(PdqNotInstalled, match=r"hashmatch-client\[pdq\]"):
        hash_file(path)


# --- failures ------------------------------------------------------------------------------


def test_missing_file_raises_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "vanished.jpg"
    with pytest.raises(UnreadableFile) as info:
        hash_file(path, pdq=False)
    assert info.value.filename == str(path)
    assert isinstance(info.value, OSError)
    assert str(path) in str(info.value)


def test_directory_raises_unreadable(tmp_path: Path) -> None:
    with pytest.raises(UnreadableFile):
        hash_file(tmp_path, pdq=False)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(UnreadableFile, match="not a regular file"):
        hash_file(fifo, pdq=False)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads files regardless of mode"
)
def test_permission_denied_raises_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "secret.bin"
    path.write_bytes(b"x")
    path.chmod(0)
    try:
        with pytest.raises(UnreadableFile) as info:
            hash_file(path, pdq=False)
        assert info.value.filename == str(path)
    finally:
        path.chmod(0o600)


def test_permission_error_maps_to_unreadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Runs as root too, where chmod 0 does not stop reads: fail the open() itself.
    path = tmp_path / "locked.bin"
    path.write_bytes(b"x")
    real_open = os.open

    def deny(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if os.fspath(file) == str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(UnreadableFile) as info:
        hash_file(path, pdq=False)
    assert (info.value.errno, info.value.filename) == (errno.EACCES, str(path))
    assert str(info.value) == f"cannot read {path}: Permission denied"
    assert isinstance(info.value.__cause__, PermissionError)


def test_unreadable_survives_pickling(tmp_path: Path) -> None:
    # The scanner hashes in worker processes, so the exception travels back pickled.
    with pytest.raises(UnreadableFile) as info:
        hash_file(tmp_path / "nope", pdq=False)
    copy = pickle.loads(pickle.dumps(info.value))
    assert type(copy) is UnreadableFile
    assert (copy.errno, copy.filename, str(copy)) == (
        info.value.errno,
        info.value.filename,
        str(info.value),
    )


def test_truncated_image_is_skipped(pdq_data: Path, tmp_path: Path) -> None:
    data = (pdq_data / "images" / "bridge-mods" / "aaa-orig.jpg").read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 3])
    result = hash_file(path)
    assert result.pdq == []
    assert result.pdq_skip_reason is not None
    assert result.pdq_skip_reason.startswith("unreadable image: ")
    assert result.size == len(data) // 3


def test_decompression_bomb_is_skipped(pdq_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    # aaa-orig.jpg has 1.6 Mpx: beyond twice this limit, which is where Pillow refuses.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)
    result = hash_file(pdq_data / "images" / "bridge-mods" / "aaa-orig.jpg")
    assert result.pdq == []
    assert result.pdq_skip_reason is not None
    assert result.pdq_skip_reason.startswith("image too large: ")
    assert result.sha256.hex() == ORIG_SHA256


def test_bomb_warning_hashes_unless_warnings_are_errors(
    pdq_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    path = pdq_data / "images" / "bridge-mods" / "aaa-orig.jpg"  # 1.6 Mpx, warns above 1 Mpx
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        assert len(hash_file(path).pdq) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        result = hash_file(path)
    assert result.pdq == []
    assert result.pdq_skip_reason is not None
    assert result.pdq_skip_reason.startswith("image too large: ")


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_other_pixel_modes_hash_like_rgb(
    pdq_data: Path, bridge: bytes, tmp_path: Path, mode: str
) -> None:
    from PIL import Image

    with Image.open(pdq_data / "images" / "bridge-mods" / "aaa-orig.jpg") as img:
        converted = img.convert(mode)
    path = tmp_path / ("bridge.tiff" if mode == "CMYK" else "bridge.png")
    converted.save(path)
    (pdq,) = hash_file(path).pdq
    assert distance(pdq.value, bridge) <= MATCH_BITS


def test_pdq_hash_rejects_wrong_length() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        PdqHash(b"\x00" * 31, 100, "original")

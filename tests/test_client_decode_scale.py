"""JPEGs decoded at a reduced scale (hashing.DRAFT_MIN_SIDE) hash within a few bits of the
full-size decode. Distances only: the speed is in benchmarks/client/bench_decode_scale.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from hashmatch.client.hashing import DRAFT_MIN_SIDE, hash_file

pytest.importorskip("pdqhash", reason="the hashmatch-client[pdq] extra is not installed")

# The bound the README states (measured on the test images: at most 2 bits, on the phone
# photos; on generated phone-size images: at most 6).
DRAFT_BITS = 6


def distance(a: bytes, b: bytes) -> int:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def sizes(path: Path) -> tuple[tuple[int, int], tuple[int, int]]:
    """The image's size as stored, and as decoded for hashing."""
    from PIL import Image

    with Image.open(path) as img:
        stored = img.size
        img.draft(None, (DRAFT_MIN_SIDE, DRAFT_MIN_SIDE))
        return stored, img.size


def test_reduced_decode_agrees_with_full_decode(shared_pdq: Path) -> None:
    reduced = 0
    for path in sorted((shared_pdq / "images").rglob("*.jpg")):
        fast = hash_file(path, pdq=True, min_quality=0)
        full = hash_file(path, pdq=True, min_quality=0, full_decode=True)
        assert [h.transform for h in fast.pdq] == [h.transform for h in full.pdq], path.name
        for ours, theirs in zip(fast.pdq, full.pdq, strict=True):
            assert distance(ours.value, theirs.value) <= DRAFT_BITS, path.name
        stored, decoded = sizes(path)
        assert min(decoded) >= min(DRAFT_MIN_SIDE, *stored), path.name
        reduced += decoded != stored
    assert reduced == 4, "the four 12-megapixel photos are decoded at a reduced scale"


def test_dihedral_hashes_the_reduced_decode_too(shared_pdq: Path) -> None:
    path = shared_pdq / "images" / "exif-rotn" / "exif-rotn-6.jpg"
    fast = hash_file(path, dihedral=True)
    full = hash_file(path, dihedral=True, full_decode=True)
    for ours, theirs in zip(fast.pdq, full.pdq, strict=True):
        assert ours.transform == theirs.transform
        assert distance(ours.value, theirs.value) <= DRAFT_BITS


def test_other_formats_are_decoded_whole(shared_pdq: Path, tmp_path: Path) -> None:
    from PIL import Image

    # PNG has no reduced decode: the same pixels, the same hash.
    with Image.open(shared_pdq / "images" / "exif-rotn" / "exif-rotn-1.jpg") as img:
        img.convert("RGB").resize((2016, 1512)).save(tmp_path / "photo.png")
    fast = hash_file(tmp_path / "photo.png")
    full = hash_file(tmp_path / "photo.png", full_decode=True)
    assert [h.value for h in fast.pdq] == [h.value for h in full.pdq]

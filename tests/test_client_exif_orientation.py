"""Photos with an EXIF orientation match lists built either way: from the pixels as stored (what
Meta's tools hash: the reference CSV of tests/data/pdq) or from the upright picture (what this
client sent before). A real server, `match_file`, the `scan` pipeline and the CLI."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from hashmatch.client import PDQ, Change, Verdict, make_hash
from hashmatch.client.cli import main
from hashmatch.client.hashing import hash_file
from hashmatch.client.scan import ScanOptions, scan
from tests.conftest import Running

pytest.importorskip("pdqhash", reason="the hashmatch-client[pdq] extra is not installed")

PHOTOS = ("exif-rotn-1.jpg", "exif-rotn-3.jpg", "exif-rotn-6.jpg", "exif-rotn-8.jpg")
ORIENTATION = {
    "exif-rotn-1.jpg": 1,
    "exif-rotn-3.jpg": 3,
    "exif-rotn-6.jpg": 6,
    "exif-rotn-8.jpg": 8,
}
# The default list threshold.
MATCH_BITS = 31


def distance(a: bytes, b: bytes) -> int:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


@pytest.fixture
def photos(shared_pdq: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "uploads"
    folder.mkdir()
    for name in PHOTOS:
        shutil.copy(shared_pdq / "images" / "exif-rotn" / name, folder / name)
    return folder


@pytest.fixture
def reference(shared_pdq: Path) -> dict[str, bytes]:
    """The C++ reference's PDQ of each photo (pixels as stored), by file name."""
    with (shared_pdq / "vectors" / "reference-image-hashes.csv").open(newline="") as fh:
        rows = csv.DictReader(fh)
        by_name = {Path(r["image"]).name: bytes.fromhex(r["pdq_hex"]) for r in rows}
    return {name: by_name[name] for name in PHOTOS}


def pdq_list(running: Running, name: str, values: dict[str, bytes]) -> None:
    """A list holding one PDQ per photo, the photo's file name as its reference ID."""
    with running.lists() as lists:
        lists.create_list(name)
        lists.apply_changes(
            name, "b1", [Change(make_hash(PDQ, v, 100), ref) for ref, v in values.items()]
        )


def upright_pdq(path: Path) -> bytes:
    """The PDQ of the photo as a viewer shows it, decoded at full size: what lists built with
    earlier versions of this client hold."""
    import numpy as np
    import pdqhash
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        pixels = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    vector, _ = pdqhash.compute(pixels)
    return bytes(np.packbits(vector.astype(np.uint8)))


def test_the_photos_are_what_the_test_needs(photos: Path) -> None:
    from PIL import Image

    for name in PHOTOS:
        with Image.open(photos / name) as img:
            assert int(img.getexif().get(0x0112, 1)) == ORIENTATION[name], name


def test_rotated_photo_sends_as_stored_and_upright_pdq(
    photos: Path, reference: dict[str, bytes]
) -> None:
    for name in PHOTOS:
        hashes = hash_file(photos / name)
        values = [h.value for h in hashes.pdq]
        stored = min(values, key=lambda v: distance(v, reference[name]))
        assert distance(stored, reference[name]) <= MATCH_BITS, name
        if ORIENTATION[name] == 1:
            assert len(values) == 1, name
            continue
        assert len(values) == 2, name
        (upright,) = [v for v in values if v != stored]
        assert distance(upright, reference[name]) > MATCH_BITS, name
        assert distance(upright, upright_pdq(photos / name)) <= MATCH_BITS, name


def test_match_file_matches_a_list_built_from_stored_pixels(
    running: Running, photos: Path, reference: dict[str, bytes]
) -> None:
    pdq_list(running, "meta-built", reference)
    with running.matcher() as matcher:
        for name in PHOTOS:
            result = matcher.match_file(photos / name)
            assert result.verdict is Verdict.MATCH, name
            assert [r.reference_id for r in result.references] == [name]


def test_match_file_matches_a_list_built_upright(running: Running, photos: Path) -> None:
    pdq_list(running, "upright-built", {name: upright_pdq(photos / name) for name in PHOTOS})
    with running.matcher() as matcher:
        for name in PHOTOS:
            result = matcher.match_file(photos / name)
            assert [r.reference_id for r in result.references] == [name], name


def test_scan_matches_every_photo(
    running: Running, photos: Path, reference: dict[str, bytes]
) -> None:
    pdq_list(running, "meta-built", reference)
    with running.matcher() as matcher:
        results = []
        summary = scan([photos], matcher, ScanOptions(workers=1), on_result=results.append)
    assert summary.matched == len(PHOTOS)
    for r in results:
        assert [ref.reference_id for ref in r.references] == [Path(r.path).name]


def test_scan_command_matches_every_photo(
    running: Running,
    photos: Path,
    reference: dict[str, bytes],
    capsys: pytest.CaptureFixture[str],
) -> None:
    pdq_list(running, "meta-built", reference)
    argv = ["--server", running.address, "--token", running.tokens["platform"]]
    code = main([*argv, "scan", "--workers", "2", str(photos)])
    out = capsys.readouterr().out
    assert code == 1
    matched = sorted(line.split("\t") for line in out.splitlines())
    assert matched == [["MATCH", str(photos / n), f"meta-built:{n}"] for n in PHOTOS]


def test_dihedral_item_stays_within_the_hash_limit(photos: Path) -> None:
    # The 8 variants of the upright picture hold the as-stored one: no ninth hash.
    for name in PHOTOS:
        assert len(hash_file(photos / name, dihedral=True).pdq) == 8

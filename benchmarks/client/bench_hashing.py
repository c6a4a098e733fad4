"""Throughput of hashmatch.client.hashing.hash_file: files/s and MB/s, digests vs PDQ vs dihedral.

Run (figures are printed with -s and stored in the JSON as extra_info):

    PYTHONPATH=clients .venv/bin/python -m pytest benchmarks/client/bench_hashing.py -s \
        --benchmark-json=/tmp/bench_hashing.json

Corpus: every image in the PDQ test data (../shared/testdata/pdq/images, or
HASHMATCH_TESTDATA_PDQ), read from a warm page cache, one process, one thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hashmatch.client.hashing import hash_file

TESTDATA = Path(
    os.environ.get(
        "HASHMATCH_TESTDATA_PDQ",
        Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "pdq",
    )
)
MB = 1_000_000


@pytest.fixture(scope="module")
def corpus() -> list[Path]:
    files = sorted(p for p in (TESTDATA / "images").rglob("*") if p.is_file())
    if not files:
        pytest.skip(f"PDQ test data folder {TESTDATA} is absent (set HASHMATCH_TESTDATA_PDQ)")
    pytest.importorskip("pdqhash", reason="the hashmatch-client[pdq] extra is not installed")
    for path in files:  # warm the page cache so the first round is not a disk benchmark
        path.read_bytes()
    return files


def _run(benchmark: Any, files: list[Path], label: str, hash_one: Callable[[Path], object]) -> None:
    def hash_all() -> None:
        for path in files:
            hash_one(path)

    benchmark.pedantic(hash_all, rounds=3, iterations=1, warmup_rounds=1)
    seconds = benchmark.stats.stats.mean
    total = sum(p.stat().st_size for p in files)
    figures = {
        "files": len(files),
        "bytes": total,
        "files_per_s": round(len(files) / seconds, 1),
        "mb_per_s": round(total / MB / seconds, 1),
    }
    benchmark.extra_info.update(figures)
    print(
        f"\n{label:<28} {figures['files_per_s']:>8} files/s {figures['mb_per_s']:>8} MB/s"
        f"  ({len(files)} files, {total / MB:.1f} MB, {seconds:.3f} s/round)"
    )


def test_digests_only(benchmark: Any, corpus: list[Path]) -> None:
    _run(benchmark, corpus, "digests only", lambda p: hash_file(p, pdq=False))


def test_digests_and_pdq(benchmark: Any, corpus: list[Path]) -> None:
    _run(benchmark, corpus, "digests + PDQ", lambda p: hash_file(p))


def test_digests_and_dihedral_pdq(benchmark: Any, corpus: list[Path]) -> None:
    _run(benchmark, corpus, "digests + PDQ x8 dihedral", lambda p: hash_file(p, dihedral=True))


def test_pdq_small_images_only(benchmark: Any, corpus: list[Path]) -> None:
    # Web-sized uploads (under 2 Mpx), the common case at upload time; the 12 Mpx phone
    # photos in exif-rotn dominate the whole-corpus figure.
    from PIL import Image

    def pixels(path: Path) -> int:
        with Image.open(path) as img:
            return img.width * img.height

    small = [p for p in corpus if pixels(p) <= 2_000_000]
    _run(benchmark, small, "digests + PDQ, <=2 Mpx", lambda p: hash_file(p))


def test_digests_large_file(benchmark: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    # Pure streaming rate of MD5+SHA-1+SHA-256 over one large non-image file (video-sized).
    path = tmp_path_factory.mktemp("bench") / "large.bin"
    path.write_bytes(os.urandom(64 * 1024 * 1024))
    _run(benchmark, [path], "digests, one 64 MiB file", lambda p: hash_file(p, pdq=False))

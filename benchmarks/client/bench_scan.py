"""Scan throughput: files/s and MB/s of `hashmatch.client.scan`, and where the time goes.

Run (figures are printed with -s and stored in the JSON as extra_info):

    .venv/bin/python -m pytest benchmarks/client/bench_scan.py -s \\
        --benchmark-json=/tmp/bench_scan.json

Each corpus is scanned end to end (walk, hashing in one worker process per CPU, MatchBatch
calls of 1,000 items) against an in-process server holding the demo list on loopback. The
hashing and matching shares come from running the two halves alone: hashing every file
through the same process pool, then matching the precomputed items in the same batches.

Corpora: the PDQ test images (../shared/testdata/pdq/images, or HASHMATCH_TESTDATA_PDQ; 35
JPEGs from 8 KB web images to 12 Mpx phone photos), the same with dihedral PDQ, and 5,000
small non-image files (4 KiB each: the per-file overhead, digests only).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hashmatch.client import Connection, MatchClient
from hashmatch.client.match_client import HashedFile, batch_items, chunks
from hashmatch.client.scan import ScanOptions, _hash_task, _pool, scan, walk
from hashmatch.server.app import build
from hashmatch.server.settings import Settings

TESTDATA = Path(
    os.environ.get(
        "HASHMATCH_TESTDATA_PDQ",
        Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "pdq",
    )
)
MB = 1_000_000
WORKERS = os.cpu_count() or 1


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MatchClient]:
    data = tmp_path_factory.mktemp("server")
    service = build(Settings(data_dir=data, listen="127.0.0.1:0", demo=True))
    token = (data / "demo-platform.token").read_text().strip()
    with MatchClient(Connection(server=f"127.0.0.1:{service.port}", token=token)) as c:
        yield c
    service.stop(grace=0)


@pytest.fixture(scope="module")
def images() -> Path:
    folder = TESTDATA / "images"
    if not folder.is_dir():
        pytest.skip(f"PDQ test data folder {TESTDATA} is absent (set HASHMATCH_TESTDATA_PDQ)")
    pytest.importorskip("pdqhash", reason="the hashmatch-client[pdq] extra is not installed")
    return folder


@pytest.fixture(scope="module")
def small_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("small")
    for i in range(5000):
        sub = folder / f"{i // 500:02d}"
        sub.mkdir(exist_ok=True)
        (sub / f"{i:05d}.bin").write_bytes(os.urandom(4096))
    return folder


def _halves(folder: Path, client: MatchClient, options: ScanOptions) -> tuple[float, float]:
    """Wall seconds of hashing alone (same pool) and of matching alone (same batches)."""
    found = [f.path for f in walk([folder])]
    pdq = options.pdq is not False
    started = time.perf_counter()
    executor = _pool(WORKERS)
    try:
        hashed: list[HashedFile] = [
            h
            for h, _ in executor.map(
                _hash_task,
                found,
                [pdq] * len(found),
                [options.dihedral] * len(found),
                [options.min_quality] * len(found),
                chunksize=1,
            )
        ]
    finally:
        executor.shutdown()
    hashing = time.perf_counter() - started
    started = time.perf_counter()
    for chunk in chunks(hashed, options.batch_size):
        client.match_batch(batch_items(chunk))
    return hashing, time.perf_counter() - started


def _run(benchmark: Any, label: str, folder: Path, client: MatchClient, **kw: Any) -> None:
    options = ScanOptions(workers=WORKERS, **kw)
    found = list(walk([folder]))
    total = sum(f.size for f in found)
    for f in found:  # a warm page cache: this measures hashing, not the disk
        Path(f.path).read_bytes()
    summaries = []

    def run() -> None:
        summaries.append(scan([folder], client, options, progress=False))

    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    seconds = benchmark.stats.stats.mean
    hashing, matching = _halves(folder, client, options)
    figures = {
        "files": len(found),
        "bytes": total,
        "workers": WORKERS,
        "files_per_s": round(len(found) / seconds, 1),
        "mb_per_s": round(total / MB / seconds, 2),
        "hash_only_s": round(hashing, 3),
        "match_only_s": round(matching, 4),
        "hash_share": round(hashing / (hashing + matching), 4),
        "match_share": round(matching / (hashing + matching), 4),
        "matched": summaries[-1].matched,
    }
    benchmark.extra_info.update(figures)
    print(
        f"\n{label:<34} {figures['files_per_s']:>8} files/s {figures['mb_per_s']:>7} MB/s"
        f"  ({len(found)} files, {total / MB:.1f} MB, {seconds:.3f} s/scan, {WORKERS} workers)"
        f"\n{'':<34} hashing alone {hashing:.3f} s, matching alone {matching:.4f} s:"
        f" hashing {figures['hash_share']:.1%} / matching {figures['match_share']:.1%}"
    )


def test_scan_images(benchmark: Any, images: Path, client: MatchClient) -> None:
    _run(benchmark, "scan test images (PDQ)", images, client)


def test_scan_images_dihedral(benchmark: Any, images: Path, client: MatchClient) -> None:
    _run(benchmark, "scan test images (PDQ x8 dihedral)", images, client, dihedral=True)


def test_scan_small_files(benchmark: Any, small_files: Path, client: MatchClient) -> None:
    _run(benchmark, "scan 5,000 small non-images", small_files, client)

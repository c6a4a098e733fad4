"""Reduced-scale JPEG decoding for PDQ (hashing.DRAFT_MIN_SIDE): how far the hash moves from
the full-size decode at each scale, and what the chosen scale buys for phone-size photos.

Run (tables are printed with -s; figures are also stored in the JSON as extra_info):

    nice -n 10 .venv/bin/python -m pytest benchmarks/client/bench_decode_scale.py -s \\
        --benchmark-json=/tmp/bench_decode_scale.json

Corpora, all read from a warm page cache, one process, one thread:

- the test images (tests/data/pdq/images: web images, 1.6 Mpx photos, four 12 Mpx phone
  photos);
- generated phone-size photos: every test image of PDQ quality >= 50 and at least 100 px,
  upscaled (bicubic) to 4000x3000 or 3000x2250 in turn (portrait kept), with camera-like
  noise (Gaussian, sigma 3 per channel, seeded) and saved as JPEG quality 88, 4:2:0, as a
  phone does. Upscaled small images are smoother than real photos: the hardest case.

`test_distance_by_scale` prints, for the decoded shorter side in bands and for each scale
(1/2, 1/4, 1/8) and for the rule `hash_file` applies, the count, median, 95th percentile and
maximum of the Hamming distance to the full-size decode. The throughput tests hash the phone
corpus (the four real photos and 8 generated ones) with `full_decode=True` (as before) and
with the default reduced decode.
"""

from __future__ import annotations

import io
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hashmatch.client.hashing import DRAFT_MIN_SIDE, hash_file

IMAGES = Path(__file__).resolve().parents[2] / "tests" / "data" / "pdq" / "images"
MB = 1_000_000
SCALES = (2, 4, 8)
SIZES = ((4000, 3000), (3000, 2250))


def _pdq(data: bytes, scale: int) -> tuple[bytes, tuple[int, int]]:
    import numpy as np
    import pdqhash
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        if scale > 1:
            img.draft(None, (img.width // scale, img.height // scale))
        size = img.size
        pixels = np.asarray(img.convert("RGB"))
    vector, _ = pdqhash.compute(pixels)
    return bytes(np.packbits(vector.astype(np.uint8))), size


def _distance(a: bytes, b: bytes) -> int:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def _band(side: int) -> str:
    for low, high in ((0, 255), (256, 511), (512, 1023)):
        if side <= high:
            return f"{low}-{high} px"
    return ">=1024 px"


@pytest.fixture(scope="module")
def test_images() -> list[Path]:
    pytest.importorskip("pdqhash", reason="the hashmatch-client[pdq] extra is not installed")
    return sorted(IMAGES.rglob("*.jpg"))


@pytest.fixture(scope="module")
def generated(test_images: list[Path], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(2026)
    out_dir = tmp_path_factory.mktemp("phone-size")
    out: list[Path] = []
    for path in test_images:
        if "exif-rotn" in path.parts:
            continue  # already phone photos: measured as they are
        hashed = hash_file(path, min_quality=0)
        with Image.open(path) as img:
            if not hashed.pdq or hashed.pdq[0].quality < 50 or min(img.size) < 100:
                continue
            rgb = img.convert("RGB")
        width, height = SIZES[len(out) % 2]
        if rgb.height > rgb.width:
            width, height = height, width
        big = np.asarray(rgb.resize((width, height), Image.Resampling.BICUBIC), np.float32)
        big += rng.normal(0.0, 3.0, big.shape).astype(np.float32)
        name = out_dir / f"{path.parent.name}-{path.stem}.jpg"
        Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(name, quality=88)
        out.append(name)
    return out


def _summary(values: list[int]) -> str:
    values = sorted(values)
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    return (
        f"n={len(values):>3}  median {statistics.median(values):>4}  p95 {p95:>3}  "
        f"max {values[-1]:>3}"
    )


def test_distance_by_scale(benchmark: Any, test_images: list[Path], generated: list[Path]) -> None:
    by_band: dict[tuple[str, str], list[int]] = defaultdict(list)
    by_scale: dict[tuple[str, int], list[int]] = defaultdict(list)
    chosen: dict[str, list[int]] = defaultdict(list)

    def measure() -> None:
        for corpus, files in (("test images", test_images), ("generated", generated)):
            for path in files:
                data = path.read_bytes()
                full, (width, height) = _pdq(data, 1)
                # The scale hash_file picks: the largest keeping the shorter side >= the floor.
                rule = max(
                    [s for s in SCALES if min(width, height) // s >= DRAFT_MIN_SIDE], default=1
                )
                chosen[corpus].append(_distance(_pdq(data, rule)[0], full) if rule > 1 else 0)
                for scale in SCALES:
                    value, size = _pdq(data, scale)
                    d = _distance(value, full)
                    by_band[(corpus, _band(min(size)))].append(d)
                    by_scale[(corpus, scale)].append(d)

    benchmark.pedantic(measure, rounds=1, iterations=1)
    print("\nHamming distance, reduced vs full-size decode")
    for (corpus, scale), values in sorted(by_scale.items()):
        print(f"  {corpus:<12} scale 1/{scale}             {_summary(values)}")
    for (corpus, band), values in sorted(by_band.items()):
        print(f"  {corpus:<12} decoded side {band:<10} {_summary(values)}")
    for corpus, values in sorted(chosen.items()):
        print(f"  {corpus:<12} hash_file's scale      {_summary(values)}")
        benchmark.extra_info[f"{corpus} chosen max"] = max(values)
    benchmark.extra_info["by_band"] = {f"{c} {b}": sorted(v) for (c, b), v in by_band.items()}


def _throughput(
    benchmark: Any, files: list[Path], label: str, hash_one: Callable[[Path], object]
) -> None:
    for path in files:  # warm the page cache: this is not a disk benchmark
        path.read_bytes()

    cpu: list[float] = []

    def hash_all() -> None:
        started = time.process_time()
        for path in files:
            hash_one(path)
        cpu.append(time.process_time() - started)

    benchmark.pedantic(hash_all, rounds=2, iterations=1, warmup_rounds=0)
    seconds = benchmark.stats.stats.mean
    total = sum(p.stat().st_size for p in files)
    figures = {
        "files": len(files),
        "bytes": total,
        "files_per_s": round(len(files) / seconds, 2),
        "mb_per_s": round(total / MB / seconds, 2),
        "ms_per_file": round(1000 * seconds / len(files)),
        # CPU time is what a loaded machine (other processes on the cores) distorts least.
        "cpu_ms_per_file": round(1000 * statistics.mean(cpu) / len(files)),
    }
    benchmark.extra_info.update(figures)
    print(
        f"\n{label:<34} {figures['files_per_s']:>6} files/s {figures['mb_per_s']:>6} MB/s "
        f"{figures['ms_per_file']:>5} ms/file, CPU {figures['cpu_ms_per_file']:>5} ms/file "
        f"({len(files)} files, {total / MB:.1f} MB)"
    )


@pytest.fixture(scope="module")
def phone_photos(test_images: list[Path], generated: list[Path]) -> list[Path]:
    real = [p for p in test_images if "exif-rotn" in p.parts]
    return real + generated[:8]


def test_phone_photos_full_decode(benchmark: Any, phone_photos: list[Path]) -> None:
    _throughput(
        benchmark,
        phone_photos,
        "digests + PDQ, full-size decode",
        lambda p: hash_file(p, full_decode=True),
    )


def test_phone_photos_reduced_decode(benchmark: Any, phone_photos: list[Path]) -> None:
    _throughput(benchmark, phone_photos, "digests + PDQ, reduced decode", lambda p: hash_file(p))

"""Throughput of hashmatch.client.video.hash_video: seconds of video hashed per second of wall time.

Run (figures are printed with -s and stored in the JSON as extra_info):

    nice -n 10 .venv/bin/python -m pytest benchmarks/client/bench_video.py -s \
        --benchmark-json=/tmp/bench_video.json

Input: a 20-second 1280x720 H.264 clip at 30 frames a second (about 4 Mbit/s), made here with
PyAV: a textured picture panning slowly, so every frame differs and the decoder
does real work. Read from a warm page cache, one process; FFmpeg's decoder threads as
hash_video sets them (automatic), PDQ on the calling thread. Wall time and CPU time (all
threads) are both given: on a loaded machine only the second is comparable between runs.
"""

from __future__ import annotations

import resource
import statistics
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

av = pytest.importorskip("av", reason="the hashmatch-client[video] extra is not installed")
np = pytest.importorskip("numpy")
pytest.importorskip("pdqhash")

from hashmatch.client.video import VideoHash, hash_video  # noqa: E402

WIDTH, HEIGHT, RATE, SECONDS = 1280, 720, 30, 20


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "pan-720p.mp4"
    rng = np.random.default_rng(11)
    # A smooth texture twice the frame's size (coarse noise, enlarged), panned across.
    coarse = rng.integers(0, 256, (HEIGHT // 16, WIDTH // 16, 3), dtype=np.uint8)
    texture = np.kron(coarse, np.ones((32, 32, 1), dtype=np.uint8))
    texture = texture // 2 + rng.integers(0, 24, texture.shape, dtype=np.uint8)  # no overflow
    with av.open(str(path), "w") as dst:
        out = dst.add_stream("libx264", rate=RATE, options={"preset": "veryfast"})
        out.width, out.height, out.pix_fmt, out.bit_rate = WIDTH, HEIGHT, "yuv420p", 4_000_000
        for n in range(RATE * SECONDS):
            x, y = (n * 3) % WIDTH, (n * 2) % HEIGHT
            picture = np.ascontiguousarray(texture[y : y + HEIGHT, x : x + WIDTH])
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = n, Fraction(1, RATE)
            dst.mux(out.encode(frame))
        dst.mux(out.encode(None))
    path.read_bytes()  # warm the page cache
    return path


def _run(benchmark: Any, clip: Path, label: str, *, fps: float, trim: bool, rounds: int) -> None:
    cpu: list[float] = []

    def hash_once() -> VideoHash:
        start = _cpu_seconds()
        hashed = hash_video(clip, fps=fps, trim_letterbox=trim)
        cpu.append(_cpu_seconds() - start)
        return hashed

    result = benchmark.pedantic(hash_once, rounds=rounds, iterations=1, warmup_rounds=1)
    seconds = benchmark.stats.stats.mean
    cpu_seconds = statistics.mean(cpu[1:])  # the warm-up round left out, as for wall time
    video_seconds = result.frames_decoded / result.frame_rate
    figures = {
        "video_seconds": round(video_seconds, 2),
        "frames_hashed": len(result.frames),
        "wall_seconds": round(seconds, 3),
        "cpu_seconds": round(cpu_seconds, 3),
        "video_seconds_per_second": round(video_seconds / seconds, 1),
        "video_seconds_per_cpu_second": round(video_seconds / cpu_seconds, 1),
    }
    benchmark.extra_info.update(figures)
    print(
        f"\n{label:<30} {figures['video_seconds_per_second']:>6} s of video/s wall"
        f" {figures['video_seconds_per_cpu_second']:>6} per CPU-s"
        f"  ({video_seconds:.0f} s of 720p H.264, {len(result.frames)} frames hashed,"
        f" {seconds:.2f} s wall, {cpu_seconds:.2f} s CPU a round)"
    )


def _cpu_seconds() -> float:
    # Every thread of the process (FFmpeg's decoder threads too): on a shared machine the
    # wall figure says more about the neighbours than about the hashing.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def test_one_frame_a_second_trimmed(benchmark: Any, clip: Path) -> None:
    _run(benchmark, clip, "1 fps, letterbox trim (default)", fps=1, trim=True, rounds=3)


def test_one_frame_a_second_untrimmed(benchmark: Any, clip: Path) -> None:
    _run(benchmark, clip, "1 fps, no trim (reference)", fps=1, trim=False, rounds=3)


def test_every_frame_trimmed(benchmark: Any, clip: Path) -> None:
    # What a hotline pays to list a video (every frame kept).
    _run(benchmark, clip, "every frame, letterbox trim", fps=0, trim=True, rounds=1)

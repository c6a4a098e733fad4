"""vPDQ matching: the service's match path (hashcore's Index.match_request on MatchRequest
bytes) against threatexchange's VPDQIndex (FAISS), same data, same run.

    python benchmarks/core/bench_video.py [--videos 10000] [--frames 300] [--query-frames 600]

Listed videos are random walks of PDQ hashes (each frame a few bits from the one before,
as consecutive frames of a video are), each frame one VPDQ entry of one list with the
video's reference ID, as the service lists them; a query is one MatchRequest carrying one
VPDQ hash with the video's frames, answered as a server answers it (one core call).
Half the queries are near copies of a listed video's
frames (a re-encode: a few bits moved per frame, sampled sparser than the list), half are
unrelated walks. Both matchers answer every query; the verdicts (which videos match) must
be identical, then per-query p50/p99 are printed for each. threatexchange's vPDQ extension
imports the `vpdq` hashing module, which is not needed to match: a stand-in module is put
in its place here, so the index measured is threatexchange's own code.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import types

import numpy as np

from hashmatch.client import VPDQ, make_video_hash
from hashmatch.server import _hashcore
from hashmatch.v1 import match_pb2

BATCH = 100_000  # entries per apply, as a hotline's batches


def walks(rng: np.random.Generator, n: int, frames: int, flips: int) -> np.ndarray:
    """`n` videos of `frames` PDQ hashes each, as (n, frames, 32) bytes."""
    start = rng.integers(0, 256, size=(n, 1, 32), dtype=np.uint8)
    bits = rng.integers(0, 256, size=(n, frames, flips))
    steps = np.zeros((n, frames, 32), dtype=np.uint8)
    for k in range(flips):
        np.bitwise_xor.at(
            steps,
            (
                np.arange(n)[:, None],
                np.arange(frames)[None, :],
                bits[:, :, k] // 8,
            ),
            (1 << (bits[:, :, k] % 8)).astype(np.uint8),
        )
    steps[:, 0, :] = 0
    return np.bitwise_xor.accumulate(steps, axis=1) ^ start


def build_index(listed: np.ndarray) -> _hashcore.Index:
    """One list holding every frame of every video as a VPDQ entry (reference `v<i>`)."""
    index = _hashcore.Index()
    index.configure_list(1, 31, 50, "videos")
    n, frames = listed.shape[:2]
    flat = listed.reshape(n * frames, 32)
    refs = [f"v{i}".encode() for i in range(n) for _ in range(frames)]
    for start in range(0, len(flat), BATCH):
        part = flat[start : start + BATCH]
        names = refs[start : start + BATCH]
        ends = np.cumsum([len(r) for r in names], dtype="<u4")
        index.apply(
            1,
            bytes([VPDQ]) * len(part),
            part.tobytes(),
            np.arange(start + 1, start + 1 + len(part), dtype="<u8").tobytes(),
            b"",
            b"",
            ends.tobytes(),
            b"".join(names),
        )
    index.compact()
    return index


def request(hashes: np.ndarray, fps: float) -> bytes:
    frames = [(h.tobytes(), 90, int(i * 1000 / fps)) for i, h in enumerate(hashes)]
    return match_pb2.MatchRequest(hashes=[make_video_hash(frames)]).SerializeToString()


def matched(index: _hashcore.Index, raw: bytes) -> set[int]:
    """The listed videos one MatchRequest matches, as the server answers it."""
    verdicts = index.match_request(raw, False, "platform")
    response = match_pb2.MatchResponse.FromString(verdicts.encode(-1, 0))
    return {int(r.reference_id[1:]) for r in response.references}


def signal(hashes: np.ndarray, fps: float) -> str:
    return json.dumps([f"{h.tobytes().hex()},90,{i / fps:.3f}" for i, h in enumerate(hashes)])


def queries(
    rng: np.random.Generator, listed: np.ndarray, n: int, frames: int
) -> list[tuple[np.ndarray, int | None]]:
    """Half near copies of a listed video (its frames cycled, 4 bits moved each), half not."""
    out: list[tuple[np.ndarray, int | None]] = []
    unrelated = walks(rng, n - n // 2, frames, 8)
    for _ in range(n // 2):
        video = int(rng.integers(len(listed)))
        source = listed[video][np.arange(frames) % listed.shape[1]].copy()
        for _ in range(4):
            pos = rng.integers(0, 256, size=frames)
            source[np.arange(frames), pos // 8] ^= (1 << (pos % 8)).astype(np.uint8)
        out.append((source, video))
    out.extend((u, None) for u in unrelated)
    return out


def threatexchange_index(listed: np.ndarray):  # type: ignore[no-untyped-def]
    sys.modules.setdefault("vpdq", types.ModuleType("vpdq"))
    sys.modules["vpdq"].VpdqFeature = object  # type: ignore[attr-defined]
    from threatexchange.extensions.vpdq.vpdq_index import VPDQIndex

    return VPDQIndex.build((signal(v, 30.0), i) for i, v in enumerate(listed))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=10_000)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--query-frames", type=int, default=600)
    ap.add_argument("--queries", type=int, default=40, help="hashcore queries")
    ap.add_argument("--peer-queries", type=int, default=10, help="VPDQIndex queries")
    args = ap.parse_args()
    rng = np.random.default_rng(7)

    listed = walks(rng, args.videos, args.frames, 8)
    print(f"{args.videos:,} videos x {args.frames} frames = {listed.shape[0] * listed.shape[1]:,}")
    t0 = time.perf_counter()
    index = build_index(listed)
    print(
        f"hashcore Index loaded in {time.perf_counter() - t0:.1f} s, "
        f"{index.counts(1)[4]:,} VPDQ entries, {index.memory_bytes() / 2**20:.0f} MiB"
    )
    t0 = time.perf_counter()
    peer = threatexchange_index(listed)
    print(f"threatexchange VPDQIndex built in {time.perf_counter() - t0:.1f} s")

    qs = queries(rng, listed, max(args.queries, args.peer_queries), args.query_frames)
    ours: list[float] = []
    theirs: list[float] = []
    for i, (q, source) in enumerate(qs):
        raw = request(q, 1.0)
        t0 = time.perf_counter()
        got = matched(index, raw)
        ours.append(time.perf_counter() - t0)
        if source is not None and source not in got:
            raise SystemExit(f"query {i}: its source video {source} did not match")
        if i < args.peer_queries:
            query_signal = signal(q, 1.0)
            t0 = time.perf_counter()
            want = {m.metadata for m in peer.query(query_signal)}
            theirs.append(time.perf_counter() - t0)
            if got != want:
                raise SystemExit(f"query {i}: hashcore {sorted(got)} != VPDQIndex {sorted(want)}")
    print(f"verdicts identical on {len(theirs)} queries (half near copies, half unrelated)")
    for name, times in (("hashcore match_request", ours), ("threatexchange VPDQIndex", theirs)):
        print(
            f"{name:26s} {len(times):3d} queries  p50 {percentile(times, 50) * 1e3:9.2f} ms"
            f"  p99 {percentile(times, 99) * 1e3:9.2f} ms"
            f"  mean {statistics.mean(times) * 1e3:9.2f} ms"
        )
    print(
        f"ratio (VPDQIndex / hashcore): p50 "
        f"{percentile(theirs, 50) / percentile(ours, 50):.0f}x, "
        f"p99 {percentile(theirs, 99) / percentile(ours, 99):.0f}x"
    )


if __name__ == "__main__":
    main()

"""Bounded closed-loop load cells against one address: unary, batch and stream.

A cell is one mode at one concurrency level for a fixed time: `concurrency` calls (unary,
batch) or streams (stream) in flight at once, each issuing its next request as soon as the
previous answer arrives. Every cell stops by itself at the earliest of its deadline and
its call budget. The calls are spread over client processes (spawned once, reused) so the
client side is not one Python interpreter's GIL.

Latencies are measured per call (unary, batch) or per message (stream: from the moment
the message is handed to gRPC until its answer arrives); the first `warmup` seconds of a
cell are not counted.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import threading
import time
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.pool import Pool
from typing import Any

import grpc

from hashmatch.server.bench.corpus import Entry, batch_request, match_request, query_hashes
from hashmatch.v1 import match_pb2, match_pb2_grpc

MODES = ("unary", "batch", "stream")
STREAM_WINDOW = 16
MAX_CELL_SECONDS = 60.0
MAX_CALLS_PER_THREAD = 2_000_000
PERCENTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99, "p999": 0.999}
CALL_TIMEOUT = 30.0


@dataclass(frozen=True)
class Target:
    """Where to send load: a gRPC address and a platform token."""

    address: str
    token: str


@dataclass
class CellSpec:
    mode: str
    concurrency: int
    seconds: float
    warmup: float = 0.3
    batch_size: int = 1_000
    stream_window: int = STREAM_WINDOW


@dataclass
class CellResult:
    """One cell's figures. Latencies in milliseconds; rates per second of measured time."""

    mode: str
    concurrency: int
    workers: int | None
    seconds: float
    calls: int
    hashes: int
    errors: int
    calls_per_s: float
    hashes_per_s: float
    latency_ms: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """Nearest-rank percentiles, mean and max of `values` (NaN when empty)."""
    if not values:
        return {k: math.nan for k in (*PERCENTILES, "mean", "max")}
    s = sorted(values)
    n = len(s)
    out = {k: s[min(n - 1, max(0, math.ceil(q * n) - 1))] for k, q in PERCENTILES.items()}
    out["mean"] = sum(s) / n
    out["max"] = s[-1]
    return out


def open_channel(address: str) -> grpc.Channel:
    # A connection of its own per channel, so several workers behind one port share load.
    return grpc.insecure_channel(
        address,
        options=[
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_receive_message_length", 64 << 20),
        ],
    )


@dataclass
class _Tally:
    lat: array = field(default_factory=lambda: array("d"))
    calls: int = 0
    hashes: int = 0
    errors: int = 0


def _unary_like(
    stub: match_pb2_grpc.MatchServiceStub,
    metadata: tuple[tuple[str, str], ...],
    requests: list[Any],
    batch: bool,
    measure_from: float,
    end: float,
    tally: _Tally,
) -> None:
    call = stub.MatchBatch if batch else stub.Match
    per = len(requests[0].items) if batch else 1
    i = 0
    while i < MAX_CALLS_PER_THREAD:
        t0 = time.perf_counter()
        if t0 >= end:
            break
        try:
            call(requests[i % len(requests)], metadata=metadata, timeout=CALL_TIMEOUT)
        except grpc.RpcError:
            tally.errors += 1
            i += 1
            continue
        t1 = time.perf_counter()
        i += 1
        if t0 >= measure_from:
            tally.lat.append((t1 - t0) * 1000)
            tally.calls += 1
            tally.hashes += per


def _stream(
    stub: match_pb2_grpc.MatchServiceStub,
    metadata: tuple[tuple[str, str], ...],
    requests: list[match_pb2.MatchRequest],
    window: int,
    measure_from: float,
    end: float,
    tally: _Tally,
) -> None:
    slots = threading.Semaphore(window)
    stop = threading.Event()
    sent: dict[str, float] = {}

    def generate() -> Iterator[match_pb2.MatchRequest]:
        i = 0
        while not stop.is_set() and i < MAX_CALLS_PER_THREAD:
            if not slots.acquire(timeout=0.05):
                continue
            req = requests[i % len(requests)]
            i += 1
            item = match_request(str(i), req.hashes[0])
            sent[item.item_id] = time.perf_counter()
            yield item

    responses = stub.MatchStream(generate(), metadata=metadata, timeout=MAX_CELL_SECONDS * 2)
    try:
        for response in responses:
            t1 = time.perf_counter()
            t0 = sent.pop(response.item_id, None)
            slots.release()
            if t0 is not None and t0 >= measure_from:
                tally.lat.append((t1 - t0) * 1000)
                tally.calls += 1
                tally.hashes += 1
            if t1 >= end:
                break
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.CANCELLED:
            tally.errors += 1
    finally:
        stop.set()
        responses.cancel()


def _client_job(
    target: Target, spec: CellSpec, threads: int, seed: int, listed: list[Entry], start_at: float
) -> tuple[bytes, int, int, int]:
    """One client process's share of a cell: `threads` threads, each with its own channel."""
    hashes = query_hashes(seed, 4_096, listed)
    metadata = (("authorization", f"Bearer {target.token}"),)
    tallies = [_Tally() for _ in range(threads)]
    channels = [open_channel(target.address) for _ in range(threads)]
    stubs = [match_pb2_grpc.MatchServiceStub(c) for c in channels]
    if spec.mode == "batch":
        requests: list[Any] = [
            batch_request(hashes, k * spec.batch_size, spec.batch_size) for k in range(4)
        ]
    else:
        requests = [match_request(str(k), h) for k, h in enumerate(hashes)]
    for stub in stubs:  # connect before the clock starts
        with contextlib.suppress(grpc.RpcError):
            stub.Match(
                requests[0] if spec.mode != "batch" else requests[0].items[0],
                metadata=metadata,
                timeout=CALL_TIMEOUT,
            )
    while time.time() < start_at:
        time.sleep(0.002)
    measure_from = time.perf_counter() + spec.warmup
    end = time.perf_counter() + spec.warmup + spec.seconds

    def run(k: int) -> None:
        if spec.mode == "stream":
            _stream(stubs[k], metadata, requests, spec.stream_window, measure_from, end, tallies[k])
        else:
            _unary_like(
                stubs[k], metadata, requests, spec.mode == "batch", measure_from, end, tallies[k]
            )

    workers = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(spec.warmup + spec.seconds + CALL_TIMEOUT + 5)
    for c in channels:
        c.close()
    lat = array("d")
    for t in tallies:
        lat.extend(t.lat)
    return (
        lat.tobytes(),
        sum(t.calls for t in tallies),
        sum(t.hashes for t in tallies),
        sum(t.errors for t in tallies),
    )


class LoadRunner:
    """Runs cells from a pool of client processes (spawned once; close() ends them)."""

    def __init__(self, processes: int = 2) -> None:
        self.processes = max(1, processes)
        self._pool: Pool | None = None

    def _get_pool(self) -> Pool:
        if self._pool is None:
            self._pool = multiprocessing.get_context("spawn").Pool(self.processes)
        return self._pool

    def run(
        self,
        target: Target,
        spec: CellSpec,
        listed: list[Entry],
        *,
        seed: int = 1,
        workers: int | None = None,
    ) -> CellResult:
        if spec.mode not in MODES:
            raise ValueError(f"unknown mode {spec.mode!r}")
        spec.seconds = min(max(spec.seconds, 0.1), MAX_CELL_SECONDS)
        procs = min(self.processes, spec.concurrency)
        shares = [
            spec.concurrency // procs + (1 if p < spec.concurrency % procs else 0)
            for p in range(procs)
        ]
        start_at = time.time() + 0.3
        jobs = [(target, spec, n, seed * 1000 + p, listed, start_at) for p, n in enumerate(shares)]
        outs = self._get_pool().starmap(_client_job, jobs)
        lat = array("d")
        for raw, *_ in outs:
            lat.frombytes(raw)
        calls = sum(o[1] for o in outs)
        hashes = sum(o[2] for o in outs)
        errors = sum(o[3] for o in outs)
        return CellResult(
            mode=spec.mode,
            concurrency=spec.concurrency,
            workers=workers,
            seconds=spec.seconds,
            calls=calls,
            hashes=hashes,
            errors=errors,
            calls_per_s=calls / spec.seconds,
            hashes_per_s=hashes / spec.seconds,
            latency_ms=percentiles(lat.tolist()),
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> LoadRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

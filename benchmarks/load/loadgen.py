"""Bounded load generator: hashmatch against the bare-grpcio floor, in the same run.

Loopback only, a fixed time per cell, and it stops by itself. For each server (hashmatch
with 1 and 2 workers, the floor with 1 and 2 processes) and each mode it reports
requests/s, hashes/s and p50/p99/p999 latency:

- unary:  Match with one MD5 per call, closed loop, as fast as the clients go;
- half:   the same paced at half of the unary rate just measured (latency at half load);
- batch:  MatchBatch of 1,000 items of one MD5 each;
- stream: MatchStream, one MD5 per message, a window of messages in flight per stream.

    .venv/bin/python benchmarks/load/loadgen.py                # about 2 minutes
    .venv/bin/python benchmarks/load/loadgen.py --seconds 1    # quicker, noisier

The clients run in `--clients` processes on the same machine as the servers, so the
numbers are what one box does end to end, both sides sharing its cores.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from hashmatch.client import MD5, Change, Connection, ListClient, RetryPolicy, make_hash
from hashmatch.server.store import Role, Store
from hashmatch.v1 import match_pb2, match_pb2_grpc

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import floor  # noqa: E402

LISTED = 10_000
BATCH = 1_000
WINDOW = 32
WARMUP = 0.3


@dataclass
class Job:
    address: str
    token: str
    mode: str
    start_at: float
    seconds: float
    threads: int
    seed: int
    rate_per_thread: float | None = None


@dataclass
class Outcome:
    latencies: list[float]
    requests: int
    hashes: int
    errors: int


def _request(rng: random.Random, listed: list[bytes], i: int) -> match_pb2.MatchRequest:
    # One query in a hundred is listed: realistic for uploads, and it exercises references.
    value = listed[rng.randrange(len(listed))] if i % 100 == 0 else rng.randbytes(16)
    return match_pb2.MatchRequest(item_id=f"i{i}", hashes=[make_hash(MD5, value)])


def _thread(job: Job, listed: list[bytes], seed: int, out: list[Outcome]) -> None:
    rng = random.Random(seed)
    metadata = (("authorization", f"Bearer {job.token}"),)
    channel = grpc.insecure_channel(
        job.address,
        options=[
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_receive_message_length", 64 << 20),
        ],
    )
    stub = match_pb2_grpc.MatchServiceStub(channel)
    stub.Match(_request(rng, listed, 1), metadata=metadata, timeout=30)  # connect
    lat: list[float] = []
    done = Outcome(lat, 0, 0, 0)
    while time.time() < job.start_at:
        time.sleep(0.001)
    measure_from = time.perf_counter() + WARMUP
    end = time.perf_counter() + job.seconds
    if job.mode == "stream":
        _stream(stub, metadata, rng, listed, measure_from, end, done)
    else:
        batch = job.mode == "batch"
        # Requests are built before the clock starts, so the clients spend their CPU on
        # calls, not on protobuf construction.
        singles = [_request(rng, listed, k) for k in range(1000)]
        batches = [
            match_pb2.MatchBatchRequest(
                items=[_request(rng, listed, j * BATCH + k) for k in range(BATCH)]
            )
            for j in range(8 if batch else 0)
        ]
        interval = 1.0 / job.rate_per_thread if job.rate_per_thread else 0.0
        next_at = time.perf_counter()
        i = 0
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            if interval:
                if now < next_at:
                    time.sleep(next_at - now)
                next_at += interval
            i += 1
            t0 = time.perf_counter()
            try:
                if batch:
                    stub.MatchBatch(batches[i % len(batches)], metadata=metadata, timeout=30)
                else:
                    stub.Match(singles[i % len(singles)], metadata=metadata, timeout=30)
            except grpc.RpcError:
                done.errors += 1
                continue
            t1 = time.perf_counter()
            if t0 >= measure_from:
                lat.append(t1 - t0)
                done.requests += 1
                done.hashes += BATCH if batch else 1
    channel.close()
    out.append(done)


def _stream(
    stub: match_pb2_grpc.MatchServiceStub,
    metadata: tuple[tuple[str, str], ...],
    rng: random.Random,
    listed: list[bytes],
    measure_from: float,
    end: float,
    done: Outcome,
) -> None:
    window = threading.Semaphore(WINDOW)
    sent: queue.SimpleQueue[float] = queue.SimpleQueue()
    stop = threading.Event()

    prebuilt = [_request(rng, listed, k) for k in range(1000)]

    def requests() -> Iterator[match_pb2.MatchRequest]:
        i = 0
        while not stop.is_set():
            if not window.acquire(timeout=0.1):
                continue
            i += 1
            sent.put(time.perf_counter())
            yield prebuilt[i % len(prebuilt)]

    responses = stub.MatchStream(requests(), metadata=metadata)
    try:
        for _ in responses:
            t1 = time.perf_counter()
            t0 = sent.get()
            window.release()
            if t0 >= measure_from:
                done.latencies.append(t1 - t0)
                done.requests += 1
                done.hashes += 1
            if t1 >= end:
                break
    finally:
        stop.set()
        responses.cancel()


def _client(job: Job, listed: list[bytes]) -> Outcome:
    outs: list[Outcome] = []
    threads = []
    for t in range(job.threads):
        th = threading.Thread(target=_thread, args=(job, listed, job.seed * 1000 + t, outs))
        th.start()
        threads.append(th)
    for th in threads:
        th.join()
    lat = [x for o in outs for x in o.latencies]
    return Outcome(
        lat, sum(o.requests for o in outs), sum(o.hashes for o in outs), sum(o.errors for o in outs)
    )


@dataclass
class Row:
    server: str
    mode: str
    rps: float
    hps: float
    p50: float
    p99: float
    p999: float
    errors: int


def _pct(sorted_lat: list[float], q: float) -> float:
    if not sorted_lat:
        return float("nan")
    return sorted_lat[min(len(sorted_lat) - 1, int(q * len(sorted_lat)))] * 1000


def run_cell(
    pool: multiprocessing.pool.Pool,
    server: str,
    address: str,
    token: str,
    mode: str,
    args: argparse.Namespace,
    listed: list[bytes],
    rate: float | None = None,
) -> Row:
    threads = {"unary": args.unary_threads, "half": args.unary_threads, "batch": 2, "stream": 2}
    n = threads[mode] * args.clients
    start_at = time.time() + 0.5
    jobs = [
        Job(
            address,
            token,
            "unary" if mode == "half" else mode,
            start_at,
            args.seconds,
            threads[mode],
            seed=c + 1,
            rate_per_thread=(rate / n) if rate else None,
        )
        for c in range(args.clients)
    ]
    outs = pool.starmap(_client, [(j, listed) for j in jobs])
    lat = sorted(x for o in outs for x in o.latencies)
    span = args.seconds - WARMUP
    requests = sum(o.requests for o in outs)
    return Row(
        server,
        mode,
        requests / span,
        sum(o.hashes for o in outs) / span,
        _pct(lat, 0.5),
        _pct(lat, 0.99),
        _pct(lat, 0.999),
        sum(o.errors for o in outs),
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def ours(workers: int, root: Path, listed: list[bytes]) -> Iterator[tuple[str, str]]:
    data = root / f"ours-{workers}"
    store = Store(data)
    try:
        platform = store.add_tenant("bench-platform", Role.PLATFORM)
        hotline = store.add_tenant("bench-hotline", Role.HOTLINE)
    finally:
        store.close()
    exe = shutil.which("hashmatch", path=str(Path(sys.executable).parent))
    assert exe is not None, "hashmatch is not installed next to this Python"
    log = (root / f"ours-{workers}.log").open("w")
    command = [exe, "serve", "--data-dir", str(data), "--listen", "127.0.0.1:0"]
    command += ["--workers", str(workers), "--log-format", "json"]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("hashmatch serving on "), line
        address = line.split()[-1]
        with ListClient(Connection(server=address, token=hotline, retry=RetryPolicy(1))) as lc:
            lc.create_list("bench")
            lc.apply_changes(
                "bench",
                "b1",
                [Change(make_hash(MD5, v), f"R-{i}") for i, v in enumerate(listed)],
            )
        time.sleep(0.3)  # every worker follows the change log within its poll interval
        yield address, platform
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextlib.contextmanager
def bare(workers: int, listed: list[bytes]) -> Iterator[tuple[str, str]]:
    port = _free_port()
    procs = floor.start(port, workers, frozenset(listed))
    try:
        yield f"127.0.0.1:{port}", "none"
    finally:
        for p in procs:
            if p.pid is not None:
                os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            p.join(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.5, help="per cell (max 10)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--modes", nargs="+", default=["unary", "half", "batch", "stream"])
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--unary-threads", type=int, default=4, help="threads per client")
    args = parser.parse_args()
    args.seconds = min(max(args.seconds, 0.5), 10.0)
    rng = random.Random(1)
    listed = [rng.randbytes(16) for _ in range(LISTED)]
    rows: list[Row] = []
    ctx = multiprocessing.get_context("spawn")
    with (
        tempfile.TemporaryDirectory(prefix="hashmatch-load-") as tmp,
        ctx.Pool(args.clients) as pool,
    ):
        for workers in args.workers:
            for name, server in (
                (f"floor x{workers}", bare(workers, listed)),
                (f"hashmatch x{workers}", ours(workers, Path(tmp), listed)),
            ):
                with server as (address, token):
                    unary_rate = None
                    for mode in args.modes:
                        rate = unary_rate / 2 if mode == "half" and unary_rate else None
                        if mode == "half" and rate is None:
                            continue
                        row = run_cell(pool, name, address, token, mode, args, listed, rate)
                        if mode == "unary":
                            unary_rate = row.rps
                        rows.append(row)
                        print(
                            f"{name:14} {mode:6} {row.rps:10.0f} req/s {row.hps:12.0f} hashes/s"
                            f"  p50 {row.p50:7.2f}  p99 {row.p99:7.2f}  p999 {row.p999:7.2f} ms"
                            f"  errors {row.errors}",
                            file=sys.stderr,
                            flush=True,
                        )
    print(f"\n{os.cpu_count()} cores; {args.clients} client processes; {args.seconds} s per cell\n")
    print("| server | mode | requests/s | hashes/s | p50 ms | p99 ms | p999 ms | vs floor |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    floor_of = {(r.server.split()[1], r.mode): r for r in rows if r.server.startswith("floor")}
    for r in rows:
        base = floor_of.get((r.server.split()[1], r.mode))
        ratio = f"{r.hps / base.hps:.2f}x" if base and not r.server.startswith("floor") else ""
        print(
            f"| {r.server} | {r.mode} | {r.rps:,.0f} | {r.hps:,.0f} | {r.p50:.2f} | "
            f"{r.p99:.2f} | {r.p999:.2f} | {ratio} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

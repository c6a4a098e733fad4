"""Bounded load generator: hashmatch against the bare-grpcio floor, in the same run.

Loopback only, a fixed time per cell, and it stops by itself. For each server (hashmatch
with 1 and 2 workers, the floor with 1 and 2 processes) and each mode it reports
requests/s, hashes/s and p50/p99/p999 latency:

- unary:  Match with one MD5 per call, closed loop, as fast as the clients go;
- half:   the same paced at half of the unary rate just measured (latency at half load);
- batch:  MatchBatch of 1,000 items of one MD5 each;
- stream: MatchStream, one MD5 per message, a window of messages in flight per stream;
- overload (hashmatch only): Match offered open-loop at `--overload-factor` times the
  unary rate just measured (calls sent on a fixed schedule whatever the answers; latency
  counted from the scheduled time, so a client falling behind shows as latency). It reports
  how many calls were refused (RESOURCE_EXHAUSTED) and how many gRPC core cancelled
  before the server saw them (its backlog limit), the p99 latency of the refusals and of
  all answers, and how long after the overload ends a probe client sees the service
  healthy again (20 calls in a row answered OK, each within 20 ms).

    .venv/bin/python benchmarks/load/loadgen.py                # about 2 minutes
    .venv/bin/python benchmarks/load/loadgen.py --seconds 1    # quicker, noisier
    .venv/bin/python benchmarks/load/loadgen.py --workers 1 --modes overload

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
from dataclasses import dataclass, field
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
# Recovery after an overload: this many probe calls in a row answered OK within RECOVERED_MS.
RECOVERED_STREAK = 20
RECOVERED_MS = 20.0
# Calls one overload thread may have outstanding at once.
MAX_OUTSTANDING = 2_000


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
    # Overload only: answers RESOURCE_EXHAUSTED, and their latencies.
    refused: int = 0
    refused_latencies: list[float] = field(default_factory=list)
    # Overload only: answers CANCELLED. grpc core cancels calls beyond its backlog of calls
    # the server has not picked up yet (grpc.server.max_pending_requests) before any
    # Python code sees them.
    cancelled: int = 0


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
    elif job.mode == "overload":
        assert job.rate_per_thread is not None
        _overload(stub, metadata, rng, listed, job.rate_per_thread, measure_from, end, done)
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


def _overload(
    stub: match_pb2_grpc.MatchServiceStub,
    metadata: tuple[tuple[str, str], ...],
    rng: random.Random,
    listed: list[bytes],
    rate: float,
    measure_from: float,
    end: float,
    done: Outcome,
) -> None:
    """Sends Match calls at `rate` per second until `end`, not waiting for answers."""
    lock = threading.Lock()
    outstanding = threading.Semaphore(MAX_OUTSTANDING)
    prebuilt = [_request(rng, listed, k) for k in range(1000)]

    # A call whose future is garbage-collected is cancelled: keep them until answered.
    pending: set[grpc.Future] = set()

    def answered(f: grpc.Future, t0: float) -> None:
        t1 = time.perf_counter()
        code = f.code()
        pending.discard(f)
        outstanding.release()
        if t0 < measure_from:
            return
        with lock:
            done.latencies.append(t1 - t0)
            if code == grpc.StatusCode.OK:
                done.requests += 1
                done.hashes += 1
            elif code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                done.refused += 1
                done.refused_latencies.append(t1 - t0)
            elif code == grpc.StatusCode.CANCELLED:
                done.cancelled += 1
            else:
                done.errors += 1

    interval = 1.0 / rate
    due = time.perf_counter()
    i = 0
    while due < end:
        now = time.perf_counter()
        if now < due:
            time.sleep(due - now)
        # A bound on what one thread keeps outstanding (client memory); reaching it only
        # delays the schedule, which the latency of the next calls then shows.
        outstanding.acquire()
        i += 1
        future = stub.Match.future(prebuilt[i % len(prebuilt)], metadata=metadata, timeout=30)
        pending.add(future)
        future.add_done_callback(lambda f, t0=due: answered(f, t0))
        due += interval
    for _ in range(MAX_OUTSTANDING):  # wait for the answers still outstanding
        outstanding.acquire(timeout=30)


@dataclass
class Recovery:
    seconds: float  # from the end of the overload to the first call of a healthy streak
    probes_refused_during: float  # share of the probe's calls refused during the overload
    # p99 latency (ms) of the probe's calls during the overload: what a light client sees.
    probe_p99_during: float = float("nan")


def _probe(
    address: str, token: str, listed: list[bytes], overload_start: float, overload_end: float
) -> Recovery:
    """One client calling Match every 5 ms through the overload and until it is healthy."""
    rng = random.Random(7)
    metadata = (("authorization", f"Bearer {token}"),)
    channel = grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
    stub = match_pb2_grpc.MatchServiceStub(channel)
    stub.Match(_request(rng, listed, 1), metadata=metadata, timeout=30)
    during = refused = 0
    during_latencies: list[float] = []
    streak_from: float | None = None
    streak = 0
    try:
        while time.time() < overload_end + 30:
            t0 = time.perf_counter()
            started = time.time()
            try:
                stub.Match(_request(rng, listed, 2), metadata=metadata, timeout=5)
                ok = (time.perf_counter() - t0) * 1000 <= RECOVERED_MS
            except grpc.RpcError as exc:
                ok = False
                if (
                    overload_start <= started < overload_end
                    and exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                ):
                    refused += 1
            if started < overload_start:
                pass
            elif started < overload_end:
                during += 1
                during_latencies.append(time.perf_counter() - t0)
            elif ok:
                if streak == 0:
                    streak_from = started
                streak += 1
                if streak >= RECOVERED_STREAK:
                    assert streak_from is not None
                    return Recovery(
                        max(0.0, streak_from - overload_end),
                        refused / max(during, 1),
                        _pct(sorted(during_latencies), 0.99),
                    )
            else:
                streak = 0
            time.sleep(0.005)
        return Recovery(
            float("inf"), refused / max(during, 1), _pct(sorted(during_latencies), 0.99)
        )
    finally:
        channel.close()


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
        lat,
        sum(o.requests for o in outs),
        sum(o.hashes for o in outs),
        sum(o.errors for o in outs),
        sum(o.refused for o in outs),
        [x for o in outs for x in o.refused_latencies],
        sum(o.cancelled for o in outs),
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
    # Overload only.
    offered: float = 0.0  # calls per second sent
    answered: float = 0.0  # answers per second, OK and refused
    refused_share: float = 0.0
    cancelled_share: float = 0.0
    refused_p99: float = float("nan")
    recovery: Recovery | None = None


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
    threads = {
        "unary": args.unary_threads,
        "half": args.unary_threads,
        "batch": 2,
        "stream": 2,
        "overload": 2,
    }
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
    probe: list[Recovery] = []
    prober = None
    if mode == "overload":
        # The clients stop issuing calls at about start_at + seconds.
        end = start_at + args.seconds
        prober = threading.Thread(
            target=lambda: probe.append(_probe(address, token, listed, start_at + WARMUP, end)),
            daemon=True,
        )
        prober.start()
    outs = pool.starmap(_client, [(j, listed) for j in jobs])
    if prober is not None:
        prober.join(60)
    lat = sorted(x for o in outs for x in o.latencies)
    span = args.seconds - WARMUP
    requests = sum(o.requests for o in outs)
    refused = sum(o.refused for o in outs)
    return Row(
        server,
        mode,
        requests / span,
        sum(o.hashes for o in outs) / span,
        _pct(lat, 0.5),
        _pct(lat, 0.99),
        _pct(lat, 0.999),
        sum(o.errors for o in outs),
        offered=rate or 0.0,
        answered=len(lat) / span,
        refused_share=refused / max(len(lat), 1),
        cancelled_share=sum(o.cancelled for o in outs) / max(len(lat), 1),
        refused_p99=_pct(sorted(x for o in outs for x in o.refused_latencies), 0.99),
        recovery=probe[0] if probe else None,
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
    parser.add_argument(
        "--modes", nargs="+", default=["unary", "half", "batch", "stream", "overload"]
    )
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--unary-threads", type=int, default=4, help="threads per client")
    parser.add_argument(
        "--overload-factor",
        type=float,
        default=2.0,
        help="overload offers this many times the unary rate measured before it",
    )
    parser.add_argument(
        "--overload-rate",
        type=float,
        default=5000.0,
        help="calls/s offered in overload when no unary rate was measured",
    )
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
                        if mode == "overload":
                            if name.startswith("floor"):
                                continue  # the floor has no admission limit: it only queues
                            rate = (
                                unary_rate * args.overload_factor
                                if unary_rate
                                else args.overload_rate
                            )
                        row = run_cell(pool, name, address, token, mode, args, listed, rate)
                        if mode == "unary":
                            unary_rate = row.rps
                        rows.append(row)
                        extra = ""
                        if row.recovery is not None:
                            extra = (
                                f"  offered {row.offered:.0f}/s"
                                f"  refused {row.refused_share:.0%} (p99 {row.refused_p99:.2f} ms)"
                                f"  cancelled {row.cancelled_share:.0%}"
                                f"  probe p99 {row.recovery.probe_p99_during:.2f} ms"
                                f"  recovered in {row.recovery.seconds:.2f} s"
                            )
                        print(
                            f"{name:14} {mode:8} {row.rps:10.0f} req/s {row.hps:12.0f} hashes/s"
                            f"  p50 {row.p50:7.2f}  p99 {row.p99:7.2f}  p999 {row.p999:7.2f} ms"
                            f"  errors {row.errors}{extra}",
                            file=sys.stderr,
                            flush=True,
                        )
    print(f"\n{os.cpu_count()} cores; {args.clients} client processes; {args.seconds} s per cell\n")
    print("| server | mode | requests/s | hashes/s | p50 ms | p99 ms | p999 ms | vs floor |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    floor_of = {(r.server.split()[1], r.mode): r for r in rows if r.server.startswith("floor")}
    for r in rows:
        if r.mode == "overload":
            continue
        base = floor_of.get((r.server.split()[1], r.mode))
        ratio = f"{r.hps / base.hps:.2f}x" if base and not r.server.startswith("floor") else ""
        print(
            f"| {r.server} | {r.mode} | {r.rps:,.0f} | {r.hps:,.0f} | {r.p50:.2f} | "
            f"{r.p99:.2f} | {r.p999:.2f} | {ratio} |"
        )
    overloads = [r for r in rows if r.mode == "overload"]
    if overloads:
        print(
            f"\nOverload: Match offered at {args.overload_factor:g}x the unary rate measured "
            "before it, open loop\n"
        )
        print(
            "| server | offered/s | answers/s | OK/s | refused | cancelled by core | "
            "p99 refused ms | p99 all ms | "
            "probe refused | probe p99 ms | recovered after s |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in overloads:
            rec = r.recovery
            recovery = (
                f"{rec.probes_refused_during:.0%} | {rec.probe_p99_during:.2f} | {rec.seconds:.2f}"
                if rec is not None
                else " | |"
            )
            print(
                f"| {r.server} | {r.offered:,.0f} | {r.answered:,.0f} | {r.rps:,.0f} | "
                f"{r.refused_share:.0%} | {r.cancelled_share:.0%} | {r.refused_p99:.2f} | "
                f"{r.p99:.2f} | {recovery} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Bounded load generator: hashmatch against the bare-grpcio floor, in the same run.

Loopback only, a fixed time per cell (`--seconds`, at most 10), and every loop stops by
itself. Each server — hashmatch with 1 and 2 workers (`hashmatch serve --workers N`), the
floor (floor.py: bare grpcio, a dict lookup, no auth) with 1 and 2 processes — gets the
same requests, and each cell reports requests/s, hashes/s, p50/p99/p999 latency, and the
CPU (user+sys seconds) the client processes and the server processes spent during the
cell, so a reader sees whether the clients, not the server, were the limit.

Modes (`--modes`, all by default, in this order):

- unary:  Match with one MD5 per call (1 % of them listed), closed loop, as fast as the
  clients go;
- half:   the same paced at half of the unary rate just measured (latency at half load);
- batch:  MatchBatch of 1,000 MD5 items, one cell per `--match-rates` percentage (default
  0,1,50,100): that share of the items is listed, each a different entry (distinct
  reference IDs; the list holds 10,000 entries, each client process sends 8 different
  batches). Reported against the floor at the same rate (target: at least 2x);
- stream: MatchStream, one MD5 per message (1 % listed), a window of 32 messages in
  flight per stream (target: at least 3x hashmatch's own unary rate);
- batchstream: MatchBatchStream, each message a MatchBatchRequest of `--stream-items`
  (default 100) MD5 items (1 % listed), a window of 32 messages in flight per stream
  (target: hashes/s at least 3x hashmatch's own unary hashes/s);
- overload (hashmatch only): Match offered open-loop at `--overload-factor` times the
  unary rate just measured (calls sent on a fixed schedule whatever the answers; latency
  counted from the scheduled time, so a client falling behind shows as latency). It reports
  how many calls were refused (RESOURCE_EXHAUSTED) and how many gRPC core cancelled
  before the server saw them (its backlog limit), the p99 latency of the refusals and of
  all answers, and how long after the overload ends a probe client sees the service
  healthy again (20 calls in a row answered OK, each within 20 ms). Targets: refusals
  p99 <= 50 ms, recovery <= 5 s;
- idle (hashmatch only): one tenant's unary Match latency, paced at `--idle-rate` calls/s
  with a 2 s deadline, first with no other traffic (the baseline), then while another
  process holds `--idle-streams` idle streams open: a third MatchStream of a second
  platform tenant, a third UploadChanges and a third WatchChanges of a hotline (each
  MatchStream and WatchChanges is first seen answering once, then sends nothing). It
  reports the p50/p99 of both, their ratio (target: p99 within 1.2x of the baseline), how
  many of the measured tenant's calls failed, and how many idle streams the server
  refused or ended. The idle streams are cancelled at the end of the cell.

The load generator must not be what is measured: requests are built and serialized before
the clock starts and sent as raw bytes (no protobuf work in the timed loop; a response is
only checked to be non-empty), the clients run in `--clients` processes, and their CPU is
reported. Once per cell and client process, outside the timing, one response is decoded
and checked against what the request should get (verdicts, list and reference IDs; for a
batch, that exactly the listed share of the items matched): the `check` column.

Flood quarantine is turned off on the benchmark list: the same references matching over
and over would otherwise be quarantined, and the match rate would not be what is sent.

    .venv/bin/python benchmarks/load/loadgen.py                # about 3-4 minutes
    .venv/bin/python benchmarks/load/loadgen.py --seconds 1    # quicker, noisier
    .venv/bin/python benchmarks/load/loadgen.py --workers 1 --modes batch --match-rates 0,50
    .venv/bin/python benchmarks/load/loadgen.py --workers 1 --modes overload
    .venv/bin/python benchmarks/load/loadgen.py --workers 1 --modes idle --idle-streams 300

Every client thread (`--unary-threads`, `--batch-threads`, `--stream-threads` per client
process) has a connection of its own; with 2 workers the kernel spreads connections over
the serving processes at random, and the server CPU column shows when they landed unevenly.
The clients run on the same machine as the servers, so the numbers are what one box does
end to end, both sides sharing its cores: compare the CPU columns with the core count (a
server near 1 core per worker is saturated; clients near a core each are the limit). The
tables end with the issue's targets and whether this run met them.
Tenants are created with `hashmatch admin add-tenant`, the list with the client SDK; the
benchmark uses no server internals.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import math
import multiprocessing
import multiprocessing.connection
import multiprocessing.pool
import os
import queue
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from hashmatch.client import MD5, Change, Connection, ListClient, RetryPolicy, make_hash
from hashmatch.v1 import lists_pb2, match_pb2

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import floor  # noqa: E402
from proc_cpu import process_tree_ticks  # noqa: E402

MATCH_SERVICE = "/hashmatch.v1.MatchService/"
LIST_SERVICE = "/hashmatch.v1.ListService/"
LIST_NAME = floor.LIST_NAME
IDLE_LIST = "idle"
LISTED = 10_000
BATCH = 1_000
BATCH_VARIANTS = 8  # different batches per client process
SINGLES = 1_000  # different Match requests per client process
HIT_EVERY = 100  # unary, (batch)stream, overload, idle: one query in a hundred is listed
WINDOW = 32
WARMUP = 0.3
START_MARGIN = 0.7  # seconds from handing out a cell's jobs to its clock starting
# Recovery after an overload: this many probe calls in a row answered OK within RECOVERED_MS.
RECOVERED_STREAK = 20
RECOVERED_MS = 20.0
# Calls one overload thread may have outstanding at once.
MAX_OUTSTANDING = 2_000
# Idle mode: the measured tenant's call deadline, streams per connection of the idle
# process, and how long the idle process waits for its streams to answer once.
IDLE_CALL_TIMEOUT = 2.0
IDLE_PER_CHANNEL = 50
IDLE_CONFIRM_SECONDS = 5.0
IDLE_KINDS = ("MatchStream", "UploadChanges", "WatchChanges")
ALL_MODES = ("unary", "half", "batch", "stream", "batchstream", "overload", "idle")
CLK_TCK = os.sysconf("SC_CLK_TCK")
CHANNEL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
]

Metadata = tuple[tuple[str, str], ...]


def _ref(index: int) -> str:
    """The reference ID of listed[index], in hashmatch's list and in the floor alike."""
    return f"R-{index}"


@dataclass
class Job:
    address: str
    token: str
    mode: str  # unary, batch, stream, batchstream or overload (half, idle: unary calls)
    start_at: float
    seconds: float
    threads: int
    seed: int
    rate_per_thread: float | None = None
    match_rate: float = 1.0  # batch only: percent of the items that are listed
    stream_items: int = 100  # batchstream only: items per message
    timeout: float = 30.0


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
    # Status codes of failed calls (all modes), by name.
    codes: Counter[str] = field(default_factory=Counter)
    # user+sys seconds of the client process from the cell's start to its end.
    cpu: float = 0.0
    # What the decoded check response got wrong ("" when it was right).
    problems: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------
# Requests, built and serialized before the clock starts


@dataclass
class Prepared:
    singles: list[bytes]  # serialized MatchRequest
    single_refs: list[str | None]  # the reference each should match, None for a miss
    batches: list[bytes]  # serialized MatchBatchRequest
    batch_refs: list[dict[int, str]]  # per batch: item position -> expected reference


def _single(item_id: str, value: bytes) -> match_pb2.MatchRequest:
    return match_pb2.MatchRequest(item_id=item_id, hashes=[make_hash(MD5, value)])


def _prepare(job: Job, listed: list[bytes]) -> Prepared:
    # Not an integer seed: listed comes from random.Random(1), and the misses must not.
    rng = random.Random(f"client-{job.seed}")
    singles: list[bytes] = []
    single_refs: list[str | None] = []
    for k in range(SINGLES):
        if k % HIT_EVERY == 0:
            index = rng.randrange(len(listed))
            singles.append(_single(f"i{k}", listed[index]).SerializeToString())
            single_refs.append(_ref(index))
        else:
            singles.append(_single(f"i{k}", rng.randbytes(16)).SerializeToString())
            single_refs.append(None)
    batches: list[bytes] = []
    batch_refs: list[dict[int, str]] = []
    if job.mode == "batch":
        hits = round(job.match_rate / 100 * BATCH)
        for _ in range(BATCH_VARIANTS):
            positions = rng.sample(range(BATCH), hits)
            entries = rng.sample(range(len(listed)), hits)
            where = dict(zip(positions, entries, strict=True))
            items = [
                _single(f"b{k}", listed[where[k]] if k in where else rng.randbytes(16))
                for k in range(BATCH)
            ]
            batches.append(match_pb2.MatchBatchRequest(items=items).SerializeToString())
            batch_refs.append({k: _ref(i) for k, i in where.items()})
    if job.mode == "batchstream":
        # The singles' items, cut into messages of stream_items (1 % listed, as there).
        n = job.stream_items
        for start in range(0, SINGLES * BATCH_VARIANTS, n):
            ks = [(start + j) % SINGLES for j in range(n)]
            items = [match_pb2.MatchRequest.FromString(singles[k]) for k in ks]
            batches.append(match_pb2.MatchBatchRequest(items=items).SerializeToString())
            batch_refs.append({j: r for j, k in enumerate(ks) if (r := single_refs[k])})
            if len(batches) >= SINGLES:
                break
    return Prepared(singles, single_refs, batches, batch_refs)


def _check_one(resp: match_pb2.MatchResponse, item_id: str, want: str | None) -> str:
    """What is wrong with one decoded answer ("" when nothing)."""
    got = [(r.list, r.reference_id) for r in resp.references]
    if resp.HasField("error"):
        return f"{item_id}: error {resp.error.message!r}"
    if resp.item_id != item_id:
        return f"{item_id}: item_id echoed as {resp.item_id!r}"
    if want is None:
        if resp.verdict != match_pb2.VERDICT_NO_MATCH or got:
            return f"{item_id}: expected NO_MATCH, got verdict {resp.verdict} {got}"
    elif resp.verdict != match_pb2.VERDICT_MATCH or got != [(LIST_NAME, want)]:
        return f"{item_id}: expected MATCH {LIST_NAME}/{want}, got verdict {resp.verdict} {got}"
    return ""


def _verify(channel: grpc.Channel, job: Job, prep: Prepared, metadata: Metadata) -> list[str]:
    """Decodes the answers to one request of the cell's kind, outside the timing."""
    try:
        if job.mode in ("batch", "batchstream"):
            if job.mode == "batch":
                raw = channel.unary_unary(MATCH_SERVICE + "MatchBatch")(
                    prep.batches[0], metadata=metadata, timeout=job.timeout
                )
                size = BATCH
            else:
                answers = list(
                    channel.stream_stream(MATCH_SERVICE + "MatchBatchStream")(
                        iter(prep.batches[:1]), metadata=metadata, timeout=job.timeout
                    )
                )
                if len(answers) != 1:
                    return [f"batchstream: {len(answers)} answers to 1 message"]
                raw = answers[0]
                size = job.stream_items
            resp = match_pb2.MatchBatchResponse.FromString(raw)
            request = match_pb2.MatchBatchRequest.FromString(prep.batches[0])
            want = prep.batch_refs[0]
            if len(resp.results) != size:
                return [f"{job.mode}: {len(resp.results)} results for {size} items"]
            wrong = [
                p
                for k, r in enumerate(resp.results)
                if (p := _check_one(r, request.items[k].item_id, want.get(k)))
            ]
            matched = sum(r.verdict == match_pb2.VERDICT_MATCH for r in resp.results)
            out = []
            if matched != len(want):
                out.append(f"batch: {matched} items matched, {len(want)} expected")
            if wrong:
                out.append(f"batch: {len(wrong)} wrong results, first {wrong[0]}")
            return out
        # One listed and one unlisted query.
        picks = [prep.single_refs.index(None), next(i for i, r in enumerate(prep.single_refs) if r)]
        if job.mode == "stream":
            answers = list(
                channel.stream_stream(MATCH_SERVICE + "MatchStream")(
                    iter([prep.singles[i] for i in picks]),
                    metadata=metadata,
                    timeout=job.timeout,
                )
            )
        else:
            match = channel.unary_unary(MATCH_SERVICE + "Match")
            answers = [
                match(prep.singles[i], metadata=metadata, timeout=job.timeout) for i in picks
            ]
        if len(answers) != len(picks):
            return [f"{len(answers)} answers to {len(picks)} requests"]
        return [
            p
            for i, raw in zip(picks, answers, strict=True)
            if (
                p := _check_one(
                    match_pb2.MatchResponse.FromString(raw), f"i{i}", prep.single_refs[i]
                )
            )
        ]
    except grpc.RpcError as exc:
        return [f"check call failed: {exc.code().name} {exc.details()}"]


# ---------------------------------------------------------------------------------------
# The client processes


def _fail(done: Outcome, exc: grpc.RpcError) -> None:
    done.errors += 1
    code = exc.code()
    done.codes[code.name if code is not None else "UNKNOWN"] += 1


def _thread(job: Job, prep: Prepared, out: list[Outcome]) -> None:
    metadata = (("authorization", f"Bearer {job.token}"),)
    channel = grpc.insecure_channel(job.address, options=CHANNEL_OPTIONS)
    lat: list[float] = []
    done = Outcome(lat, 0, 0, 0)
    try:
        try:
            grpc.channel_ready_future(channel).result(timeout=10)
        except grpc.FutureTimeoutError:
            done.errors += 1
            done.codes["CONNECT_TIMEOUT"] += 1
            return
        while time.time() < job.start_at:
            time.sleep(0.001)
        measure_from = time.perf_counter() + WARMUP
        end = time.perf_counter() + job.seconds
        if job.mode in ("stream", "batchstream"):
            _stream(channel, metadata, prep, job, measure_from, end, done)
        elif job.mode == "overload":
            assert job.rate_per_thread is not None
            _overload(channel, metadata, prep, job.rate_per_thread, measure_from, end, done)
        else:
            _closed_loop(channel, metadata, prep, job, measure_from, end, done)
    finally:
        channel.close()
        out.append(done)


def _closed_loop(
    channel: grpc.Channel,
    metadata: Metadata,
    prep: Prepared,
    job: Job,
    measure_from: float,
    end: float,
    done: Outcome,
) -> None:
    """Match (or MatchBatch) calls one after the other, paced when the job has a rate."""
    batch = job.mode == "batch"
    call = channel.unary_unary(MATCH_SERVICE + ("MatchBatch" if batch else "Match"))
    payloads = prep.batches if batch else prep.singles
    per_call = BATCH if batch else 1
    timeout = job.timeout
    interval = 1.0 / job.rate_per_thread if job.rate_per_thread else 0.0
    n = len(payloads)
    # Threads of one process start at different places in the requests.
    i = random.Random(job.seed).randrange(n)
    next_at = time.perf_counter()
    perf_counter = time.perf_counter
    while True:
        now = perf_counter()
        if now >= end:
            break
        if interval:
            if now < next_at:
                time.sleep(next_at - now)
            next_at += interval
        i += 1
        t0 = perf_counter()
        try:
            answer = call(payloads[i % n], metadata=metadata, timeout=timeout)
        except grpc.RpcError as exc:
            _fail(done, exc)
            continue
        t1 = perf_counter()
        if not answer:
            done.errors += 1
            done.codes["EMPTY_ANSWER"] += 1
        elif t0 >= measure_from:
            done.latencies.append(t1 - t0)
            done.requests += 1
            done.hashes += per_call


def _stream(
    channel: grpc.Channel,
    metadata: Metadata,
    prep: Prepared,
    job: Job,
    measure_from: float,
    end: float,
    done: Outcome,
) -> None:
    """MatchStream (one item per message) or MatchBatchStream (stream_items per message),
    WINDOW messages in flight."""
    window = threading.Semaphore(WINDOW)
    sent: queue.SimpleQueue[float] = queue.SimpleQueue()
    stop = threading.Event()
    batched = job.mode == "batchstream"
    payloads = prep.batches if batched else prep.singles
    per_message = job.stream_items if batched else 1
    method = "MatchBatchStream" if batched else "MatchStream"

    def requests() -> Iterator[bytes]:
        i = 0
        while not stop.is_set():
            if not window.acquire(timeout=0.1):
                continue
            i += 1
            sent.put(time.perf_counter())
            yield payloads[i % len(payloads)]

    responses = channel.stream_stream(MATCH_SERVICE + method)(
        requests(), metadata=metadata, timeout=job.seconds + 30
    )
    try:
        for answer in responses:
            t1 = time.perf_counter()
            t0 = sent.get()
            window.release()
            if not answer:
                done.errors += 1
                done.codes["EMPTY_ANSWER"] += 1
            elif t0 >= measure_from:
                done.latencies.append(t1 - t0)
                done.requests += 1
                done.hashes += per_message
            if t1 >= end:
                break
    except grpc.RpcError as exc:
        _fail(done, exc)
    finally:
        stop.set()
        responses.cancel()


def _overload(
    channel: grpc.Channel,
    metadata: Metadata,
    prep: Prepared,
    rate: float,
    measure_from: float,
    end: float,
    done: Outcome,
) -> None:
    """Sends Match calls at `rate` per second until `end`, not waiting for answers."""
    lock = threading.Lock()
    outstanding = threading.Semaphore(MAX_OUTSTANDING)
    match = channel.unary_unary(MATCH_SERVICE + "Match")
    payloads = prep.singles

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
                done.codes[code.name] += 1

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
        future = match.future(payloads[i % len(payloads)], metadata=metadata, timeout=30)
        pending.add(future)
        future.add_done_callback(lambda f, t0=due: answered(f, t0))
        due += interval
    for _ in range(MAX_OUTSTANDING):  # wait for the answers still outstanding (<= 30 s)
        outstanding.acquire(timeout=30)


def _client(job: Job, listed: list[bytes]) -> Outcome:
    """One client process: prepares, checks, then runs job.threads threads of calls."""
    prep = _prepare(job, listed)
    metadata = (("authorization", f"Bearer {job.token}"),)
    channel = grpc.insecure_channel(job.address, options=CHANNEL_OPTIONS)
    try:
        problems = _verify(channel, job, prep, metadata)
    finally:
        channel.close()
    outs: list[Outcome] = []
    threads = []
    for t in range(job.threads):
        per_thread = dataclasses.replace(job, seed=job.seed * 1000 + t)
        th = threading.Thread(target=_thread, args=(per_thread, prep, outs))
        th.start()
        threads.append(th)
    while time.time() < job.start_at:
        time.sleep(0.001)
    before = resource.getrusage(resource.RUSAGE_SELF)
    for th in threads:
        th.join()
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    codes: Counter[str] = Counter()
    for o in outs:
        codes.update(o.codes)
    return Outcome(
        [x for o in outs for x in o.latencies],
        sum(o.requests for o in outs),
        sum(o.hashes for o in outs),
        sum(o.errors for o in outs),
        sum(o.refused for o in outs),
        [x for o in outs for x in o.refused_latencies],
        sum(o.cancelled for o in outs),
        codes,
        cpu,
        problems,
    )


# ---------------------------------------------------------------------------------------
# Recovery probe (overload)


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
    rng = random.Random("probe")
    metadata = (("authorization", f"Bearer {token}"),)
    channel = grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
    match = channel.unary_unary(MATCH_SERVICE + "Match")
    payloads = [_single(f"p{k}", rng.randbytes(16)).SerializeToString() for k in range(100)]
    during = refused = 0
    during_latencies: list[float] = []
    streak_from: float | None = None
    streak = 0
    try:
        with contextlib.suppress(grpc.RpcError):
            match(payloads[0], metadata=metadata, timeout=5)
        i = 0
        while time.time() < overload_end + 30:
            i += 1
            t0 = time.perf_counter()
            started = time.time()
            try:
                match(payloads[i % len(payloads)], metadata=metadata, timeout=5)
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


# ---------------------------------------------------------------------------------------
# Idle streams (idle mode), held open by a process of their own


@dataclass
class IdleTenants:
    platform: str  # token of a second platform tenant: MatchStream
    hotline: str  # token of a hotline owning IDLE_LIST: UploadChanges and WatchChanges


@dataclass
class IdleReport:
    opened: Counter[str] = field(default_factory=Counter)
    # Answered once (MatchStream, WatchChanges) within IDLE_CONFIRM_SECONDS.
    confirmed: Counter[str] = field(default_factory=Counter)
    # Streams that ended with an error before the harness closed them: "kind CODE".
    failed: Counter[str] = field(default_factory=Counter)
    error: str = ""


def _idle_process(
    address: str,
    tenants: IdleTenants,
    n: int,
    lifetime: float,
    conn: multiprocessing.connection.Connection,
) -> None:
    try:
        asyncio.run(_idle(address, tenants, n, lifetime, conn))
    except Exception as exc:  # reported, not raised: the parent prints it
        with contextlib.suppress(Exception):
            conn.send(("error", IdleReport(error=f"{type(exc).__name__}: {exc}")))


async def _idle(
    address: str,
    tenants: IdleTenants,
    n: int,
    lifetime: float,
    conn: multiprocessing.connection.Connection,
) -> None:
    deadline = time.monotonic() + lifetime
    report = IdleReport()
    platform_md = (("authorization", f"Bearer {tenants.platform}"),)
    hotline_md = (("authorization", f"Bearer {tenants.hotline}"),)
    probe = _single("idle", os.urandom(16)).SerializeToString()
    watch = lists_pb2.WatchChangesRequest(list=IDLE_LIST, since_version=0).SerializeToString()
    channels: list[grpc.aio.Channel] = []
    calls: list[tuple[str, Any]] = []
    firsts: dict[asyncio.Task[Any], str] = {}

    async def first_answer(call: Any) -> Any:
        await call.write(probe)
        return await call.read()

    try:
        channel: grpc.aio.Channel | None = None
        for i in range(n):
            if i % IDLE_PER_CHANNEL == 0:
                channel = grpc.aio.insecure_channel(
                    address, options=[("grpc.use_local_subchannel_pool", 1)]
                )
                channels.append(channel)
            assert channel is not None
            kind = IDLE_KINDS[i % len(IDLE_KINDS)]
            if kind == "MatchStream":
                call = channel.stream_stream(MATCH_SERVICE + "MatchStream")(
                    metadata=platform_md, timeout=lifetime
                )
                firsts[asyncio.ensure_future(first_answer(call))] = kind
            elif kind == "WatchChanges":
                call = channel.unary_stream(LIST_SERVICE + "WatchChanges")(
                    watch, metadata=hotline_md, timeout=lifetime
                )
                firsts[asyncio.ensure_future(call.read())] = kind
            else:  # UploadChanges: opened, nothing sent; it cannot answer before the end
                call = channel.stream_unary(LIST_SERVICE + "UploadChanges")(
                    metadata=hotline_md, timeout=lifetime
                )
            calls.append((kind, call))
            report.opened[kind] += 1
        if firsts:
            done, _ = await asyncio.wait(list(firsts), timeout=IDLE_CONFIRM_SECONDS)
            for task in done:
                if task.exception() is None and task.result() is not grpc.aio.EOF:
                    report.confirmed[firsts[task]] += 1
        await asyncio.sleep(0.2)  # streams refused at once show as failed
        await _idle_failures(calls, report)
        conn.send(("opened", report))
        while not conn.poll() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        report.failed.clear()
        await _idle_failures(calls, report)
    finally:
        for task in firsts:
            task.cancel()
        for _, call in calls:
            call.cancel()
        for ch in channels:
            await ch.close(grace=None)
        for task in firsts:  # retrieve, so asyncio does not log them
            with contextlib.suppress(BaseException):
                await task
    conn.send(("closed", report))


async def _idle_failures(calls: list[tuple[str, Any]], report: IdleReport) -> None:
    """Counts the streams that already ended (refused or failed), by kind and code."""
    for kind, call in calls:
        if call.done():
            code = await call.code()
            report.failed[f"{kind} {code.name}"] += 1


# ---------------------------------------------------------------------------------------
# CPU of the servers, from /proc


def _cpu_between(before: dict[int, int], after: dict[int, int]) -> float:
    return sum(t - before.get(pid, 0) for pid, t in after.items()) / CLK_TCK


# ---------------------------------------------------------------------------------------
# Cells


@dataclass
class Row:
    server: str
    mode: str  # the mode, with the match rate for batch ("batch 50%")
    rps: float
    hps: float
    p50: float
    p99: float
    p999: float
    errors: int
    client_cpu: float = 0.0  # seconds, all client processes
    server_cpu: float = 0.0  # seconds, all server processes
    seconds: float = 0.0  # wall seconds the CPU was counted over
    attempts: int = 0  # calls made (overload: calls answered)
    codes: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    # Overload only.
    offered: float = 0.0  # calls per second sent
    answered: float = 0.0  # answers per second, OK and refused
    refused_share: float = 0.0
    cancelled_share: float = 0.0
    refused_p99: float = float("nan")
    recovery: Recovery | None = None


@dataclass
class Target:
    address: str
    token: str
    roots: list[int]  # server process ids, for their CPU
    idle: IdleTenants | None = None


def _pct(sorted_lat: list[float], q: float) -> float:
    if not sorted_lat:
        return float("nan")
    return sorted_lat[min(len(sorted_lat) - 1, int(q * len(sorted_lat)))] * 1000


def run_cell(
    pool: multiprocessing.pool.Pool,
    server: str,
    target: Target,
    mode: str,
    args: argparse.Namespace,
    listed: list[bytes],
    rate: float | None = None,
    match_rate: float = 1.0,
    label: str | None = None,
) -> Row:
    threads = {
        "unary": args.unary_threads,
        "half": args.unary_threads,
        "batch": args.batch_threads,
        "stream": args.stream_threads,
        "batchstream": args.stream_threads,
        "overload": 2,
        "idle": 2,
    }
    n = threads[mode] * args.clients
    start_at = time.time() + START_MARGIN
    jobs = [
        Job(
            target.address,
            target.token,
            "unary" if mode in ("half", "idle") else mode,
            start_at,
            args.seconds,
            threads[mode],
            seed=c + 1,
            rate_per_thread=(rate / n) if rate else None,
            match_rate=match_rate,
            stream_items=args.stream_items,
            timeout=IDLE_CALL_TIMEOUT if mode == "idle" else 30.0,
        )
        for c in range(args.clients)
    ]
    probe: list[Recovery] = []
    prober = None
    if mode == "overload":
        # The clients stop issuing calls at about start_at + seconds.
        end = start_at + args.seconds
        prober = threading.Thread(
            target=lambda: probe.append(
                _probe(target.address, target.token, listed, start_at + WARMUP, end)
            ),
            daemon=True,
        )
        prober.start()
    cpu_from: list[tuple[float, dict[int, int]]] = []

    def sample_server_cpu() -> None:
        time.sleep(max(0.0, start_at - time.time()))
        cpu_from.append((time.perf_counter(), process_tree_ticks(target.roots)))

    sampler = threading.Thread(target=sample_server_cpu, daemon=True)
    sampler.start()
    outs = pool.starmap(_client, [(j, listed) for j in jobs])
    sampler.join()
    t_end, server_after = time.perf_counter(), process_tree_ticks(target.roots)
    if prober is not None:
        prober.join(60)
    t_start, server_before = cpu_from[0]
    lat = sorted(x for o in outs for x in o.latencies)
    span = args.seconds - WARMUP
    requests = sum(o.requests for o in outs)
    refused = sum(o.refused for o in outs)
    codes: Counter[str] = Counter()
    for o in outs:
        codes.update(o.codes)
    errors = sum(o.errors for o in outs)
    return Row(
        server,
        label or mode,
        requests / span,
        sum(o.hashes for o in outs) / span,
        _pct(lat, 0.5),
        _pct(lat, 0.99),
        _pct(lat, 0.999),
        errors,
        client_cpu=sum(o.cpu for o in outs),
        server_cpu=_cpu_between(server_before, server_after),
        seconds=t_end - t_start,
        attempts=requests + errors,
        codes=codes,
        problems=[p for o in outs for p in o.problems],
        offered=rate or 0.0,
        answered=len(lat) / span,
        refused_share=refused / max(len(lat), 1),
        cancelled_share=sum(o.cancelled for o in outs) / max(len(lat), 1),
        refused_p99=_pct(sorted(x for o in outs for x in o.refused_latencies), 0.99),
        recovery=probe[0] if probe else None,
    )


@dataclass
class IdleRow:
    server: str
    streams: int
    base: Row
    loaded: Row
    opened: IdleReport
    closed: IdleReport | None

    @property
    def ratio(self) -> float:
        return self.loaded.p99 / self.base.p99 if self.base.p99 else float("nan")


def run_idle(
    pool: multiprocessing.pool.Pool,
    server: str,
    target: Target,
    args: argparse.Namespace,
    listed: list[bytes],
) -> IdleRow:
    """The measured tenant's unary latency without, then with, another tenant's idle streams."""
    assert target.idle is not None
    base = run_cell(pool, server, target, "idle", args, listed, args.idle_rate, label="idle 0")
    ctx = multiprocessing.get_context("spawn")
    ours_end, theirs_end = ctx.Pipe()
    lifetime = args.seconds + START_MARGIN + IDLE_CONFIRM_SECONDS + 60
    holder = ctx.Process(
        target=_idle_process,
        args=(target.address, target.idle, args.idle_streams, lifetime, theirs_end),
        daemon=True,
    )
    holder.start()
    opened = IdleReport(error="the idle process did not report")
    closed: IdleReport | None = None
    try:
        if ours_end.poll(IDLE_CONFIRM_SECONDS + 30):
            _, opened = ours_end.recv()
        label = f"idle {args.idle_streams}"
        loaded = run_cell(pool, server, target, "idle", args, listed, args.idle_rate, label=label)
    finally:
        with contextlib.suppress(OSError):
            ours_end.send("stop")
        if not opened.error and ours_end.poll(60):
            _, closed = ours_end.recv()
        holder.join(30)
        if holder.is_alive():
            holder.terminate()
            holder.join(5)
    return IdleRow(server, args.idle_streams, base, loaded, opened, closed)


# ---------------------------------------------------------------------------------------
# Servers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _hashmatch_exe() -> str:
    exe = shutil.which("hashmatch", path=str(Path(sys.executable).parent))
    assert exe is not None, "hashmatch is not installed next to this Python"
    return exe


def _add_tenant(data: Path, name: str, role: str) -> str:
    """`hashmatch admin add-tenant --create` (the folder may hold no store yet); its last
    line of output is the token."""
    command = [_hashmatch_exe(), "admin", "add-tenant", name, "--role", role, "--create"]
    done = subprocess.run(
        [*command, "--data-dir", str(data)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def ours(workers: int, root: Path, listed: list[bytes]) -> Iterator[Target]:
    data = root / f"ours-{workers}"
    platform = _add_tenant(data, "bench-platform", "platform")
    hotline = _add_tenant(data, "bench-hotline", "hotline")
    idle = IdleTenants(
        _add_tenant(data, "idle-platform", "platform"),
        _add_tenant(data, "idle-hotline", "hotline"),
    )
    log = (root / f"ours-{workers}.log").open("w")
    command = [_hashmatch_exe(), "serve", "--data-dir", str(data), "--listen", "127.0.0.1:0"]
    command += ["--workers", str(workers), "--log-format", "json"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("hashmatch serving on "), line
        address = line.split()[-1]
        # Flood quarantine off: the benchmark matches the same references over and over.
        no_flood = lists_pb2.FloodPolicy(factor=0)
        with ListClient(Connection(server=address, token=hotline, retry=RetryPolicy(1))) as lc:
            lc.create_list(LIST_NAME, flood=no_flood)
            lc.apply_changes(
                LIST_NAME,
                "b1",
                [Change(make_hash(MD5, v), _ref(i)) for i, v in enumerate(listed)],
            )
        with ListClient(Connection(server=address, token=idle.hotline, retry=RetryPolicy(1))) as lc:
            lc.create_list(IDLE_LIST, flood=no_flood)
            lc.apply_changes(IDLE_LIST, "i1", [Change(make_hash(MD5, os.urandom(16)), "idle-1")])
        time.sleep(0.3)  # every worker follows the change log within its poll interval
        yield Target(address, platform, [proc.pid], idle)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextlib.contextmanager
def bare(workers: int, listed: list[bytes]) -> Iterator[Target]:
    port = _free_port()
    procs = floor.start(port, workers, {v: _ref(i) for i, v in enumerate(listed)})
    try:
        yield Target(f"127.0.0.1:{port}", "none", [p.pid for p in procs if p.pid is not None])
    finally:
        for p in procs:
            if p.pid is not None:
                os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            p.join(30)


# ---------------------------------------------------------------------------------------
# Report


def _cpu(seconds: float, span: float) -> str:
    return f"{seconds:.2f} s ({seconds / span:.2f})" if span > 0 else f"{seconds:.2f} s"


def _codes(codes: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in codes.most_common())


def _print_cell(row: Row) -> None:
    extra = ""
    if row.recovery is not None:
        extra = (
            f"  offered {row.offered:.0f}/s"
            f"  refused {row.refused_share:.0%} (p99 {row.refused_p99:.2f} ms)"
            f"  cancelled {row.cancelled_share:.0%}"
            f"  probe p99 {row.recovery.probe_p99_during:.2f} ms"
            f"  recovered in {row.recovery.seconds:.2f} s"
        )
    if row.codes:
        extra += f"  ({_codes(row.codes)})"
    if row.problems:
        extra += f"  CHECK FAILED: {row.problems[0]}"
    print(
        f"{row.server:13} {row.mode:10} {row.rps:9.0f} req/s {row.hps:11.0f} hashes/s"
        f"  p50 {row.p50:7.2f}  p99 {row.p99:7.2f}  p999 {row.p999:7.2f} ms"
        f"  cpu client {row.client_cpu:5.2f} s server {row.server_cpu:5.2f} s"
        f"  errors {row.errors}{extra}",
        file=sys.stderr,
        flush=True,
    )


def _workers_of(server: str) -> str:
    return server.split()[1]


def report(
    args: argparse.Namespace, rows: list[Row], idles: list[IdleRow], rates: list[float]
) -> None:
    cores = os.cpu_count() or 1
    print(
        f"\n{cores} cores; {args.clients} client processes; {args.seconds} s per cell. "
        "CPU: user+sys seconds over the cell (in brackets: cores busy on average); "
        f"the box has {cores} cores for clients and servers together.\n"
    )
    floor_of = {(_workers_of(r.server), r.mode): r for r in rows if r.server.startswith("floor")}
    plain = [r for r in rows if r.mode != "overload"]
    if plain:
        print(
            "| server | mode | requests/s | hashes/s | p50 ms | p99 ms | p999 ms | vs floor "
            "| client CPU | server CPU | errors | check |"
        )
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in plain:
        base = floor_of.get((_workers_of(r.server), r.mode))
        ratio = f"{r.hps / base.hps:.2f}x" if base and base is not r and base.hps else ""
        print(
            f"| {r.server} | {r.mode} | {r.rps:,.0f} | {r.hps:,.0f} | {r.p50:.2f} | "
            f"{r.p99:.2f} | {r.p999:.2f} | {ratio} | {_cpu(r.client_cpu, r.seconds)} | "
            f"{_cpu(r.server_cpu, r.seconds)} | {r.errors} | "
            f"{'ok' if not r.problems else 'FAILED: ' + r.problems[0]} |"
        )

    ours_rows = {(_workers_of(r.server), r.mode): r for r in rows if r.server.startswith("hash")}
    batch_cells = [
        (w, rate, o, floor_of.get((w, o.mode)))
        for w in dict.fromkeys(_workers_of(r.server) for r in rows)
        for rate in rates
        if (o := ours_rows.get((w, f"batch {rate:g}%"))) is not None
    ]
    if batch_cells:
        print(f"\nMatchBatch of {BATCH:,} MD5 items, the listed share each a distinct reference\n")
        print(
            "| workers | match rate | hashmatch hashes/s | floor hashes/s | ratio "
            "| client CPU ours / floor | server CPU ours / floor |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for w, rate, o, f in batch_cells:
            fh = f"{f.hps:,.0f}" if f else ""
            ratio = f"{o.hps / f.hps:.2f}x" if f and f.hps else ""
            ccpu = f"{_cpu(o.client_cpu, o.seconds)} / " + (
                _cpu(f.client_cpu, f.seconds) if f else ""
            )
            scpu = f"{_cpu(o.server_cpu, o.seconds)} / " + (
                _cpu(f.server_cpu, f.seconds) if f else ""
            )
            print(f"| {w} | {rate:g} % | {o.hps:,.0f} | {fh} | {ratio} | {ccpu} | {scpu} |")

    overloads = [r for r in rows if r.mode == "overload"]
    if overloads:
        print(
            f"\nOverload: Match offered at {args.overload_factor:g}x the unary rate measured "
            "before it, open loop\n"
        )
        print(
            "| server | offered/s | answers/s | OK/s | refused | cancelled by core | "
            "p99 refused ms | p99 all ms | "
            "probe refused | probe p99 ms | recovered after s | client CPU | server CPU |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
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
                f"{r.p99:.2f} | {recovery} | {_cpu(r.client_cpu, r.seconds)} | "
                f"{_cpu(r.server_cpu, r.seconds)} |"
            )

    if idles:
        print(
            f"\nIdle streams: one tenant's Match at {args.idle_rate:g} calls/s "
            f"({IDLE_CALL_TIMEOUT:g} s deadline), without and with another tenant's idle "
            "streams (a third each MatchStream, UploadChanges, WatchChanges)\n"
        )
        print(
            "| server | idle streams | p50 ms | p99 ms | p99 vs baseline | calls failed "
            "| streams opened | answered once | streams failed | server CPU |"
        )
        print("|---|---:|---:|---:|---:|---:|---|---|---|---:|")
        for i in idles:
            for r, streams in ((i.base, 0), (i.loaded, i.streams)):
                failed = f"{r.errors} of {r.attempts}"
                if r.codes:
                    failed += f" ({_codes(r.codes)})"
                if r.problems:
                    failed += f"; check: {r.problems[0]}"
                if streams:
                    rep = i.closed or i.opened
                    opened = _codes(i.opened.opened) + (
                        f" ERROR {i.opened.error}" if i.opened.error else ""
                    )
                    confirmed = _codes(i.opened.confirmed) or "none"
                    died = _codes(rep.failed) or "none"
                    ratio = f"{i.ratio:.2f}x" if math.isfinite(i.ratio) else "n/a"
                else:
                    opened = confirmed = died = ratio = ""
                print(
                    f"| {r.server} | {streams} | {r.p50:.2f} | {r.p99:.2f} | {ratio} | "
                    f"{failed} | {opened} | {confirmed} | {died} | "
                    f"{_cpu(r.server_cpu, r.seconds)} |"
                )

    checks = _targets(rows, idles, rates)
    if checks:
        print("\nTargets (hashmatch)\n")
        print("| workers | target | measured | met |")
        print("|---|---|---|---|")
        for w, what, measured, met in checks:
            print(f"| {w} | {what} | {measured} | {'yes' if met else 'NO'} |")


def _targets(
    rows: list[Row], idles: list[IdleRow], rates: list[float]
) -> list[tuple[str, str, str, bool]]:
    out: list[tuple[str, str, str, bool]] = []
    get = {(r.server, r.mode): r for r in rows}
    for w in dict.fromkeys(_workers_of(r.server) for r in rows):
        o, f = f"hashmatch {w}", f"floor {w}"
        for rate in rates:
            mode = f"batch {rate:g}%"
            if (a := get.get((o, mode))) and (b := get.get((f, mode))) and b.hps:
                ok = a.hps >= 2 * b.hps and not a.errors and not a.problems
                out.append((w, f"{mode} >= 2x floor", f"{a.hps / b.hps:.2f}x", ok))
        if (a := get.get((o, "unary"))) and (b := get.get((f, "unary"))) and b.hps:
            ok = a.hps >= b.hps and not a.errors and not a.problems
            out.append((w, "unary >= 1.0x floor", f"{a.hps / b.hps:.2f}x", ok))
        if (a := get.get((o, "stream"))) and (b := get.get((o, "unary"))) and b.rps:
            ok = a.rps >= 3 * b.rps and not a.errors and not a.problems
            out.append((w, "stream >= 3x unary", f"{a.rps / b.rps:.2f}x", ok))
        if (a := get.get((o, "batchstream"))) and (b := get.get((o, "unary"))) and b.hps:
            ok = a.hps >= 3 * b.hps and not a.errors and not a.problems
            out.append((w, "batchstream >= 3x unary", f"{a.hps / b.hps:.2f}x", ok))
        if (a := get.get((o, "overload"))) and a.recovery is not None:
            ok = a.refused_p99 <= 50.0 and a.refused_share > 0
            out.append((w, "overload refusals p99 <= 50 ms", f"{a.refused_p99:.2f} ms", ok))
            ok = a.recovery.seconds <= 5.0
            out.append((w, "overload recovery <= 5 s", f"{a.recovery.seconds:.2f} s", ok))
    for i in idles:
        w = _workers_of(i.server)
        ok = i.ratio <= 1.2 and not i.loaded.errors and not i.base.errors
        ratio = f"{i.ratio:.2f}x" if math.isfinite(i.ratio) else "no call answered"
        measured = f"{ratio}, {i.loaded.errors} of {i.loaded.attempts} calls failed"
        out.append((w, f"{i.streams} idle streams: p99 <= 1.2x, no failures", measured, ok))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join((__doc__ or "").split("\n\n")[1:]),
    )
    parser.add_argument("--seconds", type=float, default=2.5, help="per cell (0.5-10)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--modes", nargs="+", default=list(ALL_MODES), choices=ALL_MODES)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    # Each thread has its own connection; with 2 workers the kernel spreads connections
    # over the processes at random (SO_REUSEPORT), so a few connections may all land on one.
    parser.add_argument("--unary-threads", type=int, default=4, help="threads per client")
    parser.add_argument("--batch-threads", type=int, default=4, help="threads per client")
    parser.add_argument("--stream-threads", type=int, default=4, help="streams per client")
    parser.add_argument(
        "--stream-items",
        type=int,
        default=100,
        help="batchstream: items per message (1-10000)",
    )
    parser.add_argument(
        "--match-rates",
        default="0,1,50,100",
        help="batch: percentages of listed items, comma-separated (one cell each)",
    )
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
    parser.add_argument(
        "--idle-streams", type=int, default=300, help="idle: streams the idle tenants open"
    )
    parser.add_argument(
        "--idle-rate", type=float, default=500.0, help="idle: the measured tenant's calls/s"
    )
    args = parser.parse_args()
    args.seconds = min(max(args.seconds, 0.5), 10.0)
    args.idle_streams = min(max(args.idle_streams, 0), 3000)
    args.stream_items = min(max(args.stream_items, 1), 10_000)
    for name in ("clients", "unary_threads", "batch_threads", "stream_threads"):
        setattr(args, name, min(max(getattr(args, name), 1), 64))
    try:
        rates = [float(x) for x in args.match_rates.split(",") if x.strip()]
    except ValueError:
        parser.error("--match-rates: comma-separated percentages")
    if any(not 0 <= r <= 100 for r in rates):
        parser.error("--match-rates: each between 0 and 100")
    modes = [m for m in ALL_MODES if m in args.modes]
    rng = random.Random(1)  # the same list for every server
    listed = [rng.randbytes(16) for _ in range(LISTED)]
    rows: list[Row] = []
    idles: list[IdleRow] = []
    ctx = multiprocessing.get_context("spawn")
    with (
        tempfile.TemporaryDirectory(prefix="hashmatch-load-") as tmp,
        ctx.Pool(args.clients) as pool,
    ):
        for workers in args.workers:
            servers: list[tuple[str, Callable[[], contextlib.AbstractContextManager[Target]]]]
            servers = [
                (f"floor x{workers}", functools.partial(bare, workers, listed)),
                (f"hashmatch x{workers}", functools.partial(ours, workers, Path(tmp), listed)),
            ]
            for name, start in servers:
                is_floor = name.startswith("floor")
                # The floor has no admission limit (overload: it only queues) and no list
                # service (idle).
                todo = [m for m in modes if not (is_floor and m in ("overload", "idle"))]
                if not todo:
                    continue
                with start() as target:
                    unary_rate = None
                    for mode in todo:
                        if mode == "idle":
                            idle = run_idle(pool, name, target, args, listed)
                            idles.append(idle)
                            _print_cell(idle.base)
                            _print_cell(idle.loaded)
                            print(
                                f"{'':13} idle streams opened {_codes(idle.opened.opened)}, "
                                f"answered once {_codes(idle.opened.confirmed) or 'none'}, "
                                "failed "
                                f"{_codes((idle.closed or idle.opened).failed) or 'none'}"
                                f"{' ERROR ' + idle.opened.error if idle.opened.error else ''}",
                                file=sys.stderr,
                                flush=True,
                            )
                            continue
                        cells: list[tuple[float | None, float, str]]
                        if mode == "batch":
                            cells = [(None, r, f"batch {r:g}%") for r in rates]
                        elif mode == "half":
                            if not unary_rate:
                                continue
                            cells = [(unary_rate / 2, 1.0, mode)]
                        elif mode == "overload":
                            rate = (
                                unary_rate * args.overload_factor
                                if unary_rate
                                else args.overload_rate
                            )
                            cells = [(rate, 1.0, mode)]
                        else:
                            cells = [(None, 1.0, mode)]
                        for rate, match_rate, label in cells:
                            row = run_cell(
                                pool, name, target, mode, args, listed, rate, match_rate, label
                            )
                            if mode == "unary":
                                unary_rate = row.rps
                            rows.append(row)
                            _print_cell(row)
    report(args, rows, idles, rates)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

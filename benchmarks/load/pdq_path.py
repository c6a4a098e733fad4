"""PDQ through the whole service path against the in-process core and against threatexchange.

For each list size N in ``--entries`` this measures, in one run and on the same data:

1. **Service**: a real ``hashmatch serve`` (subprocess, ``--workers W``, loopback) holding
   one list of N random PDQ hashes, bulk-loaded through UploadChanges (batches of
   ``--batch`` entries; the load is timed). One MatchBatch of 1,000 PDQ items (one hash
   each, quality 100) is serialized once up front and sent as raw bytes, one call at a time,
   for ``--seconds`` in all. Service time per query = wall time of one batch / 1,000; the
   p50 of the batches is reported, with the server's CPU (utime+stime of the server process
   and its children, from /proc) and this client's CPU over the same windows, so the reader
   sees whether the client was the limit.
2. **Core**: the same N hashes in an in-process ``hashmatch.server._hashcore.Index``
   (list 1, threshold 31, no minimum quality; built while the server sits idle), the same
   1,000 queries timed through ``Index.match_batch``. Service and core are timed in
   ``--rounds`` alternating rounds, never at the same time (the server gets no call while
   the core runs; its CPU meanwhile is reported), each core round as many batches as the
   service round before it (and at most as long), so a change in the load other users put
   on the shared machine hits both alike. The ratio service / core is the issue's target
   (at most 1.5x). A third round type times ``Index.match_request`` + ``Verdicts.encode``
   on the very request bytes the service gets (the core's part of the server's handler),
   and CPU µs per query of the server, ``match_batch`` and ``match_request`` are printed,
   to show where a gap comes from (gRPC and the Python around the core, or the core).
3. **Peer**: threatexchange's ``PDQIndex`` (what HMA runs; FAISS multi-hash behind hex
   strings), through the adapter in ``benchmarks/core/peers.py``, built on the same hashes
   (on the first ``--peer-max`` of them when N is larger: the table says so) and queried
   one hash at a time with the same queries (for at most ``--seconds``), after the server
   stopped and the core index was dropped. End-to-end ratio =
   peer µs/query / service µs/query (goal: at least 10x). Skipped with a message when
   threatexchange is not importable (``pip install threatexchange`` into the venv).

Data (fixed seed): N uniformly random 256-bit hashes (rows with fewer than 16 or more than
240 set bits, which the server refuses as degenerate, are redrawn), reference IDs
``r000000000``...; 1,000 queries alternating a near-duplicate of a random listed entry
(0-20 random bits flipped) and a random hash. Correctness is checked outside the timing:
the MATCH verdicts of one decoded response, and the queries the core and the peer report,
must equal the brute-force answer (numpy popcount over every entry, chunked), and every
near-duplicate must name the entry it was made from; one response per service round is
checked again (untimed), so a tenant refused mid-run (probe detection, rate limits) shows.

Tenants are created with ``hashmatch admin add-tenant``, the list with the client SDK
(flood quarantine off, threshold 31); the upload batches are encoded with numpy and
checked once against the SDK's ``build_batch``. Loopback only; every loop is bounded;
the server is stopped (SIGTERM, then SIGKILL) and the temporary folder removed at the end.

    .venv/bin/python benchmarks/load/pdq_path.py                       # 1 M, about 1 minute
    .venv/bin/python benchmarks/load/pdq_path.py --entries 1000000,10000000  # ~5-7 min
    .venv/bin/python benchmarks/load/pdq_path.py --entries 100000 --seconds 3 --no-peer
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np

from hashmatch.client.connection import Connection, RetryPolicy
from hashmatch.client.list_client import Change, ListClient, build_batch
from hashmatch.server import _hashcore
from hashmatch.v1 import hashes_pb2, lists_pb2, match_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proc_cpu import process_tree_ticks

PDQ = 4
THRESHOLD = 31
QUERIES = 1000
MAX_FLIPS = 20
LIST_NAME = "bench"
SEED = 20240601
MATCH_BATCH = "/hashmatch.v1.MatchService/MatchBatch"
UPLOAD_CHANGES = "/hashmatch.v1.ListService/UploadChanges"
CLK_TCK = os.sysconf("SC_CLK_TCK")
CORE_BENCH = Path(__file__).resolve().parents[1] / "core"

# One upsert on the wire, fixed width: ApplyChangesRequest.upserts (field 3) holding an
# Entry of hash (field 1: Hash{algorithm=PDQ, value=32 bytes}) and reference_id (field 2,
# "r" + 9 digits).
REF_DIGITS = 9
_HASH_MSG = bytes([0x08, PDQ, 0x12, 32])  # then the 32-byte value
_ENTRY_LEN = 2 + len(_HASH_MSG) + 32 + 2 + 1 + REF_DIGITS
_RECORD_LEN = 2 + _ENTRY_LEN


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Data


def popcounts(rows: np.ndarray) -> np.ndarray:
    """Set bits per 32-byte row."""
    return np.bitwise_count(rows.view("<u8")).sum(axis=1, dtype=np.int64)


def degenerate(rows: np.ndarray) -> np.ndarray:
    bits = popcounts(rows)
    return (bits < 16) | (bits > 240)


@dataclasses.dataclass
class Data:
    entries: np.ndarray  # (n, 32) uint8
    queries: np.ndarray  # (QUERIES, 32) uint8
    source: np.ndarray  # (QUERIES,) the entry a near-duplicate was made from, -1 if random


def make_data(n: int, seed: int) -> Data:
    rng = np.random.default_rng(seed)
    entries = rng.integers(0, 256, size=(n, 32), dtype=np.uint8)
    for _ in range(100):
        bad = np.flatnonzero(degenerate(entries))
        if not len(bad):
            break
        entries[bad] = rng.integers(0, 256, size=(len(bad), 32), dtype=np.uint8)
    queries = np.empty((QUERIES, 32), dtype=np.uint8)
    source = np.full(QUERIES, -1, dtype=np.int64)
    for i in range(QUERIES):
        while True:
            if i % 2 == 0:  # near-duplicate of a listed entry
                j = int(rng.integers(0, n))
                q = entries[j].copy()
                flips = rng.choice(256, size=int(rng.integers(0, MAX_FLIPS + 1)), replace=False)
                for bit in flips:
                    q[bit // 8] ^= np.uint8(1 << (bit % 8))
                source[i] = j
            else:
                q = rng.integers(0, 256, size=32, dtype=np.uint8)
            if not degenerate(q[None, :])[0]:
                queries[i] = q
                break
    return Data(entries, queries, source)


def brute_force(entries: np.ndarray, queries: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """Per query, whether some entry is within THRESHOLD bits (linear scan, bounded memory)."""
    e64 = entries.view("<u8")
    q64 = queries.view("<u8")
    hit = np.zeros(len(queries), dtype=bool)
    x = np.empty(chunk, dtype=np.uint64)
    a = np.empty(chunk, dtype=np.uint8)
    b = np.empty(chunk, dtype=np.uint8)
    total = np.empty(chunk, dtype=np.uint16)
    for start in range(0, len(entries), chunk):
        cols = [np.ascontiguousarray(e64[start : start + chunk, k]) for k in range(4)]
        m = len(cols[0])
        xs, as_, bs, ts = x[:m], a[:m], b[:m], total[:m]
        for qi in np.flatnonzero(~hit):
            q = q64[qi]
            np.bitwise_xor(cols[0], q[0], out=xs)
            np.bitwise_count(xs, out=as_)
            np.copyto(ts, as_)
            for k in (1, 2, 3):
                np.bitwise_xor(cols[k], q[k], out=xs)
                np.bitwise_count(xs, out=bs)
                ts += bs
            if ts.min() <= THRESHOLD:
                hit[qi] = True
    return hit


def ref_ids(start: int, stop: int) -> np.ndarray:
    """(stop-start, 1+REF_DIGITS) uint8: "r" and the zero-padded index, ASCII."""
    idx = np.arange(start, stop, dtype=np.int64)
    out = np.empty((len(idx), 1 + REF_DIGITS), dtype=np.uint8)
    out[:, 0] = ord("r")
    for d in range(REF_DIGITS):
        out[:, REF_DIGITS - d] = (idx // 10**d) % 10 + ord("0")
    return out


def ref_id(i: int) -> str:
    return f"r{i:0{REF_DIGITS}d}"


def encode_batch(entries: np.ndarray, start: int, stop: int, batch_id: str) -> bytes:
    """An ApplyChangesRequest upserting entries[start:stop], as wire bytes."""
    m = stop - start
    rec = np.empty((m, _RECORD_LEN), dtype=np.uint8)
    rec[:, 0] = 0x1A  # field 3 (upserts), length-delimited
    rec[:, 1] = _ENTRY_LEN
    rec[:, 2] = 0x0A  # Entry.hash
    rec[:, 3] = len(_HASH_MSG) + 32
    rec[:, 4:8] = np.frombuffer(_HASH_MSG, dtype=np.uint8)
    rec[:, 8:40] = entries[start:stop]
    rec[:, 40] = 0x12  # Entry.reference_id
    rec[:, 41] = 1 + REF_DIGITS
    rec[:, 42:] = ref_ids(start, stop)
    head = lists_pb2.ApplyChangesRequest(list=LIST_NAME, batch_id=batch_id).SerializeToString()
    return head + rec.tobytes()


def check_encoding(entries: np.ndarray) -> None:
    """The numpy encoding parses to what the SDK's build_batch builds."""
    m = min(len(entries), 1000)
    changes = [
        Change(hashes_pb2.Hash(algorithm=PDQ, value=entries[i].tobytes()), ref_id(i))
        for i in range(m)
    ]
    want = build_batch(LIST_NAME, "b000000", changes)
    got = lists_pb2.ApplyChangesRequest.FromString(encode_batch(entries, 0, m, "b000000"))
    assert got == want, "numpy-encoded upload batch differs from build_batch"


def match_request(queries: np.ndarray) -> bytes:
    req = match_pb2.MatchBatchRequest()
    for i, q in enumerate(queries):
        req.items.add(
            item_id=f"q{i}",
            hashes=[hashes_pb2.Hash(algorithm=PDQ, value=q.tobytes(), quality=100)],
        )
    return req.SerializeToString()


# ---------------------------------------------------------------------------------------
# Server


def _hashmatch_exe() -> str:
    exe = shutil.which("hashmatch", path=str(Path(sys.executable).parent))
    if exe is None:
        exe = shutil.which("hashmatch")
    assert exe is not None, "hashmatch is not installed next to this Python"
    return exe


def add_tenant(data: Path, name: str, role: str) -> str:
    """`hashmatch admin add-tenant`; the last line it prints is the token. On a fresh data
    folder, builds that want the store created first are asked to with ``--create``."""
    command = [_hashmatch_exe(), "admin", "add-tenant", name, "--role", role]
    command += ["--data-dir", str(data)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if done.returncode != 0 and "--create" in done.stderr:
        done = subprocess.run([*command, "--create"], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return done.stdout.strip().splitlines()[-1]


@dataclasses.dataclass
class Server:
    address: str
    pid: int
    hotline: str
    platform: str
    log_path: Path


@contextlib.contextmanager
def serve(root: Path, workers: int) -> Iterator[Server]:
    data = root / "data"
    hotline = add_tenant(data, "bench-hotline", "hotline")
    platform = add_tenant(data, "bench-platform", "platform")
    log_path = root / "server.log"
    command = [_hashmatch_exe(), "serve", "--data-dir", str(data), "--listen", "127.0.0.1:0"]
    command += ["--workers", str(workers), "--log-format", "json"]
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log_file, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the server is up (or exits)
        if not line.startswith("hashmatch serving on "):
            raise RuntimeError(f"server did not start: {line!r}; log:\n{_tail(log_path)}")
        yield Server(line.split()[-1], proc.pid, hotline, platform, log_path)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def proc_ticks(root: int) -> int:
    """utime+stime (clock ticks) of `root` and all its descendants now alive."""
    return sum(process_tree_ticks([root]).values())


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclasses.dataclass
class Window:
    """Wall seconds and the CPU seconds of server and client over one measured window."""

    wall: float = 0.0
    server: float = 0.0
    client: float = 0.0


@contextlib.contextmanager
def cpu_window(server_pid: int) -> Iterator[Window]:
    w = Window()
    s0, c0, t0 = proc_ticks(server_pid), self_cpu(), time.perf_counter()
    try:
        yield w
    finally:
        w.wall = time.perf_counter() - t0
        w.server = (proc_ticks(server_pid) - s0) / CLK_TCK
        w.client = self_cpu() - c0


# ---------------------------------------------------------------------------------------
# Measurements


def timed(fn: Callable[[], object], seconds: float, min_reps: int, max_reps: int) -> list[float]:
    """Wall seconds of each call: at least min_reps, then until `seconds` or max_reps."""
    out: list[float] = []
    start = time.perf_counter()
    while len(out) < max_reps and (len(out) < min_reps or time.perf_counter() - start < seconds):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


@dataclasses.dataclass
class Result:
    entries: int
    workers: int
    load_s: float = float("nan")
    load_server_cpu: float = float("nan")
    service_us: float = float("nan")
    service_reps: int = 0
    win: Window = dataclasses.field(default_factory=Window)
    core_us: float = float("nan")
    core_reps: int = 0
    peer_us: float = float("nan")
    peer_entries: int = 0
    peer_queries: int = 0
    peer_note: str = ""
    matches: int = 0
    checks: list[str] = dataclasses.field(default_factory=list)
    idle_server_cpu: float = 0.0  # the server's CPU seconds while the core was timed
    core_wall: float = 0.0  # wall seconds of the match_batch rounds
    idle_wall: float = 0.0  # wall seconds of all in-process rounds (the server idle)
    core_cpu: float = 0.0  # this process's CPU seconds while match_batch was timed
    wire_us: float = float("nan")  # Index.match_request + encode on the request bytes
    wire_reps: int = 0
    wire_cpu: float = 0.0
    # The machine's 1-minute load average as each measurement began (others share it).
    loads: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.service_us / self.core_us

    @property
    def peer_ratio(self) -> float:
        return self.peer_us / self.service_us


def load_list(server: Server, data: Data, batch: int, res: Result) -> None:
    no_flood = lists_pb2.FloodPolicy(factor=0)  # the same references match over and over
    conn = Connection(server=server.address, token=server.hotline, retry=RetryPolicy(1))
    with ListClient(conn) as lc:
        lc.create_list(LIST_NAME, pdq_threshold=THRESHOLD, flood=no_flood)
    n = len(data.entries)
    starts = list(range(0, n, batch))

    def batches() -> Iterator[bytes]:
        for k, s in enumerate(starts):
            yield encode_batch(data.entries, s, min(s + batch, n), f"b{k:06d}")

    md = conn.metadata()
    with grpc.insecure_channel(server.address, options=conn.channel_options()) as channel:
        upload = channel.stream_unary(
            UPLOAD_CHANGES,
            request_serializer=None,
            response_deserializer=lists_pb2.UploadChangesResponse.FromString,
        )
        with cpu_window(server.pid) as w:
            resp = upload(batches(), metadata=md, timeout=3600)
    res.load_s, res.load_server_cpu = w.wall, w.server
    if resp.upserted != n or resp.batches_applied != len(starts):
        raise RuntimeError(f"upload applied {resp.batches_applied} batches, {resp.upserted} rows")
    log(
        f"loaded {n:,} entries in {w.wall:.1f} s ({n / w.wall:,.0f}/s; server CPU "
        f"{w.server:.1f} s, client CPU {w.client:.1f} s), list version {resp.version}"
    )


def check_response(raw: bytes, data: Data, expected: np.ndarray) -> str | None:
    """None when the verdicts equal the brute force and near-duplicates name their source."""
    resp = match_pb2.MatchBatchResponse.FromString(raw)
    if len(resp.results) != QUERIES:
        return f"{len(resp.results)} results for {QUERIES} items"
    errors = [r for r in resp.results if r.HasField("error")]
    if errors:
        return f"{len(errors)} items answered an error, e.g. {errors[0].error.message!r}"
    got = np.array([r.verdict == match_pb2.VERDICT_MATCH for r in resp.results])
    if not np.array_equal(got, expected):
        return f"{int(got.sum())} MATCH verdicts, brute force says {int(expected.sum())}"
    for i, r in enumerate(resp.results):
        src = data.source[i]
        if r.item_id != f"q{i}":
            return f"result {i} has item_id {r.item_id!r}"
        if src >= 0 and ref_id(int(src)) not in {x.reference_id for x in r.references}:
            return f"near-duplicate q{i} does not name {ref_id(int(src))}"
    return None


class ServiceBench:
    """The pre-serialized MatchBatch of the 1,000 queries, sent as raw bytes on one channel."""

    def __init__(self, server: Server, data: Data) -> None:
        self.request = match_request(data.queries)
        self.md = (("authorization", f"Bearer {server.platform}"),)
        self.channel = grpc.insecure_channel(server.address, options=Connection().channel_options())
        self.call = self.channel.unary_unary(
            MATCH_BATCH, request_serializer=None, response_deserializer=None
        )

    def send(self) -> bytes:
        raw: bytes = self.call(self.request, metadata=self.md, timeout=30)
        return raw

    def once(self) -> None:
        if not self.send():
            raise RuntimeError("empty MatchBatch response")

    def check(self, data: Data, expected: np.ndarray) -> str:
        """Outside the timing: the answer is right (retried briefly: other workers follow
        the change log within their poll interval)."""
        problem: str | None = "not checked"
        for _ in range(50):
            problem = check_response(self.send(), data, expected)
            if problem is None:
                return "ok"
            time.sleep(0.2)
        return problem or "ok"


class CoreBench:
    """The same entries in an in-process ``_hashcore.Index``; the same queries.

    ``once``: ``Index.match_batch`` (the core figure). ``wire_once``: ``Index.match_request``
    on the very MatchBatchRequest bytes the service gets, plus ``Verdicts.encode`` (what the
    server's handler calls), to tell the cost of that path from gRPC's and Python's. The
    entries carry their reference IDs for it (``match_batch`` ignores them)."""

    TENANT = "bench-platform"

    def __init__(self, data: Data, request: bytes) -> None:
        n = len(data.entries)
        t0 = time.perf_counter()
        self.index = _hashcore.Index()
        self.index.configure_list(1, THRESHOLD, 0, LIST_NAME)
        ends = (np.arange(1, n + 1, dtype=np.int64) * (1 + REF_DIGITS)).astype("<u4")
        self.index.apply(
            1,
            bytes([PDQ]) * n,
            data.entries.tobytes(),
            np.arange(n, dtype="<u8").tobytes(),
            b"",
            b"",
            ends.tobytes(),
            ref_ids(0, n).tobytes(),
        )
        self.index.set_list_state(1, 1, [])
        self.index.compact()
        self.request = request
        self.build_s = time.perf_counter() - t0
        self.args = (
            bytes([PDQ]) * QUERIES,
            data.queries.tobytes(),
            b"\xff" * QUERIES,  # quality unknown: passes every minimum
            b"\xff" * QUERIES,  # the list's threshold
        )

    def once(self) -> list[tuple[int, int, int]]:
        return self.index.match_batch(*self.args)

    def wire_once(self) -> bytes:
        verdicts = self.index.match_request(self.request, True, self.TENANT)
        raw: bytes = verdicts.encode()
        return raw

    def check(self, data: Data, expected: np.ndarray) -> str:
        hit = np.zeros(QUERIES, dtype=bool)
        named: set[tuple[int, int]] = set()
        for qi, _, eid in self.once():
            hit[qi] = True
            named.add((qi, eid))
        if not np.array_equal(hit, expected):
            return f"{int(hit.sum())} queries matched, brute force says {int(expected.sum())}"
        for i, src in enumerate(data.source):
            if src >= 0 and (i, int(src)) not in named:
                return f"near-duplicate q{i} does not name entry {src}"
        return "ok"


def measure(
    server: Server, data: Data, expected: np.ndarray, args: argparse.Namespace, res: Result
) -> None:
    """Service and core in alternating rounds (never at the same time), so a change in the
    load other users put on the machine hits both alike. While the core runs the server
    gets no calls; its CPU then is reported too (polling only)."""
    service = ServiceBench(server, data)
    try:
        res.checks.append(f"service: {service.check(data, expected)}")
        core = CoreBench(data, service.request)
        log(f"core: built in {core.build_s:.1f} s ({_hashcore.cpu_level()})")
        res.checks.append(f"core: {core.check(data, expected)}")
        res.checks.append(f"core wire: {check_response(core.wire_once(), data, expected) or 'ok'}")
        for _ in range(3):  # warm-up
            service.once()
            core.once()
            core.wire_once()
        res.loads["service+core"] = os.getloadavg()[0]
        per_round = args.seconds / args.rounds
        svc_times: list[float] = []
        core_times: list[float] = []
        wire_times: list[float] = []
        late: list[str] = []
        for _ in range(args.rounds):
            with cpu_window(server.pid) as w:
                got = timed(service.once, per_round, min_reps=2, max_reps=100_000)
            svc_times += got
            # Outside the timing, each round: the answers are still right (not, say, refused
            # by probe detection or rate limits, which would make the calls cheap).
            after = check_response(service.send(), data, expected)
            if after is not None:
                late.append(after)
            res.win.wall += w.wall
            res.win.server += w.server
            res.win.client += w.client
            with cpu_window(server.pid) as w:
                core_times += timed(
                    core.once, per_round, min_reps=min(len(got), 2), max_reps=len(got)
                )
            res.idle_server_cpu += w.server
            res.core_cpu += w.client
            res.core_wall += w.wall
            res.idle_wall += w.wall
            with cpu_window(server.pid) as w:
                wire_times += timed(
                    core.wire_once, per_round, min_reps=min(len(got), 2), max_reps=len(got)
                )
            res.idle_server_cpu += w.server
            res.wire_cpu += w.client
            res.idle_wall += w.wall
        res.checks.append(f"service after each round: {late[0] if late else 'ok'}")
    finally:
        service.channel.close()
    res.service_reps, res.core_reps = len(svc_times), len(core_times)
    res.service_us = statistics.median(svc_times) / QUERIES * 1e6
    res.core_us = statistics.median(core_times) / QUERIES * 1e6
    res.wire_us = statistics.median(wire_times) / QUERIES * 1e6
    res.wire_reps = len(wire_times)
    w = res.win
    log(
        f"service: {len(svc_times)} batches, p50 {res.service_us:.2f} µs/query; server CPU "
        f"{w.server:.2f} s, client CPU {w.client:.2f} s over {w.wall:.2f} s"
    )
    log(
        f"core: {len(core_times)} batches, p50 {res.core_us:.2f} µs/query (match_request: "
        f"{len(wire_times)}, {res.wire_us:.2f} µs/query); idle server CPU "
        f"{res.idle_server_cpu:.2f} s over {res.idle_wall:.2f} s"
    )


def measure_peer(
    data: Data, expected: np.ndarray, seconds: float, peer_max: int, threads: int, res: Result
) -> None:
    try:
        sys.path.insert(0, str(CORE_BENCH))
        import threatexchange  # noqa: F401
        from peers import ThreatExchange  # benchmarks/core/peers.py
    except ImportError as exc:
        res.peer_note = f"skipped: threatexchange not importable ({exc})"
        log(f"peer {res.peer_note}")
        return
    n = min(len(data.entries), peer_max)
    res.peer_entries = n
    if n < len(data.entries):
        res.peer_note = f"on the first {n:,} of {len(data.entries):,} entries"
    t0 = time.perf_counter()
    ThreatExchange.threads(threads)  # FAISS's OpenMP threads (one query per call)
    peer = ThreatExchange(data.entries[:n], THRESHOLD)
    log(f"peer: PDQIndex built on {n:,} entries in {time.perf_counter() - t0:.1f} s")
    peer.query_one(data.queries[0])  # warm-up
    res.loads["peer"] = os.getloadavg()[0]
    times: list[float] = []
    hits: list[bool] = []
    start = time.perf_counter()
    for i, q in enumerate(data.queries):
        if i >= 50 and time.perf_counter() - start > seconds:
            break
        t = time.perf_counter()
        found = peer.query_one(q)
        times.append(time.perf_counter() - t)
        hits.append(bool(found))
    res.peer_queries = len(times)
    res.peer_us = statistics.median(times) * 1e6
    if n == len(data.entries):
        want = expected[: len(hits)]
        ok = np.array_equal(np.array(hits), want)
        res.checks.append(
            "peer: ok" if ok else f"peer: {sum(hits)} matched, brute force {int(want.sum())}"
        )
    log(f"peer: {len(times)} queries, p50 {res.peer_us:.1f} µs/query")


def run_one(n: int, args: argparse.Namespace) -> Result:
    res = Result(entries=n, workers=args.workers)
    t0 = time.perf_counter()
    data = make_data(n, SEED + n)
    log(f"{n:,} entries and {QUERIES} queries generated in {time.perf_counter() - t0:.1f} s")
    check_encoding(data.entries)
    t0 = time.perf_counter()
    expected = np.zeros(QUERIES, dtype=bool)
    near = data.source >= 0
    expected[near] = True  # within MAX_FLIPS <= THRESHOLD of their source by construction
    rand = np.flatnonzero(~near)
    expected[rand] = brute_force(data.entries, data.queries[rand])
    res.matches = int(expected.sum())
    log(f"brute force: {res.matches} of {QUERIES} queries match ({time.perf_counter() - t0:.1f} s)")

    root = Path(tempfile.mkdtemp(prefix="pdq-path-", dir=args.tmp_dir))
    try:
        with serve(root, args.workers) as server:
            try:
                load_list(server, data, args.batch, res)
                time.sleep(args.settle)  # background merges after the bulk load
                measure(server, data, expected, args, res)
            except BaseException:
                log(f"server log tail:\n{_tail(server.log_path)}")
                raise
    finally:
        shutil.rmtree(root, ignore_errors=True)
    # With the server gone: nothing else of ours competes for the cores.
    if args.peer:
        measure_peer(data, expected, args.seconds, args.peer_max, args.peer_threads, res)
    else:
        res.peer_note = "skipped (--no-peer)"
    return res


# ---------------------------------------------------------------------------------------
# Report


def _f(x: float, fmt: str) -> str:
    return "n/a" if x != x else format(x, fmt)


def _x(ratio: float, fmt: str) -> str:
    return "n/a" if ratio != ratio else format(ratio, fmt) + "x"


def _cpu_per(cpu: float, batches: int, per: float) -> str:
    """CPU µs per query from CPU seconds over `batches` batches."""
    return _f(cpu / batches * per * 1e3 if batches else float("nan"), ".1f")


def report(rows: list[Result], peer_threads: int) -> str:
    out = [
        f"PDQ through MatchBatch: {QUERIES} queries per batch (half near-duplicates, 0-"
        f"{MAX_FLIPS} bits flipped), one call at a time, threshold {THRESHOLD}; "
        f"{os.cpu_count()} cores, core CPU level {_hashcore.cpu_level()}.",
        "",
        "| entries | workers | load s (entries/s) | service µs/query (p50) | core µs/query "
        "(p50) | service/core | peer µs/query (p50) | peer/service | server CPU s "
        "(cores) | client CPU s (cores) | core CPU s (cores) | batches svc/core | check |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        wall = r.win.wall or float("nan")
        peer = _f(r.peer_us, ".1f")
        if r.peer_note and r.peer_us == r.peer_us:
            peer += f" ({r.peer_note})"
        elif r.peer_note:
            peer = r.peer_note
        out.append(
            f"| {r.entries:,} | {r.workers} | {r.load_s:.1f} ({r.entries / r.load_s:,.0f}) "
            f"| {_f(r.service_us, '.2f')} | {_f(r.core_us, '.2f')} | {_x(r.ratio, '.2f')} "
            f"| {peer} | {_x(r.peer_ratio, '.1f')} "
            f"| {r.win.server:.2f} ({r.win.server / wall:.2f}) "
            f"| {r.win.client:.2f} ({r.win.client / wall:.2f}) "
            f"| {r.core_cpu:.2f} ({r.core_cpu / (r.core_wall or float('nan')):.2f}) "
            f"| {r.service_reps}/{r.core_reps} | {'; '.join(r.checks)} |"
        )
    out.append("")
    for r in rows:
        ok1 = "met" if r.ratio <= 1.5 else "NOT met"
        line = f"- {r.entries:,}: service/core {_f(r.ratio, '.2f')}x (target <= 1.5x: {ok1})"
        if r.peer_us == r.peer_us:
            ok2 = "met" if r.peer_ratio >= 10 else "NOT met"
            line += f"; threatexchange/service {r.peer_ratio:.1f}x (goal >= 10x: {ok2})"
        line += f"; {r.matches} of {QUERIES} queries match"
        loads = ", ".join(f"{k} {v:.2f}" for k, v in r.loads.items())
        out.append(f"{line}; load average as each began: {loads}.")
        per = 1e3 / QUERIES
        out.append(
            f"  - where the time goes: in-process match_request+encode on the same request "
            f"bytes {_f(r.wire_us, '.2f')} µs/query ({_f(r.wire_us / r.core_us, '.2f')}x "
            f"match_batch; service/that {_f(r.service_us / r.wire_us, '.2f')}x); CPU per "
            f"query: server {_cpu_per(r.win.server, r.service_reps, per)} µs, match_batch "
            f"{_cpu_per(r.core_cpu, r.core_reps, per)} µs, match_request "
            f"{_cpu_per(r.wire_cpu, r.wire_reps, per)} µs."
        )
    idle = ", ".join(f"{r.idle_server_cpu:.2f} s over {r.idle_wall:.1f} s" for r in rows)
    out.append(
        "\nService time = wall time of one MatchBatch / 1,000 through gRPC on loopback "
        "(request pre-serialized, response not decoded in the loop). Server and client CPU "
        "cover the timed service windows, core CPU the core's rounds (cores = CPU s / wall "
        "s). The core runs in-process in rounds alternating with the service's, the server "
        "idle meanwhile (its CPU then: "
        f"{idle}); the peer (threatexchange PDQIndex, one query per call, {peer_threads} "
        "FAISS thread(s)) runs after the server stopped."
    )
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join((__doc__ or "").split("\n\n")[1:]),
    )
    parser.add_argument(
        "--entries", default="1000000", help="list sizes, comma-separated (default 1000000)"
    )
    parser.add_argument("--workers", type=int, default=1, help="hashmatch serve --workers")
    parser.add_argument(
        "--seconds",
        type=float,
        default=10.0,
        help="service time in all; the core and the peer at most as long (1-60)",
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternating service/core rounds (1-50)"
    )
    parser.add_argument("--batch", type=int, default=50_000, help="entries per upload batch")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds idle after the load")
    parser.add_argument(
        "--peer-max",
        type=int,
        default=10_000_000,
        help="largest list given to threatexchange (a prefix of the entries beyond it)",
    )
    parser.add_argument(
        "--peer-threads",
        type=int,
        default=1,
        help="FAISS threads of the peer (default 1: one hash per query gains nothing from "
        "more, and OpenMP spinning on 2 shared cores only adds noise)",
    )
    parser.add_argument("--no-peer", dest="peer", action="store_false", help="skip the peer")
    parser.add_argument("--tmp-dir", help="where the server's data folder goes")
    args = parser.parse_args()
    try:
        sizes = [int(x.replace("_", "")) for x in args.entries.split(",") if x.strip()]
    except ValueError:
        parser.error("--entries: comma-separated integers")
    if not sizes or any(not 1 <= n <= 50_000_000 for n in sizes):
        parser.error("--entries: each between 1 and 50,000,000")
    if not 1 <= args.workers <= 8:
        parser.error("--workers: 1-8")
    if not 1 <= args.batch <= 100_000:
        parser.error("--batch: 1-100000 (the server's limit per batch)")
    args.seconds = min(max(args.seconds, 1.0), 60.0)
    args.rounds = min(max(args.rounds, 1), 50)
    args.settle = min(max(args.settle, 0.0), 60.0)
    # SIGTERM unwinds like Ctrl-C, so the server is stopped and the folder removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rows = []
    for n in sizes:
        rows.append(run_one(n, args))
        print(report(rows[-1:], args.peer_threads), flush=True)
    if len(rows) > 1:
        print("\n" + report(rows, args.peer_threads))
    return 0 if all(c.endswith("ok") for r in rows for c in r.checks) else 1


if __name__ == "__main__":
    sys.exit(main())

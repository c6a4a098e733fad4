"""One-shot measurements: list load, retraction visibility, process memory, correctness."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from hashmatch.client import Change, Connection, ListClient, RetryPolicy
from hashmatch.client.algorithms import NAMES, PDQ
from hashmatch.server.bench.corpus import PDQ_QUALITY, Case, Entry, SyntheticList
from hashmatch.server.bench.load import open_channel, percentiles
from hashmatch.v1 import hashes_pb2, lists_pb2, lists_pb2_grpc, match_pb2, match_pb2_grpc

UPLOAD_METHOD = "/hashmatch.v1.ListService/UploadChanges"
UPLOAD_TIMEOUT = 1800.0


def _hash(algorithm: int, value: bytes) -> hashes_pb2.Hash:
    h = hashes_pb2.Hash(algorithm=algorithm, value=value)  # type: ignore[arg-type]
    if algorithm == PDQ:
        h.quality = PDQ_QUALITY
    return h


def list_client(address: str, token: str) -> ListClient:
    return ListClient(Connection(server=address, token=token, timeout=60.0, retry=RetryPolicy(3)))


def create_list(address: str, token: str, name: str) -> None:
    """Creates `name` with default PDQ settings and flood quarantine off: a load generator
    repeats its hits by design, which flood detection would rightly quarantine."""
    channel = open_channel(address)
    try:
        lists_pb2_grpc.ListServiceStub(channel).CreateList(
            lists_pb2.CreateListRequest(
                name=name,
                flood=lists_pb2.FloodPolicy(factor=0, min_matches=100, window_seconds=60),
            ),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=30.0,
        )
    finally:
        channel.close()


@dataclass
class LoadResult:
    entries: int
    batches: int
    seconds: float
    entries_per_s: float
    prepare_seconds: float
    version: int
    counts: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def load_list(address: str, token: str, name: str, synthetic: SyntheticList) -> LoadResult:
    """Creates list `name` and bulk-loads the synthetic list through one UploadChanges call.

    The batches are built and serialised before the clock starts, so the time measured is
    the transfer plus the server's checks, commits and index updates, until it acknowledges.
    """
    t = time.perf_counter()
    payload = [b.SerializeToString() for b in synthetic.batches(name)]
    prepare = time.perf_counter() - t
    create_list(address, token, name)
    channel = open_channel(address)
    try:
        upload = channel.stream_unary(
            UPLOAD_METHOD,
            request_serializer=lambda b: b,
            response_deserializer=lists_pb2.UploadChangesResponse.FromString,
        )
        t0 = time.perf_counter()
        response = upload(
            iter(payload), metadata=(("authorization", f"Bearer {token}"),), timeout=UPLOAD_TIMEOUT
        )
        seconds = time.perf_counter() - t0
    finally:
        channel.close()
    if response.batches_applied + response.batches_already_applied != len(payload):
        raise RuntimeError(
            f"the upload stopped after {response.batches_applied} of {len(payload)} batches"
        )
    with list_client(address, token) as lc:
        info = lc.get_list(name)
    return LoadResult(
        entries=synthetic.size,
        batches=len(payload),
        seconds=seconds,
        entries_per_s=synthetic.size / seconds if seconds > 0 else float("inf"),
        prepare_seconds=prepare,
        version=info.version,
        counts=info.counts,
    )


def retire_all(address: str, token: str, name: str, synthetic: SyntheticList) -> float:
    """Retires every synthetic entry again (clean-up on a remote target); returns seconds."""
    channel = open_channel(address)
    payload = []
    for k, batch in enumerate(synthetic.batches(name, prefix="signoff-cleanup")):
        retire = lists_pb2.ApplyChangesRequest(list=name, batch_id=f"{batch.batch_id}-{k}")
        retire.retirements.extend(u.hash for u in batch.upserts)
        payload.append(retire.SerializeToString())
    try:
        upload = channel.stream_unary(
            UPLOAD_METHOD,
            request_serializer=lambda b: b,
            response_deserializer=lists_pb2.UploadChangesResponse.FromString,
        )
        t0 = time.perf_counter()
        upload(
            iter(payload), metadata=(("authorization", f"Bearer {token}"),), timeout=UPLOAD_TIMEOUT
        )
        return time.perf_counter() - t0
    finally:
        channel.close()


@dataclass
class RetractionResult:
    """Milliseconds from sending a retraction until every poller answers NO_MATCH
    (`visible_ms`), and until the retraction was acknowledged (`ack_ms`)."""

    samples: int
    pollers: int
    visible_ms: list[float]
    ack_ms: list[float]
    timeouts: int

    def summary(self) -> dict[str, float]:
        v = percentiles(self.visible_ms)
        a = percentiles(self.ack_ms)
        return {
            "visible_p50_ms": v["p50"],
            "visible_p99_ms": v["p99"],
            "visible_max_ms": v["max"],
            "ack_p50_ms": a["p50"],
            "ack_p99_ms": a["p99"],
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, **self.summary()}


def _verdict(stub: match_pb2_grpc.MatchServiceStub, token: str, h: hashes_pb2.Hash) -> int:
    response = stub.Match(
        match_pb2.MatchRequest(item_id="probe", hashes=[h]),
        metadata=(("authorization", f"Bearer {token}"),),
        timeout=10.0,
    )
    return int(response.verdict)


def retraction_visibility(
    address: str,
    hotline_token: str,
    platform_token: str,
    list_name: str,
    entries: Sequence[Entry],
    *,
    pollers: int = 4,
    limit_s: float = 5.0,
    label: str = "probe",
) -> RetractionResult:
    """For each entry: check it matches, retire it through ApplyChanges, then poll Match on
    `pollers` separate connections (with several workers, the kernel spreads them over the
    processes) until all answer NO_MATCH. At most `limit_s` per entry."""
    channels = [open_channel(address) for _ in range(pollers)]
    stubs = [match_pb2_grpc.MatchServiceStub(c) for c in channels]
    visible: list[float] = []
    acks: list[float] = []
    timeouts = 0
    try:
        with list_client(address, hotline_token) as lc:
            for k, e in enumerate(entries):
                h = _hash(e.algorithm, e.value)
                deadline = time.monotonic() + limit_s
                while not all(
                    _verdict(s, platform_token, h) == match_pb2.VERDICT_MATCH for s in stubs
                ):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"retraction probe {e.reference_id} is not listed")
                    time.sleep(0.01)
                t0 = time.perf_counter()
                lc.apply_changes(list_name, f"{label}-{k}-{e.reference_id}", [Change(h, None)])
                t_ack = time.perf_counter()
                pending = list(stubs)
                end = t0 + limit_s
                while pending and time.perf_counter() < end:
                    pending = [
                        s
                        for s in pending
                        if _verdict(s, platform_token, h) != match_pb2.VERDICT_NO_MATCH
                    ]
                if pending:
                    timeouts += 1
                    continue
                visible.append((time.perf_counter() - t0) * 1000)
                acks.append((t_ack - t0) * 1000)
    finally:
        for c in channels:
            c.close()
    return RetractionResult(len(entries), pollers, visible, acks, timeouts)


@dataclass
class CaseResult:
    name: str
    algorithm: str
    expected: str
    got: str
    ok: bool


def check_corpus(address: str, token: str, cases: Iterable[Case]) -> list[CaseResult]:
    """Matches every boundary case once, through MatchBatch, and compares the verdicts."""
    cases = list(cases)
    channel = open_channel(address)
    try:
        stub = match_pb2_grpc.MatchServiceStub(channel)
        request = match_pb2.MatchBatchRequest(
            items=[
                match_pb2.MatchRequest(item_id=str(k), hashes=[_hash(c.algorithm, c.value)])
                for k, c in enumerate(cases)
            ]
        )
        response = stub.MatchBatch(
            request, metadata=(("authorization", f"Bearer {token}"),), timeout=30.0
        )
    finally:
        channel.close()
    out = []
    for c, r in zip(cases, response.results, strict=True):
        got = "MATCH" if r.verdict == match_pb2.VERDICT_MATCH else "NO_MATCH"
        if r.HasField("error") and r.error.code:
            got = f"ERROR {r.error.code}"
        expected = "MATCH" if c.expect_match else "NO_MATCH"
        out.append(CaseResult(c.name, NAMES[c.algorithm], expected, got, got == expected))
    return out


def healthy(address: str, timeout: float = 5.0) -> bool:
    """True when the address answers gRPC health checks (no token needed)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channel = open_channel(address)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        status = stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout).status
        return bool(status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False
    finally:
        channel.close()


# --- memory ---------------------------------------------------------------------------

RSS_FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return out


def rss(pid: int) -> dict[str, int]:
    """Resident memory of `pid` and its descendants in bytes, summed per /proc field
    (VmRSS total; RssAnon is the heap, where the in-memory indexes live)."""
    totals = dict.fromkeys(RSS_FIELDS, 0)
    totals["processes"] = 0
    for p in process_tree(pid):
        try:
            text = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        totals["processes"] += 1
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            if key in RSS_FIELDS:
                totals[key] += int(rest.split()[0]) * 1024
    return totals

"""Logs and metrics: one JSON line per RPC without any queried hash or item_id."""

from __future__ import annotations

import base64
import io
import json
import logging
import random
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from hashmatch.client import MD5, PDQ, SHA1, SHA256, make_hash
from hashmatch.server.app import Service, build
from hashmatch.server.logs import JsonFormatter
from hashmatch.server.settings import Settings
from hashmatch.server.store import Role
from hashmatch.v1 import match_pb2, match_pb2_grpc
from helpers import random_digest, random_pdq, upsert


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Everything any logger writes, at every level, as the JSON the server emits."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = build(
        Settings(
            data_dir=tmp_path,
            listen="127.0.0.1:0",
            poll_interval=0.01,
            metrics_listen="127.0.0.1:0",
        )
    )
    yield svc
    svc.stop(grace=0)


def forms(value: bytes) -> list[str]:
    return [
        value.hex(),
        value.hex().upper(),
        base64.b64encode(value).decode(),
        base64.urlsafe_b64encode(value).decode(),
        base64.b64encode(value).decode().rstrip("="),
    ]


def test_logs_hold_no_queried_hash_nor_item_id(service: Service, captured: io.StringIO) -> None:
    store = service.store
    platform = store.add_tenant("platform", Role.PLATFORM)
    metadata = (("authorization", f"Bearer {platform}"),)
    rng = random.Random(21)
    queried: list[bytes] = []
    item_ids: list[str] = []

    def request(i: int) -> match_pb2.MatchRequest:
        values = [
            (MD5, random_digest(rng, MD5)),
            (SHA1, random_digest(rng, SHA1)),
            (SHA256, random_digest(rng, SHA256)),
            (PDQ, random_pdq(rng)),
        ]
        queried.extend(v for _, v in values)
        item_ids.append(f"upload-{rng.getrandbits(64):016x}-{i}")
        return match_pb2.MatchRequest(
            item_id=item_ids[-1], hashes=[make_hash(a, v) for a, v in values]
        )

    with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = match_pb2_grpc.MatchServiceStub(channel)
        for i in range(5):
            assert stub.Match(request(i), metadata=metadata).verdict == match_pb2.VERDICT_NO_MATCH
        batch = match_pb2.MatchBatchRequest(items=[request(10 + i) for i in range(20)])
        assert len(stub.MatchBatch(batch, metadata=metadata).results) == 20
        stream = [request(100 + i) for i in range(10)]
        assert len(list(stub.MatchStream(iter(stream), metadata=metadata))) == 10
        # Refused calls and invalid items are logged too, still without their content.
        bad = request(200)
        bad.hashes.append(make_hash(MD5, random_digest(rng, SHA1)))
        with pytest.raises(grpc.RpcError):
            stub.Match(bad, metadata=metadata)
        with pytest.raises(grpc.RpcError):
            stub.Match(request(300), metadata=(("authorization", "Bearer wrong"),))
        item_ids.append("upload-x")
        with pytest.raises(grpc.RpcError):
            stub.Match(
                match_pb2.MatchRequest(item_id="upload-x", hashes=[make_hash(99, bytes(16))]),
                metadata=metadata,
            )

    text = captured.getvalue()
    for value in queried:
        for form in forms(value):
            assert form not in text
    for item_id in item_ids:
        assert item_id not in text

    rpc = [json.loads(line) for line in text.splitlines() if '"msg":"rpc"' in line]
    assert len(rpc) == 10  # one line per RPC
    assert {r["method"] for r in rpc} == {
        "MatchService/Match",
        "MatchService/MatchBatch",
        "MatchService/MatchStream",
    }
    batch_line = next(r for r in rpc if r["method"] == "MatchService/MatchBatch")
    assert batch_line["items"] == 20 and batch_line["code"] == "OK"
    assert batch_line["tenant"] == "platform" and batch_line["duration_ms"] >= 0
    stream_line = next(r for r in rpc if r["method"] == "MatchService/MatchStream")
    assert stream_line["items"] == 10
    codes = sorted(r["code"] for r in rpc if r["code"] != "OK")
    assert codes == ["INVALID_ARGUMENT", "INVALID_ARGUMENT", "UNAUTHENTICATED"]


def test_metrics_endpoint_reports_rpcs_matches_and_indexes(service: Service) -> None:
    hotline = service.store.add_tenant("hotline", Role.HOTLINE)
    platform = service.store.add_tenant("platform", Role.PLATFORM)
    value = random_digest(random.Random(4), SHA256)
    from hashmatch.client import Connection, ListClient, MatchClient, RetryPolicy

    address = f"127.0.0.1:{service.port}"
    with ListClient(Connection(server=address, token=hotline, retry=RetryPolicy(1))) as lists:
        lists.create_list("iwf")
        lists.apply_changes("iwf", "b1", [upsert(SHA256, value, "R-1")])
    with MatchClient(Connection(server=address, token=platform, retry=RetryPolicy(1))) as m:
        assert m.match([make_hash(SHA256, value)]).matched
        assert not m.match([make_hash(MD5, bytes(16))]).matched
    assert service.stats is not None
    # The core counts matches; the flusher hands them over every stats interval.
    service.stats.flush()
    service.stats.refresh_gauges()
    url = f"http://127.0.0.1:{service.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = response.read().decode()
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line and not line.startswith("#")
    }
    assert samples['hashmatch_rpcs_total{code="OK",method="MatchService/Match"}'] == 2
    assert samples['hashmatch_matches_total{list="iwf"}'] == 1
    assert samples['hashmatch_list_version{list="iwf"}'] == 1
    assert samples['hashmatch_index_entries{algorithm="sha256",list="iwf"}'] == 1
    assert samples["hashmatch_changelog_lag_batches"] == 0
    assert samples["hashmatch_index_memory_bytes"] > 0
    assert samples['hashmatch_rpc_duration_seconds_count{method="MatchService/Match"}'] == 2
    assert value.hex() not in body

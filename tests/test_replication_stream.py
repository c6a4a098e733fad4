"""ReplicationService.Follow: one stream carries a replica's tenants, lists and batches."""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from conftest import TENANTS, Running, same_lists, start_replica
from hashmatch.client import MD5, Connection, MatchClient, RetryPolicy
from hashmatch.server.app import build
from hashmatch.server.settings import Settings
from hashmatch.server.store import Store, token_hash
from hashmatch.server.sync import replica as replica_module
from hashmatch.v1 import replication_pb2, replication_pb2_grpc
from helpers import eventually, hashes, random_digest, upsert


def follow(
    running: Running, tenant: str = "replica", **positions: int
) -> tuple[grpc.Channel, Iterator[replication_pb2.FollowEvent]]:
    channel = grpc.insecure_channel(running.address)
    stub = replication_pb2_grpc.ReplicationServiceStub(channel)
    request = replication_pb2.FollowRequest(
        positions=[replication_pb2.ListPosition(list=n, version=v) for n, v in positions.items()]
    )
    metadata = (("authorization", f"Bearer {running.tokens[tenant]}"),)
    return channel, stub.Follow(request, metadata=metadata, timeout=20)


def next_event(stream: Iterator[replication_pb2.FollowEvent]) -> replication_pb2.FollowEvent:
    """The next event that is not a heartbeat (an empty event)."""
    while True:
        event = next(stream)
        if event.WhichOneof("event") is not None:
            return event


def test_an_idle_stream_sends_heartbeats(running: Running) -> None:
    """Once everything served was sent, an empty event comes (then each second): the
    replica's proof that its copy is current."""
    lists = running.lists()
    lists.create_list("a")
    lists.apply_changes("a", "a0", [upsert(MD5, bytes(16), "R")])
    channel, stream = follow(running)
    try:
        kinds = []
        while len(kinds) < 5 and kinds.count(None) < 2:
            kinds.append(next(stream).WhichOneof("event"))
        assert kinds[:4] == ["tenants", "list", "batch", None]
        assert kinds.count(None) == 2
    finally:
        stream.cancel()  # type: ignore[attr-defined]
        channel.close()


def test_follow_sends_tenants_lists_and_batches_in_order(running: Running) -> None:
    rng = random.Random(3)
    lists = running.lists()
    for name, count in (("a", 3), ("b", 2)):
        lists.create_list(name)
        for i in range(count):
            lists.apply_changes(name, f"{name}{i}", [upsert(MD5, random_digest(rng, MD5), "R")])
    channel, stream = follow(running, a=1)
    try:
        first = next_event(stream)
        assert first.WhichOneof("event") == "tenants"
        assert {t.name for t in first.tenants.tenants} == set(TENANTS)

        announced: list[str] = []
        versions: dict[str, list[int]] = {"a": [], "b": []}
        while versions != {"a": [2, 3], "b": [1, 2]}:
            event = next_event(stream)
            kind = event.WhichOneof("event")
            if kind == "list":
                announced.append(event.list.name)
                assert event.list.owner == "hotline-a"
            elif kind == "batch":
                # A list is announced before its first batch.
                assert event.batch.list in announced
                versions[event.batch.list].append(event.batch.version)
        assert announced == ["a", "b"]

        # Live: a new list is announced, then its batch follows on the same stream.
        lists.create_list("c", pdq_threshold=20)
        lists.apply_changes("c", "c0", [upsert(MD5, random_digest(rng, MD5), "C")])
        event = next_event(stream)
        assert event.WhichOneof("event") == "list"
        assert (event.list.name, event.list.pdq_threshold) == ("c", 20)
        event = next_event(stream)
        assert event.WhichOneof("event") == "batch"
        assert (event.batch.list, event.batch.version, event.batch.batch_id) == ("c", 1, "c0")

        # Tenants changes flow on the stream too.
        running.service.store.revoke_tokens("platform")
        event = next_event(stream)
        assert event.WhichOneof("event") == "tenants"
        (platform,) = [t for t in event.tenants.tenants if t.name == "platform"]
        assert token_hash(running.tokens["platform"]) not in platform.token_hashes
    finally:
        stream.cancel()  # type: ignore[attr-defined]
        channel.close()


@pytest.mark.parametrize("tenant", ["platform", "hotline-a"])
def test_follow_is_for_replicas_only(running: Running, tenant: str) -> None:
    channel, stream = follow(running, tenant)
    try:
        with pytest.raises(grpc.RpcError) as err:
            next(stream)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    finally:
        channel.close()


def test_idle_follow_streams_hold_no_thread(running: Running) -> None:
    """More open streams than the server has threads: a platform is still answered."""
    rng = random.Random(4)
    lists = running.lists()
    value = random_digest(rng, MD5)
    lists.create_list("a")
    lists.apply_changes("a", "a0", [upsert(MD5, value, "R")])
    opened = [follow(running) for _ in range(running.service.settings.threads * 2)]
    try:
        for _, stream in opened:
            next(stream)  # each stream is up and idle after its first event
        platform = MatchClient(
            Connection(
                server=running.address,
                token=running.tokens["platform"],
                timeout=5.0,
                retry=RetryPolicy(attempts=1),
            )
        )
        for _ in range(20):
            assert platform.match(hashes((MD5, value))).matched
    finally:
        for channel, stream in opened:
            stream.cancel()  # type: ignore[attr-defined]
            channel.close()


def following(caplog: pytest.LogCaptureFixture) -> int:
    """How many times the replica logged that it follows its primary (again)."""
    return sum(
        r.levelno == logging.INFO and "replica: following primary" in r.getMessage()
        for r in caplog.records
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_replica_reconnects_with_backoff_and_logs_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A replica started before its primary retries quietly, then follows it."""
    monkeypatch.setattr(replica_module, "INITIAL_BACKOFF", 0.02)
    monkeypatch.setattr(replica_module, "MAX_BACKOFF", 0.1)
    caplog.set_level(logging.DEBUG, logger=replica_module.__name__)
    port = _free_port()
    store = Store(tmp_path / "primary")
    tokens = {name: store.add_tenant(name, role) for name, role in TENANTS.items()}
    store.close()
    replica = start_replica(tmp_path / "replica", f"127.0.0.1:{port}", tokens)
    primary: Running | None = None
    try:

        def attempts() -> int:
            return sum("still not following" in r.getMessage() for r in caplog.records)

        eventually(lambda: attempts() >= 3, "the replica keeps retrying")
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert f"127.0.0.1:{port}" in warnings[0].getMessage()

        primary = Running(
            build(
                Settings(
                    data_dir=tmp_path / "primary", listen=f"127.0.0.1:{port}", poll_interval=0.01
                )
            ),
            tokens,
        )
        # (Clients wait too: gRPC shares the replica's connection backoff with them.)
        eventually(lambda: following(caplog) == 1, "the replica follows the primary once up")
        primary.lists().create_list("a")
        primary.lists().apply_changes("a", "a0", [upsert(MD5, bytes(range(16)), "R")])
        eventually(lambda: same_lists(primary, replica), "replica caught up once reachable")
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    finally:
        replica.service.stop(grace=0)
        if primary is not None:
            primary.service.stop(grace=0)


def test_restarted_primary_is_followed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The stream breaks when the primary stops; the replica resumes from its versions."""
    monkeypatch.setattr(replica_module, "INITIAL_BACKOFF", 0.05)
    caplog.set_level(logging.INFO, logger=replica_module.__name__)
    rng = random.Random(5)
    port = _free_port()
    data = tmp_path / "primary"
    service = build(Settings(data_dir=data, listen=f"127.0.0.1:{port}", poll_interval=0.01))
    tokens = {name: service.store.add_tenant(name, role) for name, role in TENANTS.items()}
    primary = Running(service, tokens)
    primary.lists().create_list("a")
    primary.lists().apply_changes("a", "a0", [upsert(MD5, random_digest(rng, MD5), "R")])
    replica = start_replica(tmp_path / "replica", primary.address, tokens)
    try:
        eventually(lambda: same_lists(primary, replica), "replica caught up")
        primary.service.stop(grace=0)
        service = build(Settings(data_dir=data, listen=f"127.0.0.1:{port}", poll_interval=0.01))
        primary = Running(service, tokens)
        # (Clients wait too: gRPC shares the replica's connection backoff with them.)
        eventually(lambda: following(caplog) == 2, "the replica follows the restarted primary")
        primary.lists().apply_changes("a", "a1", [upsert(MD5, random_digest(rng, MD5), "S")])
        primary.lists().create_list("b")
        eventually(lambda: same_lists(primary, replica), "replica follows the restarted primary")
    finally:
        replica.service.stop(grace=0)
        primary.service.stop(grace=0)

"""/metrics has the same shape whatever `--workers` is: the same metric names and label
names, no `pid` label, and the process_*/python_* series in both modes. A replica reports
its lag behind the primary per list, and logs when a list catches up."""

from __future__ import annotations

import logging
import random
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_workers import Server, start_server

from conftest import start
from hashmatch.client import MD5, Connection, make_hash
from hashmatch.client.list_client import build_batch
from hashmatch.server.app import build
from hashmatch.server.settings import Settings
from hashmatch.server.sync.replica import Replicator
from hashmatch.v1 import lists_pb2, match_pb2, match_pb2_grpc, replication_pb2
from helpers import eventually, random_digest, upsert

Shape = dict[str, frozenset[str]]


def metrics_port(server: Server, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        for line in server.log_lines():
            if "metrics_port" in line:
                return int(line["metrics_port"])  # type: ignore[call-overload]
        assert time.monotonic() < deadline, "no metrics_port in the log"
        time.sleep(0.05)


def shape(text: str) -> Shape:
    """Each sample name with the label names it carries."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(labels) for name, labels in out.items()}


def scrape_after_a_match(tmp_path: Path, workers: int) -> Shape:
    server = start_server(
        tmp_path / f"data{workers}",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--workers",
        str(workers),
    )
    try:
        metadata = (("authorization", f"Bearer {server.tokens['platform']}"),)
        value = random_digest(random.Random(3), MD5)
        with grpc.insecure_channel(server.address) as channel:
            stub = match_pb2_grpc.MatchServiceStub(channel)
            request = match_pb2.MatchRequest(item_id="x", hashes=[make_hash(MD5, value)])
            stub.Match(request, metadata=metadata, timeout=10)
        port = metrics_port(server)
        time.sleep(1.5)  # a stats interval: the gauges are refreshed
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            return shape(resp.read().decode())
    finally:
        assert server.stop() == 0


def test_metric_names_and_labels_do_not_depend_on_workers(tmp_path: Path) -> None:
    one = scrape_after_a_match(tmp_path, 1)
    two = scrape_after_a_match(tmp_path, 2)
    for name, labels in two.items():
        assert "pid" not in labels, f"{name} carries a pid label"
    assert any(name.startswith("process_") for name in one)
    assert any(name.startswith("python_") for name in one)
    only_one = {n: sorted(one[n]) for n in set(one) - set(two)}
    only_two = {n: sorted(two[n]) for n in set(two) - set(one)}
    assert (only_one, only_two) == ({}, {})
    assert one == two
    for name in (
        "hashmatch_rpcs_total",
        "hashmatch_index_memory_bytes",
        "hashmatch_changelog_lag_batches",
        "hashmatch_changelog_lag_seconds",
    ):
        assert name in one


def test_replica_lag_and_caught_up_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(5)
    primary = start(tmp_path / "primary")
    lists = primary.lists()
    lists.create_list("iwf")
    lists.upload_changes(
        [
            build_batch("iwf", f"b{i}", [upsert(MD5, random_digest(rng, MD5), f"R-{i}")])
            for i in range(3)
        ]
    )
    token = primary.tokens["replica"]
    replica = build(
        Settings(
            data_dir=tmp_path / "replica",
            listen="127.0.0.1:0",
            poll_interval=0.01,
            follow=primary.address,
            follow_token=token,
        ),
        replicate=False,
    )
    metrics = replica.metrics
    assert metrics is not None
    replicator = Replicator(
        replica.store,
        replica.follower,
        Connection(server=primary.address, token=token),
        metrics=metrics,
    )
    caplog.set_level(logging.INFO, logger="hashmatch.server.sync.replica")

    def caught_up() -> list[str]:
        return [r.getMessage() for r in caplog.records if "caught up" in r.getMessage()]

    def lag() -> tuple[float | None, float | None]:
        """(hashmatch_replica_lag_versions, hashmatch_replica_lag_seconds) of the list."""
        labels = {"list": "iwf"}
        return (
            metrics.registry.get_sample_value("hashmatch_replica_lag_versions", labels),
            metrics.registry.get_sample_value("hashmatch_replica_lag_seconds", labels),
        )

    try:
        replicator.start()
        eventually(lambda: bool(caught_up()), "the replica logs that it caught up")
        assert caught_up() == ["replica caught up: iwf at version 3"]
        assert lag() == (0.0, 0.0)

        # Live batches applied as they come: no more lines while it stays caught up.
        lists.apply_changes("iwf", "b3", [upsert(MD5, random_digest(rng, MD5), "R-3")])
        eventually(lambda: replica.store.get_list("iwf").version == 4, "the new batch")  # type: ignore[union-attr]
        replicator.stop()
        assert lag() == (0.0, 0.0)
        assert caught_up() == ["replica caught up: iwf at version 3"]

        # Behind: two batches of the primary received, not applied, the oldest 10 s old.
        for version, age in ((5, 10.0), (6, 1.0)):
            batch = lists_pb2.ChangeBatch(list="iwf", version=version)
            batch.committed_at.FromMicroseconds(int((time.time() - age) * 1e6))
            replicator._note(replication_pb2.FollowEvent(batch=batch))
        replicator._update_lag()
        versions, seconds = lag()
        assert versions == 2
        assert seconds is not None and 10.0 <= seconds < 20.0
        # A primary announcing the version held here: caught up, logged once.
        announced = lists_pb2.HashList(name="iwf", version=4)
        replicator._note(replication_pb2.FollowEvent(list=announced))
        replicator._update_lag()
        replicator._update_lag()
        assert lag() == (0.0, 0.0)
        assert caught_up() == [
            "replica caught up: iwf at version 3",
            "replica caught up: iwf at version 4",
        ]
    finally:
        replicator.stop()
        replica.stop(grace=0)
        primary.service.stop(grace=0)


def test_a_list_copied_whole_in_one_group_logs_that_it_caught_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The replica applies what has arrived at once: on a busy machine the list's
    # announcement and all its batches may come as one group, applied before any lag is
    # looked at. The list was still behind when announced, so it logs that it caught up.
    rng = random.Random(6)
    primary = start(tmp_path / "primary")
    primary.lists().create_list("iwf")
    primary.lists().upload_changes(
        [
            build_batch("iwf", f"b{i}", [upsert(MD5, random_digest(rng, MD5), f"R-{i}")])
            for i in range(3)
        ]
    )
    token = primary.tokens["replica"]
    settings = Settings(
        data_dir=tmp_path / "replica",
        listen="127.0.0.1:0",
        follow=primary.address,
        follow_token=token,
    )
    replica = build(settings, replicate=False)
    replicator = Replicator(
        replica.store, replica.follower, Connection(server=primary.address, token=token)
    )
    caplog.set_level(logging.INFO, logger="hashmatch.server.sync.replica")
    try:
        call = replicator._replication.Follow(
            replication_pb2.FollowRequest(), metadata=replicator.connection.metadata(), timeout=20
        )
        group = []
        for event in call:
            replicator._note(event)
            group.append(event)
            if event.WhichOneof("event") == "batch" and event.batch.version == 3:
                break
        call.cancel()
        replicator._apply_group(group)
        assert replica.store.get_list("iwf").version == 3  # type: ignore[union-attr]
        assert [r.getMessage() for r in caplog.records if "caught up" in r.getMessage()] == [
            "replica caught up: iwf at version 3"
        ]
    finally:
        replica.stop(grace=0)
        primary.service.stop(grace=0)

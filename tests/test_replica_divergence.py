"""Replicas verify or stop: a list whose copy differs from the primary's is not served.

The primary is swapped for an older copy of its own data folder, which then takes
different batches: the same versions now carry different content. The replica notices
(the primary's version is behind its own, or the digests differ at the same version),
stops answering for that list at once, reports NOT_SERVING, re-copies the list from the
primary by itself and serves it again once its digest checks out.
"""

from __future__ import annotations

import logging
import random
import shutil
import socket
import threading
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import TENANTS, Running, same_lists, start_replica
from hashmatch.client import MD5, Unavailable, make_hash
from hashmatch.server.app import build
from hashmatch.server.core import Changes, Index, pack_hashes, parse_changes
from hashmatch.server.settings import Settings
from hashmatch.server.store import Store
from hashmatch.server.store.resync import (
    EMPTY_DIGEST,
    apply_checked,
    check_primary,
    is_verified,
    reset_list,
)
from hashmatch.server.sync import replica as replica_module
from hashmatch.server.sync.follower import IndexFollower
from hashmatch.v1 import lists_pb2
from helpers import eventually, hashes, random_digest, upsert

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def serve(data_dir: Path, port: int, tokens: dict[str, str]) -> Running:
    running = Running(
        build(Settings(data_dir=data_dir, listen=f"127.0.0.1:{port}", poll_interval=0.01)),
        tokens,
    )
    if tokens:
        # A primary restarted on a port the replica keeps trying: gRPC shares the
        # replica's connection backoff with this process's clients.
        eventually(lambda: reachable(running), "the restarted primary is reachable")
    return running


def reachable(running: Running) -> bool:
    try:
        running.lists("replica").list_lists()
    except Unavailable:
        return False
    return True


def matched(running: Running, value: bytes) -> bool:
    return running.matcher().match(hashes((MD5, value))).matched


class HealthLog:
    """Polls grpc.health.v1.Health/Check on a server and records every answer."""

    def __init__(self, address: str) -> None:
        self._channel = grpc.insecure_channel(address)
        self._stub = health_pb2_grpc.HealthStub(self._channel)
        self.seen: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now(self) -> int:
        status: int = self._stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
        return status

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.seen.append(self.now())

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._channel.close()


def gauge(running: Running, name: str, **labels: str) -> float | None:
    assert running.service.metrics is not None
    value: float | None = running.service.metrics.registry.get_sample_value(name, labels)
    return value


def batches(lists: object, prefix: str, values: list[bytes], first: int) -> None:
    for i, value in enumerate(values):
        lists.apply_changes(  # type: ignore[attr-defined]
            "iwf", f"{prefix}{first + i}", [upsert(MD5, value, f"{prefix.upper()}-{first + i}")]
        )


@pytest.mark.parametrize(
    "later",
    [
        # The old copy takes its different batches once the replica follows it: at first
        # its version (3) is behind the replica's (6).
        "behind",
        # ...before the replica reconnects, up to the replica's version: same version,
        # different digest.
        "same-version",
        # ...past the replica's version: the first batch the replica gets does not give
        # the primary's digest.
        "ahead",
    ],
)
def test_replica_stops_serving_a_diverged_list_and_recopies_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    later: str,
) -> None:
    monkeypatch.setattr(replica_module, "INITIAL_BACKOFF", 0.05)
    monkeypatch.setattr(replica_module, "MAX_BACKOFF", 0.2)
    # Long enough for the unverified window to be seen from outside.
    monkeypatch.setattr(replica_module, "RESYNC_DELAY", 0.5)
    caplog.set_level(logging.INFO, logger=replica_module.__name__)
    rng = random.Random(7)
    port = _free_port()
    data, old = tmp_path / "primary", tmp_path / "old-copy"
    service = build(Settings(data_dir=data, listen=f"127.0.0.1:{port}", poll_interval=0.01))
    tokens = {name: service.store.add_tenant(name, role) for name, role in TENANTS.items()}
    primary = Running(service, tokens)
    base = [random_digest(rng, MD5) for _ in range(3)]
    newer = [random_digest(rng, MD5) for _ in range(3)]  # only the primary's later batches
    other = [random_digest(rng, MD5) for _ in range(5)]  # only the old copy's batches
    primary.lists().create_list("iwf")
    primary.lists().create_list("steady")
    primary.lists().apply_changes("steady", "s1", [upsert(MD5, base[0], "STEADY")])
    batches(primary.lists(), "a", base, 1)
    replica = start_replica(tmp_path / "replica", primary.address, tokens)
    health: HealthLog | None = None
    try:
        eventually(lambda: same_lists(primary, replica), "the replica copied the primary")
        assert health_now(replica) == SERVING

        # The "older copy": the primary's data folder as of version 3.
        primary.service.stop(grace=0)
        shutil.copytree(data, old)
        primary = serve(data, port, tokens)
        batches(primary.lists(), "a", newer, 4)
        eventually(lambda: same_lists(primary, replica), "the replica followed to version 6")
        assert matched(replica, newer[0])
        assert gauge(replica, "hashmatch_replica_unverified_lists") == 0
        assert gauge(replica, "hashmatch_replica_list_verified", list="iwf") == 1
        primary.service.stop(grace=0)

        # The old copy takes different batches under the same versions.
        if later != "behind":
            count = 3 if later == "same-version" else 5
            offline = serve(old, 0, tokens)
            batches(offline.lists(), "b", other[:count], 4)
            offline.service.stop(grace=0)
        health = HealthLog(replica.address)
        primary = serve(old, port, tokens)
        if later == "behind":
            eventually(lambda: bool(errors(caplog)), "the replica saw the primary behind it")
            assert "the primary is at version 3, behind this copy's 6" in errors(caplog)[0]
            batches(primary.lists(), "b", other, 4)
        elif later == "same-version":
            eventually(lambda: bool(errors(caplog)), "the replica saw the digests differ")
            assert "digest differs from the primary's at version 6" in errors(caplog)[0]
        else:
            eventually(lambda: bool(errors(caplog)), "the replica saw the digests differ")
            assert "digest differs from the primary's at version 7" in errors(caplog)[0]
        # Not served from the moment the difference is known.
        assert not matched(replica, newer[0])

        eventually(lambda: NOT_SERVING in health.seen, "the replica reports NOT_SERVING")
        eventually(lambda: same_lists(primary, replica), "the replica re-copied the list")
        eventually(lambda: health.now() == SERVING, "the replica serves again")
        health.close()
        assert NOT_SERVING in health.seen
        health = None
        assert health_now(replica) == SERVING

        # Answers per the current primary: the newer primary's hashes are gone.
        for value in newer:
            assert not matched(replica, value)
            assert not matched(primary, value)
        for value in (*base, *other):
            assert matched(replica, value) == matched(primary, value)
        assert matched(replica, other[0])
        assert gauge(replica, "hashmatch_replica_unverified_lists") == 0
        assert gauge(replica, "hashmatch_replica_list_verified", list="iwf") == 1
        assert gauge(replica, "hashmatch_replica_list_verified", list="steady") == 1

        logged = errors(caplog)
        assert len(logged) == 1, logged
        assert "list iwf" in logged[0]
    finally:
        if health is not None:
            health.close()
        replica.service.stop(grace=0)
        primary.service.stop(grace=0)


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def health_now(running: Running) -> int:
    with grpc.insecure_channel(running.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        status: int = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
        return status


# -- the store and the index followers, without a network --------------------------------

Batch = tuple[Changes, int, bytes]


def primary_batches(store: Store, values: list[bytes], prefix: str) -> list[Batch]:
    """Applies one-entry batches on a "primary" store; returns them as a replica gets
    them: (changes, version, the primary's digest)."""
    out: list[Batch] = []
    for value in values:
        meta = store.get_list("iwf")
        assert meta is not None
        raw = lists_pb2.ApplyChangesRequest(
            list="iwf",
            batch_id=f"{prefix}{meta.version + 1}",
            upserts=[lists_pb2.Entry(hash=make_hash(MD5, value), reference_id=value.hex())],
            expected_version=meta.version,
        ).SerializeToString()
        outcome = store.apply_changes("iwf", parse_changes(raw, 50), actor="hotline")
        out.append((parse_changes(raw, 50), outcome.version, outcome.digest))
    return out


def served(follower: IndexFollower, values: list[bytes]) -> list[bool]:
    follower.catch_up()
    algs, slots = pack_hashes((MD5, v) for v in values)
    n = len(values)
    hits = follower.index.match_batch(algs, slots, bytes([255]) * n, bytes([255]) * n)
    found = {query for query, _, _ in hits}
    return [i in found for i in range(n)]


def new_store(path: Path) -> Store:
    store = Store(path)
    store.create_list("iwf", "hotline", pdq_threshold=31, pdq_min_quality=50)
    return store


def test_a_batch_that_does_not_check_out_resets_the_list_in_the_same_transaction(
    tmp_path: Path,
) -> None:
    rng = random.Random(11)
    values = [random_digest(rng, MD5) for _ in range(4)]
    primary, replica = new_store(tmp_path / "p"), new_store(tmp_path / "r")
    other = new_store(tmp_path / "o")  # a primary that took other batches
    follower = IndexFollower(replica, Index())
    try:
        good = primary_batches(primary, values[:3], "a")
        bad = primary_batches(other, [values[0], values[3]], "b")
        checked = apply_checked(replica, "iwf", good[:2], actor="r", verify_at=None)
        assert (checked.version, checked.diverged) == (2, None)
        assert served(follower, values) == [True, True, False, False]

        # A group whose second batch does not give the primary's digest: nothing of the
        # group is kept, the list is empty and unverified, and no longer served.
        (fourth,) = primary_batches(primary, values[3:], "a")
        mismatch = (fourth[0], 4, bad[1][2])
        checked = apply_checked(replica, "iwf", [good[2], mismatch], actor="r", verify_at=None)
        assert checked.diverged == "digest differs from the primary's at version 4"
        meta = replica.get_list("iwf")
        assert meta is not None
        assert (meta.version, meta.counts, meta.digest) == (0, (0, 0, 0, 0, 0), EMPTY_DIGEST)
        assert replica.changes_since(meta.id, 0) == []
        assert replica.audit_log(1)[0]["action"] == "resync-list"
        assert not is_verified(replica, "iwf")
        assert served(follower, values) == [False] * 4
        assert follower.unverified() == {"iwf"}

        # The copy from version 0 is not served before it reaches the version the primary
        # announced, with the primary's digest; the batch IDs are free again.
        checked = apply_checked(replica, "iwf", good[:2], actor="r", verify_at=3)
        assert (checked.version, checked.verified) == (2, False)
        assert served(follower, values) == [False] * 4
        checked = apply_checked(replica, "iwf", good[2:], actor="r", verify_at=3)
        assert (checked.version, checked.verified) == (3, True)
        assert served(follower, values) == [True, True, True, False]
        assert follower.unverified() == frozenset()
        meta = replica.get_list("iwf")
        assert meta is not None and meta.digest == good[2][2]

        # A primary behind this copy, or at the same version with another digest.
        behind = check_primary(replica, "iwf", 2, good[1][2], actor="r")
        assert behind.diverged == "the primary is at version 2, behind this copy's 3"
        assert served(follower, values) == [False] * 4
        apply_checked(replica, "iwf", good, actor="r", verify_at=3)
        assert check_primary(replica, "iwf", 3, good[2][2], actor="r").diverged is None
        differs = check_primary(replica, "iwf", 3, bad[1][2], actor="r")
        assert differs.diverged == "digest differs from the primary's at version 3"
    finally:
        follower.stop()
        for store in (primary, replica, other):
            store.close()


def test_every_serving_process_drops_a_reset_list_and_loads_the_new_copy(
    tmp_path: Path,
) -> None:
    """Another process's follower that polls only after the reset and the whole re-copy
    (same version again) still drops what it served and loads the new copy."""
    rng = random.Random(12)
    values = [random_digest(rng, MD5) for _ in range(4)]
    primary, replica = new_store(tmp_path / "p"), new_store(tmp_path / "r")
    older = new_store(tmp_path / "o")
    worker = IndexFollower(replica, Index())
    try:
        apply_checked(
            replica, "iwf", primary_batches(primary, values[:3], "a"), actor="r", verify_at=None
        )
        assert served(worker, values) == [True, True, True, False]

        recopy = primary_batches(older, [values[0], values[1], values[3]], "a")
        reset_list(replica, "iwf", actor="r", reason="test")
        checked = apply_checked(replica, "iwf", recopy, actor="r", verify_at=3)
        assert (checked.version, checked.verified) == (3, True)
        # Same version as what the worker serves, another epoch: reloaded, not followed.
        assert served(worker, values) == [True, True, False, True]
        (state,) = worker.lists().values()
        assert (state.version, state.epoch) == (3, 1)
    finally:
        worker.stop()
        for store in (primary, replica, older):
            store.close()


def test_a_replica_restarted_mid_copy_starts_not_serving_and_finishes_the_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A list left unverified (the replica stopped during a re-copy) is not served after a
    restart, not even before the primary is reachable; health says so from the start."""
    monkeypatch.setattr(replica_module, "INITIAL_BACKOFF", 0.05)
    monkeypatch.setattr(replica_module, "MAX_BACKOFF", 0.2)
    rng = random.Random(13)
    values = [random_digest(rng, MD5) for _ in range(3)]
    port = _free_port()
    primary = serve(tmp_path / "primary", port, {})
    primary.tokens.update(
        {name: primary.service.store.add_tenant(name, role) for name, role in TENANTS.items()}
    )
    tokens = primary.tokens
    primary.lists().create_list("iwf")
    batches(primary.lists(), "a", values, 1)
    replica = start_replica(tmp_path / "replica", primary.address, tokens)
    try:
        eventually(lambda: same_lists(primary, replica), "the replica copied the primary")
        assert matched(replica, values[0])
        replica.service.stop(grace=0)
        primary.service.stop(grace=0)

        # Stopped half-way through a re-copy: reset, then the first batch copied again.
        store = Store(tmp_path / "replica")
        reset_list(store, "iwf", actor="test", reason="test")
        store.close()
        replica = start_replica(tmp_path / "replica", primary.address, tokens)
        assert health_now(replica) == NOT_SERVING
        assert not matched(replica, values[0])
        assert gauge(replica, "hashmatch_replica_unverified_lists") == 1
        assert gauge(replica, "hashmatch_replica_list_verified", list="iwf") == 0

        primary = serve(tmp_path / "primary", port, tokens)
        eventually(lambda: same_lists(primary, replica), "the replica finished the copy")
        eventually(lambda: health_now(replica) == SERVING, "the replica serves again")
        assert all(matched(replica, value) for value in values)
        assert gauge(replica, "hashmatch_replica_unverified_lists") == 0
    finally:
        replica.service.stop(grace=0)
        primary.service.stop(grace=0)

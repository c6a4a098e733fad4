"""A read replica follows its primary: same lists, same digests, same verdicts."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from conftest import TENANTS, Running, same_lists, start, start_replica
from hashmatch.client import (
    MD5,
    PDQ,
    Connection,
    FailedPrecondition,
    MatchClient,
    RetryPolicy,
    Unauthenticated,
)
from hashmatch.client.list_client import build_batch
from hashmatch.server.app import build
from hashmatch.server.settings import Settings
from hashmatch.server.store.changelog import QUARANTINE, RELEASE
from helpers import eventually, hashes, random_digest, random_pdq, retire, upsert


def test_replica_mirrors_lists_tenants_and_verdicts(tmp_path: Path) -> None:
    rng = random.Random(1)
    primary = start(tmp_path / "primary")
    replica = start_replica(tmp_path / "replica", primary.address, primary.tokens)
    try:
        lists = primary.lists()
        lists.create_list("iwf")
        md5s = [random_digest(rng, MD5) for _ in range(300)]
        pdqs = [random_pdq(rng) for _ in range(100)]
        lists.upload_changes(
            [
                build_batch(
                    "iwf",
                    f"m{i}",
                    [
                        upsert(MD5, v, f"M-{i}-{j}")
                        for j, v in enumerate(md5s[i * 100 : (i + 1) * 100])
                    ],
                )
                for i in range(3)
            ]
            + [build_batch("iwf", "p", [upsert(PDQ, v, f"P-{j}") for j, v in enumerate(pdqs)])]
        )
        lists.apply_changes("iwf", "retract", [retire(MD5, md5s[0]), retire(PDQ, pdqs[0])])
        eventually(lambda: same_lists(primary, replica), "replica holds the primary's lists")
        # Every list verified against the primary's digests: served, and health says so.
        metrics = replica.service.metrics
        assert metrics is not None
        assert metrics.registry.get_sample_value("hashmatch_replica_unverified_lists") == 0
        verified = metrics.registry.get_sample_value(
            "hashmatch_replica_list_verified", {"list": "iwf"}
        )
        assert verified == 1
        assert replica.service.follower.unverified() == frozenset()

        # The primary's platform token works on the replica, with the same verdicts.
        for client in (primary.matcher(), replica.matcher()):
            assert not client.match(hashes((MD5, md5s[0]))).matched
            assert not client.match(hashes((PDQ, pdqs[0]))).matched
            assert [r.reference_id for r in client.match(hashes((MD5, md5s[150]))).references] == [
                "M-1-50"
            ]
            assert client.match(hashes((PDQ, pdqs[5]))).matched

        # Quarantine and release are change-log events the replica follows too.
        primary.service.store.apply_event("iwf", QUARANTINE, ["M-1-50"], actor="test")
        primary.service.follower.catch_up()
        eventually(
            lambda: not replica.matcher().match(hashes((MD5, md5s[150]))).matched,
            "the replica honours the quarantine",
        )
        primary.service.store.apply_event("iwf", RELEASE, ["M-1-50"], actor="test")
        eventually(
            lambda: replica.matcher().match(hashes((MD5, md5s[150]))).matched,
            "the replica honours the release",
        )

        with pytest.raises(FailedPrecondition) as err:
            replica.lists().apply_changes("iwf", "x", [upsert(MD5, bytes(16), "R")])
        assert err.value.reason == "ERROR_REASON_READ_ONLY_REPLICA"
        assert primary.address in err.value.message

        # A revocation on the primary reaches the replica.
        primary.service.store.revoke_tokens("platform")

        def revoked() -> bool:
            try:
                replica.matcher().match(hashes((MD5, md5s[1])))
            except Unauthenticated:
                return True
            return False

        eventually(revoked, "the revoked token is refused by the replica")

        # A replica restart resumes from its own version; later batches still arrive.
        replica.service.stop(grace=0)
        lists.apply_changes("iwf", "after", [retire(MD5, md5s[1])])
        lists.create_list("second")
        lists.apply_changes("second", "s1", [upsert(MD5, md5s[2], "S")])
        replica = start_replica(tmp_path / "replica", primary.address, primary.tokens)
        eventually(lambda: same_lists(primary, replica), "restarted replica caught up")
    finally:
        replica.service.stop(grace=0)
        primary.service.stop(grace=0)


def test_replica_follows_many_lists_on_one_stream(tmp_path: Path) -> None:
    """More lists than any thread pool, and a primary that admits one stream per tenant:
    the replica still copies them all, and the primary keeps answering platforms."""
    rng = random.Random(2)
    service = build(
        Settings(
            data_dir=tmp_path / "primary",
            listen="127.0.0.1:0",
            poll_interval=0.01,
            max_tenant_streams=1,
        )
    )
    tokens = {name: service.store.add_tenant(name, role) for name, role in TENANTS.items()}
    primary = Running(service, tokens)
    lists = primary.lists()
    entries = {}
    for i in range(40):
        name = f"list-{i:02d}"
        lists.create_list(name)
        entries[name] = [random_digest(rng, MD5) for _ in range(3)]
        for j, value in enumerate(entries[name]):
            lists.apply_changes(name, f"b{j}", [upsert(MD5, value, f"{name}-{j}")])
    replica = start_replica(tmp_path / "replica", primary.address, primary.tokens)
    try:
        eventually(lambda: same_lists(primary, replica), "replica holds all 40 lists")
        result = replica.matcher().match(hashes((MD5, entries["list-39"][2])))
        assert [(r.list, r.reference_id) for r in result.references] == [("list-39", "list-39-2")]
        # The replica's threads do not grow with its lists.
        ours = [t.name for t in threading.enumerate() if t.name.startswith("replica")]
        assert len(ours) <= 2, ours

        # The primary answers a platform at once while the replica follows, and while a
        # hotline keeps writing to every list (a deadline, not a timing assertion).
        platform = MatchClient(
            Connection(
                server=primary.address,
                token=tokens["platform"],
                timeout=5.0,
                retry=RetryPolicy(attempts=1),
            )
        )
        for i in range(40):
            name = f"list-{i:02d}"
            lists.apply_changes(name, "more", [upsert(MD5, random_digest(rng, MD5), "X")])
            assert platform.match(hashes((MD5, entries[name][0]))).matched

        # A list created after the replica started appears there, with its batches.
        lists.create_list("late")
        late = random_digest(rng, MD5)
        lists.apply_changes("late", "l1", [upsert(MD5, late, "LATE")])
        eventually(
            lambda: replica.matcher().match(hashes((MD5, late))).matched,
            "the new list is served by the replica",
        )

        # A retraction reaches the replica.
        lists.apply_changes("list-07", "retract", [retire(MD5, entries["list-07"][1])])
        eventually(
            lambda: not replica.matcher().match(hashes((MD5, entries["list-07"][1]))).matched,
            "the retraction is honoured by the replica",
        )
        eventually(lambda: same_lists(primary, replica), "replica caught up with every list")

        # A token revoked on the primary is refused by the replica, on the same stream.
        primary.service.store.revoke_tokens("platform")

        def revoked() -> bool:
            try:
                replica.matcher().match(hashes((MD5, late)))
            except Unauthenticated:
                return True
            return False

        eventually(revoked, "the revoked token is refused by the replica")
    finally:
        replica.service.stop(grace=0)
        primary.service.stop(grace=0)

"""List integrity and trust: feedback, flood quarantine, subscriptions, allow-lists, probes."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import grpc
import pytest

from conftest import Running
from hashmatch.client import MD5, PDQ, SHA256, InvalidArgument, PermissionDenied, make_hash
from hashmatch.client.errors import from_rpc_error
from hashmatch.server.matching import flood
from hashmatch.server.matching.probes import ProbeDetector, ProbePolicy
from hashmatch.server.metrics import Metrics
from hashmatch.server.store import Role, Store
from hashmatch.server.store.records import FloodPolicy, FloodStat, TenantShare
from hashmatch.server.sync.follower import IndexFollower
from hashmatch.server.sync.stats import MatchCounts, StatsFlusher
from hashmatch.v1 import lists_pb2, lists_pb2_grpc, platform_pb2, platform_pb2_grpc
from helpers import (
    benign_mix,
    boundary_walk,
    eventually,
    flip_bits,
    hashes,
    random_digest,
    random_pdq,
    upsert,
)


def meta(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def platform_stub(running: Running) -> platform_pb2_grpc.PlatformServiceStub:
    return platform_pb2_grpc.PlatformServiceStub(grpc.insecure_channel(running.address))


def list_stub(running: Running) -> lists_pb2_grpc.ListServiceStub:
    return lists_pb2_grpc.ListServiceStub(grpc.insecure_channel(running.address))


def test_false_positive_feedback_reaches_the_owner_only(running: Running) -> None:
    value = random_digest(random.Random(1), SHA256)
    running.lists().create_list("iwf")
    running.lists().apply_changes("iwf", "b1", [upsert(SHA256, value, "IWF-7")])
    assert running.matcher().match(hashes((SHA256, value))).matched
    stub = platform_stub(running)
    token = running.tokens["platform"]
    report = platform_pb2.ReportFalsePositiveRequest(
        list="iwf",
        reference_id="IWF-7",
        reason=lists_pb2.FEEDBACK_REASON_BENIGN,
        note="family photo",
    )
    # Counts reach the store within a flush interval; until then the reference is unknown.
    eventually(lambda: _reported(stub, report, token), "the report is accepted")
    stub.ReportFalsePositive(report, metadata=meta(token), timeout=5)

    owner = list_stub(running)
    feedback = owner.GetFeedback(
        lists_pb2.GetFeedbackRequest(list="iwf"),
        metadata=meta(running.tokens["hotline-a"]),
        timeout=5,
    )
    [ref] = feedback.references
    assert (ref.reference_id, ref.total, list(ref.notes)) == ("IWF-7", 2, ["family photo"] * 2)
    assert [(c.reason, c.count) for c in ref.counts] == [(lists_pb2.FEEDBACK_REASON_BENIGN, 2)]
    # Another hotline is told the list does not exist; a platform may not ask at all.
    for tenant, code in (
        ("hotline-b", grpc.StatusCode.NOT_FOUND),
        ("platform", grpc.StatusCode.PERMISSION_DENIED),
    ):
        with pytest.raises(grpc.RpcError) as err:
            owner.GetFeedback(
                lists_pb2.GetFeedbackRequest(list="iwf"),
                metadata=meta(running.tokens[tenant]),
                timeout=5,
            )
        assert err.value.code() == code
    never = platform_pb2.ReportFalsePositiveRequest(
        list="iwf", reference_id="NEVER", reason=lists_pb2.FEEDBACK_REASON_OTHER
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.ReportFalsePositive(never, metadata=meta(token), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    bad = platform_pb2.ReportFalsePositiveRequest(list="iwf", reference_id="IWF-7")
    with pytest.raises(grpc.RpcError) as err:
        stub.ReportFalsePositive(bad, metadata=meta(token), timeout=5)
    assert isinstance(from_rpc_error(err.value), InvalidArgument)


def _reported(
    stub: platform_pb2_grpc.PlatformServiceStub,
    report: platform_pb2.ReportFalsePositiveRequest,
    token: str,
) -> bool:
    try:
        stub.ReportFalsePositive(report, metadata=meta(token), timeout=5)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return False
        raise
    return True


def test_a_flooding_reference_is_quarantined_then_released(running: Running) -> None:
    rng = random.Random(2)
    flooding, steady = random_digest(rng, MD5), random_digest(rng, MD5)
    owner = list_stub(running)
    hotline = meta(running.tokens["hotline-a"])
    owner.CreateList(
        lists_pb2.CreateListRequest(
            name="iwf",
            flood=lists_pb2.FloodPolicy(factor=5, min_matches=30, window_seconds=600),
        ),
        metadata=hotline,
        timeout=5,
    )
    running.lists().apply_changes(
        "iwf", "b1", [upsert(MD5, flooding, "MEME"), upsert(MD5, steady, "REAL")]
    )
    client = running.matcher()
    results = client.match_batch([(f"u{i}", hashes((MD5, flooding))) for i in range(40)])
    assert all(r.matched for r in results)
    assert client.match(hashes((MD5, steady))).matched

    def quarantined() -> list[str]:
        response = owner.ListQuarantine(
            lists_pb2.ListQuarantineRequest(list="iwf"), metadata=hotline, timeout=5
        )
        return [r.reference_id for r in response.references]

    eventually(lambda: quarantined() == ["MEME"], "the flooding reference is quarantined")
    eventually(lambda: not client.match(hashes((MD5, flooding))).matched, "platforms get NO_MATCH")
    assert client.match(hashes((MD5, steady))).matched
    info = running.lists().get_list("iwf")
    assert info.version == 2  # the quarantine is a change-log event of its own
    record = owner.ListQuarantine(
        lists_pb2.ListQuarantineRequest(list="iwf"), metadata=hotline, timeout=5
    ).references[0]
    assert record.window_matches >= 30

    released = owner.ReleaseQuarantine(
        lists_pb2.ReleaseQuarantineRequest(list="iwf", reference_ids=["MEME"]),
        metadata=hotline,
        timeout=5,
    )
    assert (released.released, released.version) == (1, 3)
    assert client.match(hashes((MD5, flooding))).matched
    events = running.lists("replica").watch_changes("iwf", 1, timeout=10)
    assert list(next(events).quarantined) == ["MEME"]
    assert list(next(events).released) == ["MEME"]
    events.close()


def test_flood_baseline_needs_a_jump_not_just_volume() -> None:
    policy = FloodPolicy(factor=10, min_matches=50, window_seconds=60)

    def add(stat: FloodStat, matches: int, t: float) -> tuple[FloodStat, bool]:
        # One platform (no share cap) adding `matches` at time t.
        new, _, tripped = flood.judge(stat, [(TenantShare(), matches, t)], policy, 1, t)
        return new, tripped

    stat, t = FloodStat(), 1000.0
    for _ in range(30):  # a steadily popular reference: 100 matches a minute
        stat, tripped = add(stat, 100, t)
        assert not tripped or stat.baseline < 10
        t += 60
    stat, tripped = add(stat, 300, t)
    assert not tripped, "3x its usual rate is not a flood"
    stat, tripped = add(stat, 1_000, t)
    assert tripped, "13x its usual rate is"
    stat, tripped = add(FloodStat(), 49, t)
    assert not tripped, "below min_matches nothing trips"


def test_subscriptions_change_verdicts_only_for_their_platform(running: Running) -> None:
    value = random_digest(random.Random(3), MD5)
    other_token = running.service.store.add_tenant("platform-2", Role.PLATFORM)
    running.lists("hotline-a").create_list("cat-a")
    running.lists("hotline-b").create_list("cat-b")
    running.lists("hotline-a").apply_changes("cat-a", "a", [upsert(MD5, value, "A")])
    running.lists("hotline-b").apply_changes("cat-b", "b", [upsert(MD5, value, "B")])
    stub = platform_stub(running)
    token = running.tokens["platform"]
    subs = stub.SetSubscriptions(
        platform_pb2.SetSubscriptionsRequest(lists=["cat-b"]), metadata=meta(token), timeout=5
    )
    assert (subs.all_lists, list(subs.lists), list(subs.available)) == (
        False,
        ["cat-b"],
        ["cat-a", "cat-b"],
    )
    mine = running.matcher().match(hashes((MD5, value)))
    assert [r.list for r in mine.references] == ["cat-b"]
    from hashmatch.client import Connection, MatchClient, RetryPolicy

    other = MatchClient(
        Connection(server=running.address, token=other_token, retry=RetryPolicy(attempts=1))
    )
    assert sorted(r.list for r in other.match(hashes((MD5, value))).references) == [
        "cat-a",
        "cat-b",
    ]
    with pytest.raises(grpc.RpcError) as err:
        stub.SetSubscriptions(
            platform_pb2.SetSubscriptionsRequest(lists=["nope"]), metadata=meta(token), timeout=5
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        stub.GetSubscriptions(
            platform_pb2.GetSubscriptionsRequest(),
            metadata=meta(running.tokens["hotline-a"]),
            timeout=5,
        )
    assert isinstance(from_rpc_error(err.value), PermissionDenied)


def test_an_allow_list_suppresses_matches_for_its_platform_only(running: Running) -> None:
    rng = random.Random(4)
    listed = random_pdq(rng)
    other_token = running.service.store.add_tenant("platform-2", Role.PLATFORM)
    running.lists().create_list("iwf")
    running.lists().apply_changes("iwf", "b1", [upsert(PDQ, listed, "P")])
    reviewed = flip_bits(listed, 6, rng)  # the platform's own copy, reviewed as benign
    stub = platform_stub(running)
    token = running.tokens["platform"]
    added = stub.UpdateAllowList(
        platform_pb2.UpdateAllowListRequest(add=[make_hash(PDQ, reviewed)]),
        metadata=meta(token),
        timeout=5,
    )
    assert added.size == 1
    near = flip_bits(reviewed, 3, rng)
    assert not running.matcher().match(hashes((PDQ, near))).matched
    from hashmatch.client import Connection, MatchClient, RetryPolicy

    other = MatchClient(
        Connection(server=running.address, token=other_token, retry=RetryPolicy(attempts=1))
    )
    assert other.match(hashes((PDQ, near))).matched
    stub.UpdateAllowList(
        platform_pb2.UpdateAllowListRequest(remove=[make_hash(PDQ, reviewed)]),
        metadata=meta(token),
        timeout=5,
    )
    assert running.matcher().match(hashes((PDQ, near))).matched


def test_a_boundary_walk_is_throttled_before_it_learns_64_bits(running: Running) -> None:
    rng = random.Random(5)
    listed = random_pdq(rng)
    running.lists().create_list("iwf")
    running.lists().apply_changes("iwf", "b1", [upsert(PDQ, listed, "P")])
    stub = running.matcher()._stub  # raw stub: the SDK would retry RESOURCE_EXHAUSTED
    token = running.tokens["platform"]

    def match(value: bytes) -> bool:
        from hashmatch.v1 import match_pb2

        request = match_pb2.MatchRequest(hashes=[make_hash(PDQ, value)])
        return stub.Match(request, metadata=meta(token), timeout=5).verdict == 2

    queries, learned, throttled = boundary_walk(match, listed, rng)
    assert throttled and learned < 64, (queries, learned)
    audit = running.service.store.audit_log(20)
    assert any(r["action"] == "throttle" and r["tenant"] == "platform" for r in audit)
    assert all(listed.hex() not in str(r) for r in audit)
    # Exact hashes still work for the throttled platform.
    running.lists().apply_changes("iwf", "b2", [upsert(MD5, bytes(range(16)), "M")])
    assert running.matcher().match(hashes((MD5, bytes(range(16))))).matched


def test_benign_traffic_raises_no_flag() -> None:
    """100,000 ordinary queries: random uploads, bursts of re-uploaded near-duplicates of
    listed images (which match), and dihedral sets whose rotations do not match."""
    detector = ProbeDetector(ProbePolicy())
    assert benign_mix(detector, 100_000, random.Random(6)) >= 100_000
    assert detector.flags == 0


def test_the_same_image_not_matching_after_a_retraction_is_no_probe() -> None:
    rng = random.Random(7)
    detector = ProbeDetector(ProbePolicy(flag_after=2))
    image = random_pdq(rng)
    detector.observe("p", [image], [])
    for _ in range(10):  # polled again after its entry was retired
        assert not detector.observe("p", [], [image])
    assert detector.observe("p", [], [flip_bits(image, 1, rng), flip_bits(image, 2, rng)])


# -- trust rules that know who matched -------------------------------------------------


def _second_platform(running: Running) -> str:
    running.tokens["platform-2"] = running.service.store.add_tenant("platform-2", Role.PLATFORM)
    return "platform-2"


def _flood_list(running: Running, reference: str, value: bytes) -> None:
    list_stub(running).CreateList(
        lists_pb2.CreateListRequest(
            name="iwf",
            flood=lists_pb2.FloodPolicy(factor=5, min_matches=30, window_seconds=600),
        ),
        metadata=meta(running.tokens["hotline-a"]),
        timeout=5,
    )
    running.lists().apply_changes("iwf", "b1", [upsert(MD5, value, reference)])


def _reference_matches(running: Running, reference: str) -> int:
    """The owner's count for the reference: it moves once a flush reached the store."""
    stats = list_stub(running).GetReferenceStats(
        lists_pb2.GetReferenceStatsRequest(list="iwf"),
        metadata=meta(running.tokens["hotline-a"]),
        timeout=5,
    )
    return sum(r.matches for r in stats.references if r.reference_id == reference)


def _quarantined(running: Running) -> list[str]:
    response = list_stub(running).ListQuarantine(
        lists_pb2.ListQuarantineRequest(list="iwf"),
        metadata=meta(running.tokens["hotline-a"]),
        timeout=5,
    )
    return [r.reference_id for r in response.references]


def test_one_platform_alone_cannot_quarantine_a_reference_for_others(running: Running) -> None:
    value = random_digest(random.Random(8), MD5)
    other = _second_platform(running)
    _flood_list(running, "MEME", value)
    mine = running.matcher()
    results = mine.match_batch([(f"u{i}", hashes((MD5, value))) for i in range(300)])
    assert all(r.matched for r in results)
    # The flush that carries the 300 matches is the one that would have quarantined.
    eventually(lambda: _reference_matches(running, "MEME") == 300, "the matches are counted")
    assert _quarantined(running) == []
    assert running.matcher(other).match(hashes((MD5, value))).matched
    assert mine.match(hashes((MD5, value))).matched

    # A second platform seeing the same surge is what quarantines it.
    theirs = running.matcher(other).match_batch(
        [(f"v{i}", hashes((MD5, value))) for i in range(20)]
    )
    assert all(r.matched for r in theirs)
    eventually(lambda: _quarantined(running) == ["MEME"], "two platforms' surge quarantines")
    eventually(lambda: not mine.match(hashes((MD5, value))).matched, "platforms get NO_MATCH")
    # The owner's statistics still count every match, of every platform, as one number.
    assert _reference_matches(running, "MEME") == 300 + 1 + 1 + 20


def test_a_platform_reports_only_references_that_matched_for_it(running: Running) -> None:
    value = random_digest(random.Random(9), SHA256)
    other = _second_platform(running)
    running.lists().create_list("iwf")
    running.lists().apply_changes("iwf", "b1", [upsert(SHA256, value, "IWF-7")])
    assert running.matcher().match(hashes((SHA256, value))).matched
    eventually(lambda: _reference_matches(running, "IWF-7") == 1, "the match is counted")
    stub = platform_stub(running)

    def refused(reference_id: str) -> tuple[object, ...]:
        report = platform_pb2.ReportFalsePositiveRequest(
            list="iwf", reference_id=reference_id, reason=lists_pb2.FEEDBACK_REASON_BENIGN
        )
        with pytest.raises(grpc.RpcError) as err:
            stub.ReportFalsePositive(report, metadata=meta(running.tokens[other]), timeout=5)
        return (
            err.value.code(),
            err.value.details(),
            [(k, v) for k, v in err.value.trailing_metadata() or () if k != "date"],
        )

    # Platform 2 never matched IWF-7: its report is refused exactly like one for a
    # reference no one ever matched, so the refusal does not tell it that someone did.
    only_theirs, made_up = refused("IWF-7"), refused("NEVER")
    assert only_theirs[0] == grpc.StatusCode.NOT_FOUND
    assert only_theirs == made_up
    feedback = list_stub(running).GetFeedback(
        lists_pb2.GetFeedbackRequest(list="iwf"),
        metadata=meta(running.tokens["hotline-a"]),
        timeout=5,
    )
    assert list(feedback.references) == []

    # The platform that matched it may report it.
    report = platform_pb2.ReportFalsePositiveRequest(
        list="iwf", reference_id="IWF-7", reason=lists_pb2.FEEDBACK_REASON_BENIGN
    )
    stub.ReportFalsePositive(report, metadata=meta(running.tokens["platform"]), timeout=5)
    # And once platform 2 matched it too, so may platform 2.
    assert running.matcher(other).match(hashes((SHA256, value))).matched
    eventually(lambda: _reported(stub, report, running.tokens[other]), "platform 2 may report")


def _store_with(tmp_path: Path, *platforms: str) -> tuple[Store, int]:
    store = Store(tmp_path)
    store.add_tenant("owner", Role.HOTLINE)
    for name in platforms:
        store.add_tenant(name, Role.PLATFORM)
    policy = FloodPolicy(factor=5, min_matches=30, window_seconds=600)
    listed = store.create_list("iwf", "owner", pdq_threshold=31, pdq_min_quality=50, flood=policy)
    return store, listed.id


def test_each_platform_counts_toward_a_flood_at_most_half_of_min_matches(
    tmp_path: Path,
) -> None:
    store, lid = _store_with(tmp_path, "a", "b")
    t = 1_000_000.0
    try:
        assert (
            store.add_match_counts(judge=flood.judge, counts={("a", lid, "R"): (300, t)}, now=t)
            == []
        )
        assert (
            store.add_match_counts(
                judge=flood.judge, counts={("a", lid, "R"): (300, t + 1)}, now=t + 1
            )
            == []
        )
        assert store.quarantined(lid) == {}
        # Platform b's 14 more: 15 + 14 is still below min_matches (30).
        assert (
            store.add_match_counts(
                judge=flood.judge, counts={("b", lid, "R"): (14, t + 2)}, now=t + 2
            )
            == []
        )
        assert store.add_match_counts(
            judge=flood.judge, counts={("b", lid, "R"): (1, t + 3)}, now=t + 3
        ) == [("iwf", "R")]
        assert store.quarantined(lid)["R"]["window_matches"] == 30
        # Totals stay per reference, every platform summed; who matched is not in them.
        assert store.match_counts(lid) == [("R", 615, t + 3)]
    finally:
        store.close()


def test_a_platform_share_starts_again_with_each_window(tmp_path: Path) -> None:
    store, lid = _store_with(tmp_path, "a", "b")
    t = 1_000_000.0
    try:
        assert (
            store.add_match_counts(judge=flood.judge, counts={("a", lid, "R"): (15, t)}, now=t)
            == []
        )
        # Ten windows later the baseline has decayed; a's new share and b's trip it.
        later = t + 6000
        assert (
            store.add_match_counts(
                judge=flood.judge, counts={("a", lid, "R"): (15, later)}, now=later
            )
            == []
        )
        assert store.add_match_counts(
            judge=flood.judge,
            counts={("b", lid, "R"): (15, later), ("a", lid, "S"): (99, later)},
            now=later,
        ) == [("iwf", "R")]
    finally:
        store.close()


def test_a_single_platform_store_still_quarantines_on_its_own(tmp_path: Path) -> None:
    store, lid = _store_with(tmp_path, "a")
    t = 1_000_000.0
    try:
        assert store.add_match_counts(
            judge=flood.judge, counts={("a", lid, "R"): (300, t)}, now=t
        ) == [("iwf", "R")]
        assert store.quarantined(lid)["R"]["window_matches"] == 300
    finally:
        store.close()


def test_has_matched_is_per_tenant(tmp_path: Path) -> None:
    store, lid = _store_with(tmp_path, "a", "b")
    try:
        store.add_match_counts(judge=flood.judge, counts={("a", lid, "R"): (1, 5.0)}, now=5.0)
        assert store.has_matched("a", lid, "R")
        assert not store.has_matched("b", lid, "R")
        assert not store.has_matched("a", lid, "S")
        assert not store.has_matched("a", lid + 1, "R")
    finally:
        store.close()


class _Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.flushed: list[dict[tuple[str, int, str], tuple[int, float]]] = []

    def add_match_counts(
        self, counts: dict[tuple[str, int, str], tuple[int, float]], judge: object
    ) -> list[tuple[str, str]]:
        if self.fail:
            raise OSError("disk gone")
        self.flushed.append(counts)
        return []


def test_match_counts_are_kept_per_tenant_and_take_the_cores_rows() -> None:
    counts = MatchCounts()
    counts.add_many([("a", 1, "R", 2, 1.0), ("a", 2, "S", 1, 1.0), ("b", 1, "R", 1, 1.0)])
    counts.add_many([("a", 1, "R", 5, 10.0), ("c", 1, "R", 2, 11.0), ("c", 1, "R", 1, 9.0)])
    counts.add_many([])
    pending = counts.take()
    assert {key: n for key, (n, _) in pending.items()} == {
        ("a", 1, "R"): 7,
        ("a", 2, "S"): 1,
        ("b", 1, "R"): 1,
        ("c", 1, "R"): 3,
    }
    assert pending[("c", 1, "R")][1] == 11.0
    assert counts.take() == {}

    failing = _Recorder(fail=True)
    # The core counted nothing more: only what was handed over is flushed.
    core = SimpleNamespace(take_counts=list)
    follower = cast(IndexFollower, SimpleNamespace(index=core, lists=dict))
    flusher = StatsFlusher(cast(Store, failing), follower, counts, Metrics.create(), 1.0)
    counts.add_many([("a", 1, "R", 2, 20.0)])
    with pytest.raises(OSError):
        flusher.flush()
    counts.add_many([("a", 1, "R", 1, 30.0)])
    recorder = _Recorder()
    flusher.store = cast(Store, recorder)
    flusher.flush()
    assert recorder.flushed == [{("a", 1, "R"): (3, 30.0)}]

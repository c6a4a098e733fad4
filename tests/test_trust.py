"""List integrity and trust: feedback, flood quarantine, subscriptions, allow-lists, probes."""

from __future__ import annotations

import random

import grpc
import pytest

from conftest import Running
from hashmatch.client import MD5, PDQ, SHA256, InvalidArgument, PermissionDenied, make_hash
from hashmatch.client.errors import from_rpc_error
from hashmatch.server.matching.flood import FloodPolicy, FloodStat
from hashmatch.server.matching.probes import ProbeDetector, ProbePolicy
from hashmatch.server.store import Role
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
    for tenant in ("hotline-b", "platform"):
        with pytest.raises(grpc.RpcError) as err:
            owner.GetFeedback(
                lists_pb2.GetFeedbackRequest(list="iwf"),
                metadata=meta(running.tokens[tenant]),
                timeout=5,
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
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
    stat, t = FloodStat(), 1000.0
    for _ in range(30):  # a steadily popular reference: 100 matches a minute
        stat, tripped = stat.add(100, t, t, policy)
        assert not tripped or stat.baseline < 10
        t += 60
    stat, tripped = stat.add(300, t, t, policy)
    assert not tripped, "3x its usual rate is not a flood"
    stat, tripped = stat.add(1_000, t, t, policy)
    assert tripped, "13x its usual rate is"
    stat, tripped = FloodStat().add(49, t, t, policy)
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

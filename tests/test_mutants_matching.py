"""Flood judgement (matching/flood.py) at each of its boundaries, with values worked out by
hand, and the match path's refusals (matching/matcher.py) in full: written for the mutants
the other tests let live (benchmarks/mutation)."""

from __future__ import annotations

import random
import time

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from test_planted_bugs import flip_positions

from conftest import Running
from hashmatch.client import MD5, PDQ, InvalidArgument, ResourceExhausted, make_hash
from hashmatch.server.matching.flood import judge, rolled, tenant_cap
from hashmatch.server.matching.probes import ProbePolicy
from hashmatch.server.store.records import FloodPolicy, FloodStat, TenantShare
from hashmatch.v1 import match_pb2, match_pb2_grpc
from helpers import flip_bits, random_digest, random_pdq, upsert

POLICY = FloodPolicy(factor=3, min_matches=10, window_seconds=60)


@pytest.mark.parametrize(
    ("min_matches", "platforms", "cap"),
    [(10, 0, None), (10, 1, None), (10, 2, 5), (9, 2, 5), (9, 7, 5), (1, 2, 1), (0, 3, 1)],
)
def test_tenant_cap_is_half_the_minimum_rounded_up(
    min_matches: int, platforms: int, cap: int | None
) -> None:
    assert tenant_cap(FloodPolicy(3, min_matches, 60), platforms) == cap


def test_the_first_match_opens_the_window_at_now() -> None:
    stat = FloodStat(total=4, last=9.0, window_start=0.0, window_count=2, baseline=1.5)
    assert rolled(stat, 1000.0, POLICY) == FloodStat(4, 9.0, 1000.0, 2, 1.5)


def test_within_the_window_nothing_moves() -> None:
    stat = FloodStat(total=4, last=9.0, window_start=1000.0, window_count=2, baseline=1.5)
    assert rolled(stat, 1059.9, POLICY) == stat


def test_a_window_ends_exactly_at_its_width() -> None:
    stat = FloodStat(total=4, last=9.0, window_start=1000.0, window_count=10, baseline=5.0)
    moved = rolled(stat, 1060.0, POLICY)
    # 0.8 * 5 + 0.2 * 10
    assert moved == FloodStat(4, 9.0, 1060.0, 0, pytest.approx(6.0))


def test_empty_windows_pull_the_baseline_down() -> None:
    stat = FloodStat(total=4, last=9.0, window_start=1000.0, window_count=10, baseline=5.0)
    moved = rolled(stat, 1000.0 + 3 * 60 + 59, POLICY)
    # Three windows: the counted one (6.0 as above), then two empty ones (x 0.8 each).
    assert moved.window_start == 1180.0
    assert moved.window_count == 0
    assert moved.baseline == pytest.approx(6.0 * 0.8 * 0.8)


def test_a_zero_width_window_counts_as_one_second() -> None:
    stat = FloodStat(window_start=1000.0, window_count=3, baseline=0.0)
    moved = rolled(stat, 1002.5, FloodPolicy(3, 10, 0))
    assert (moved.window_start, moved.window_count) == (1002.0, 0)
    assert moved.baseline == pytest.approx(0.2 * 3 * 0.8)


def test_judge_sums_tenants_and_keeps_the_latest_time() -> None:
    stat = FloodStat(total=100, last=50.0, window_start=1000.0, window_count=1, baseline=2.0)
    shares = [
        (TenantShare(7, 40.0, 1000.0, 1), 2, 1010.0),
        (TenantShare(0, 0.0, 0.0, 0), 3, 1020.0),
    ]
    new, new_shares, tripped = judge(stat, shares, POLICY, 1, 1030.0)
    assert new == FloodStat(105, 1020.0, 1000.0, 6, 2.0)
    assert new_shares == [TenantShare(9, 1010.0, 1000.0, 3), TenantShare(3, 1020.0, 1000.0, 3)]
    assert not tripped


def test_an_older_match_time_does_not_move_last_back() -> None:
    stat = FloodStat(total=1, last=2000.0, window_start=1000.0, window_count=0, baseline=0.0)
    share = TenantShare(1, 2000.0, 1000.0, 0)
    new, (new_share,), _ = judge(stat, [(share, 1, 1500.0)], POLICY, 1, 1030.0)
    assert (new.last, new_share.last) == (2000.0, 2000.0)


def test_the_cap_counts_what_a_tenant_already_added_to_this_window() -> None:
    stat = FloodStat(window_start=1000.0, window_count=4)
    share = TenantShare(matches=4, last=1.0, window_start=1000.0, window_count=4)
    new, (new_share,), _ = judge(stat, [(share, 3, 1010.0)], POLICY, 2, 1030.0)
    # Cap 5, four counted already: one more counts, all three are in the totals.
    assert new_share == TenantShare(7, 1010.0, 1000.0, 5)
    assert (new.total, new.window_count) == (3, 5)


def test_a_share_from_an_older_window_starts_from_zero() -> None:
    stat = FloodStat(window_start=1000.0, window_count=0)
    share = TenantShare(matches=9, last=1.0, window_start=940.0, window_count=2)
    new, (new_share,), _ = judge(stat, [(share, 7, 1010.0)], POLICY, 2, 1030.0)
    # Cap 5, none counted in this window yet: five of the seven count.
    assert new_share == TenantShare(16, 1010.0, 1000.0, 5)
    assert new.window_count == 5


def test_match_times_before_one_second_are_kept() -> None:
    stat = FloodStat(window_start=0.25, window_count=0)
    new, (new_share,), _ = judge(stat, [(TenantShare(), 1, 0.5)], POLICY, 1, 0.75)
    assert (new.last, new_share.last) == (0.5, 0.5)


def test_factor_one_trips_above_the_baseline() -> None:
    assert trips(9, 1, 0.0, FloodPolicy(1, 10, 60))
    assert not trips(8, 1, 0.0, FloodPolicy(1, 10, 60))


def test_a_tenant_past_its_cap_adds_nothing_to_the_window() -> None:
    stat = FloodStat(window_start=1000.0, window_count=9)
    share = TenantShare(matches=5, last=1.0, window_start=1000.0, window_count=5)
    new, (new_share,), tripped = judge(stat, [(share, 4, 1010.0)], POLICY, 2, 1030.0)
    assert (new_share.window_count, new.window_count, new.total) == (5, 9, 4)
    assert not tripped


def trips(window_count: int, new: int, baseline: float, policy: FloodPolicy = POLICY) -> bool:
    stat = FloodStat(window_start=1000.0, window_count=window_count, baseline=baseline)
    return judge(stat, [(TenantShare(), new, 1010.0)], policy, 1, 1030.0)[2]


def test_trips_at_the_minimum_exactly() -> None:
    assert trips(9, 1, 0.0)
    assert not trips(8, 1, 0.0)


def test_trips_only_above_factor_times_baseline() -> None:
    # factor 3, baseline 4: 12 is not above, 13 is.
    assert not trips(11, 1, 4.0)
    assert trips(12, 1, 4.0)


def test_a_baseline_under_one_counts_as_one() -> None:
    loose = FloodPolicy(factor=20, min_matches=10, window_seconds=60)
    # 20 x max(0.5, 1) = 20: 20 matches do not trip, 21 do (20 x 0.5 would have let 11 trip).
    assert not trips(11, 9, 0.5, loose)
    assert not trips(19, 1, 0.5, loose)
    assert trips(20, 1, 0.5, loose)


def test_factor_zero_never_trips() -> None:
    assert not trips(1000, 1000, 0.0, FloodPolicy(0, 1, 60))


def test_a_window_already_full_does_not_trip_without_new_counted_matches() -> None:
    assert not trips(500, 0, 0.0)


# --- the match path's refusals (matching/matcher.py) ---------------------------------------

PAUSED = (
    "PDQ queries from this tenant are paused: its recent queries look like a probe of a listed hash"
)


def pause(running: Running, seconds: float) -> None:
    """The tenant flagged as a prober, as the store's ledger records it."""
    assert running.service.probes is not None
    with running.service.probes.update("platform") as record:
        record.throttled_until = time.time() + seconds


def retry_ms(status: status_pb2.Status) -> int:
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return int(info.retry_delay.ToMilliseconds())
    raise AssertionError("no RetryInfo")


def test_a_paused_tenant_is_told_why_and_for_how_long(running: Running) -> None:
    rng = random.Random(31)
    pdq = make_hash(PDQ, random_pdq(rng), 100)
    pause(running, 300.0)
    with pytest.raises(ResourceExhausted) as err:
        running.matcher().match([pdq])
    assert err.value.message == PAUSED
    assert err.value.retry_delay is not None and 250.0 < err.value.retry_delay <= 300.0

    # In a batch each PDQ item carries the pause, with the time left in milliseconds; an item
    # without PDQ is answered.
    md5 = make_hash(MD5, random_digest(rng, MD5))
    batch = match_pb2.MatchBatchRequest(
        items=[
            match_pb2.MatchRequest(item_id="a", hashes=[md5]),
            match_pb2.MatchRequest(item_id="b", hashes=[pdq]),
        ]
    )
    metadata = (("authorization", f"Bearer {running.tokens['platform']}"),)
    with grpc.insecure_channel(running.address) as channel:
        stub = match_pb2_grpc.MatchServiceStub(channel)
        results = stub.MatchBatch(batch, metadata=metadata, timeout=10).results
    assert results[0].verdict == match_pb2.VERDICT_NO_MATCH
    assert not results[0].HasField("error")
    assert results[1].error.message == PAUSED
    assert 250_000 < retry_ms(results[1].error) <= 300_000


def test_a_bad_field_is_refused_with_its_description(running: Running) -> None:
    with pytest.raises(InvalidArgument) as err:
        running.matcher().match([make_hash(MD5, bytes(3))])
    assert [(v.field, v.description) for v in err.value.violations] == [
        ("hashes[0].value", "must be 16 bytes for this algorithm, got 3")
    ]


def test_items_are_metered_per_item(running: Running) -> None:
    # The meter feeds the per-tenant item rate limit and the items metric: a batch of three
    # counts three, with or without PDQ.
    assert running.service.metrics is not None
    rng = random.Random(32)
    before = items_counted(running)
    running.matcher().match_batch(
        [(f"m{i}", [make_hash(MD5, random_digest(rng, MD5))]) for i in range(3)]
    )
    running.matcher().match_batch(
        [(f"p{i}", [make_hash(PDQ, random_pdq(rng), 100)]) for i in range(2)]
    )
    assert items_counted(running) - before == 5


def items_counted(running: Running) -> float:
    metrics = running.service.metrics
    assert metrics is not None
    return sum(
        s.value for m in metrics.items.collect() for s in m.samples if s.name.endswith("_total")
    )


def test_items_after_a_flag_carry_the_full_cooldown(running: Running) -> None:
    rng = random.Random(33)
    listed = random_pdq(rng)
    running.lists().create_list("iwf")
    running.lists().apply_changes("iwf", "b1", [upsert(PDQ, listed, "R-1", quality=100)])
    # 31 bits away: matches; each one-bit step further away (32) does not, and is a
    # near-miss of the matched query.
    edge = flip_bits(listed, 31, rng)
    same = [b for b in range(256) if not ((edge[b // 8] ^ listed[b // 8]) >> (b % 8)) & 1]
    steps = [flip_positions(edge, [b]) for b in same[:12]]
    items = [match_pb2.MatchRequest(item_id="edge", hashes=[make_hash(PDQ, edge, 100)])]
    items += [
        match_pb2.MatchRequest(item_id=f"s{i}", hashes=[make_hash(PDQ, s, 100)])
        for i, s in enumerate(steps)
    ]
    metadata = (("authorization", f"Bearer {running.tokens['platform']}"),)
    with grpc.insecure_channel(running.address) as channel:
        stub = match_pb2_grpc.MatchServiceStub(channel)
        results = stub.MatchBatch(
            match_pb2.MatchBatchRequest(items=items), metadata=metadata, timeout=10
        ).results
    assert results[0].verdict == match_pb2.VERDICT_MATCH
    budget = ProbePolicy().flag_after
    answered = [r for r in results[1:] if not r.HasField("error")]
    withheld = [r for r in results[1:] if r.HasField("error")]
    assert len(answered) == budget and all(
        r.verdict == match_pb2.VERDICT_NO_MATCH for r in answered
    )
    assert len(withheld) == len(steps) - budget
    for r in withheld:
        assert r.error.message == PAUSED
        assert retry_ms(r.error) == int(ProbePolicy().cooldown * 1000)

"""Flood judgement (matching/flood.py) at each of its boundaries, with values worked out by
hand: written for the mutants the end-to-end flood tests let live (benchmarks/mutation)."""

from __future__ import annotations

import pytest

from hashmatch.server.matching.flood import judge, rolled, tenant_cap
from hashmatch.server.store.records import FloodPolicy, FloodStat, TenantShare

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
    share = TenantShare(matches=9, last=1.0, window_start=940.0, window_count=5)
    _, (new_share,), _ = judge(stat, [(share, 7, 1010.0)], POLICY, 2, 1030.0)
    assert new_share == TenantShare(16, 1010.0, 1000.0, 5)


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

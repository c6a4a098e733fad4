"""Flood detection: when one reference suddenly matches far more than it used to.

A wrongly listed hash (a meme, a logo, a stock photo) can flood a platform with matches.
Each reference keeps a smoothed baseline of its matches per window; a window whose count
reaches the list's minimum and exceeds `factor` times the baseline trips the flood, and
the store quarantines the reference (it answers NO_MATCH until its owner releases it).

A quarantine switches a reference off for every platform, so no single platform may cause
it. While the store holds more than one platform tenant, each platform's matches count
toward a reference's window only up to half the list's `min_matches` (rounded up): at least
two platforms must see the surge. The rest of a platform's matches still count in the
reference's totals, just not toward the flood. With a single platform tenant there is no
one else to protect, and its matches count in full. The baseline is built from the counted
matches, so window and baseline stay in the same units.
"""

from __future__ import annotations

from dataclasses import replace

from hashmatch.server.store.records import DEFAULT_FLOOD, FloodPolicy, FloodStat, TenantShare

__all__ = ["DEFAULT_FLOOD", "FloodPolicy", "judge", "rolled", "tenant_cap"]

# Weight of the newest completed window in the baseline (an exponential moving average).
_ALPHA = 0.2


def tenant_cap(policy: FloodPolicy, platforms: int) -> int | None:
    """The most matches one tenant may add to a reference's flood window; None for no cap
    (a single platform tenant, with no one else to protect)."""
    if platforms <= 1:
        return None
    return max(1, -(-policy.min_matches // 2))


def rolled(stat: FloodStat, now: float, policy: FloodPolicy) -> FloodStat:
    """The same counts with the window moved on to the one `now` falls in."""
    width = max(policy.window_seconds, 1)
    start, count, baseline = stat.window_start, stat.window_count, stat.baseline
    if start == 0.0:
        start = now
    elapsed = now - start
    if elapsed >= width:
        windows = int(elapsed // width)
        baseline = (1 - _ALPHA) * baseline + _ALPHA * count
        # Windows that passed without a match pull the baseline down too.
        baseline *= (1 - _ALPHA) ** (windows - 1)
        start += windows * width
        count = 0
    return replace(stat, window_start=start, window_count=count, baseline=baseline)


def _share(
    share: TenantShare, matches: int, last: float, window_start: float, cap: int | None
) -> tuple[TenantShare, int]:
    """Counts a tenant's new matches; returns how many of them count toward the window
    that starts at `window_start` (all of them without a cap)."""
    counted = share.window_count if share.window_start == window_start else 0
    allowed = matches if cap is None else max(0, min(matches, cap - counted))
    new = TenantShare(
        share.matches + matches, max(share.last, last), window_start, counted + allowed
    )
    return new, allowed


def judge(
    stat: FloodStat,
    shares: list[tuple[TenantShare, int, float]],
    policy: FloodPolicy,
    platforms: int,
    now: float,
) -> tuple[FloodStat, list[TenantShare], bool]:
    """One flush's new matches of one reference, `(tenant's share, matches, last)` per
    tenant: the reference's new statistics, each tenant's new share, and whether the
    current window trips the policy (quarantine)."""
    cap = tenant_cap(policy, platforms)
    current = rolled(stat, now, policy)
    total, newest, counted = 0, 0.0, 0
    new_shares = []
    for share, matches, last in shares:
        share, allowed = _share(share, matches, last, current.window_start, cap)
        new_shares.append(share)
        total, newest, counted = total + matches, max(newest, last), counted + allowed
    count = current.window_count + counted
    new = replace(
        current, total=stat.total + total, last=max(stat.last, newest), window_count=count
    )
    # Only matches that counted can trip it: a platform past its share cannot.
    tripped = (
        policy.factor > 0
        and counted > 0
        and count >= policy.min_matches
        and count > policy.factor * max(current.baseline, 1.0)
    )
    return new, new_shares, tripped

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

import struct
from dataclasses import dataclass
from typing import NamedTuple


class FloodPolicy(NamedTuple):
    # Times the baseline a window must exceed; 0 turns detection off for the list.
    factor: int = 20
    # Matches a window needs before it can trip at all.
    min_matches: int = 100
    window_seconds: int = 60


DEFAULT_FLOOD = FloodPolicy()
# Weight of the newest completed window in the baseline (an exponential moving average).
_ALPHA = 0.2
_PACKED = struct.Struct(">QddQd")
_SHARE = struct.Struct(">QddQ")


def tenant_cap(policy: FloodPolicy, platforms: int) -> int | None:
    """The most matches one tenant may add to a reference's flood window; None for no cap
    (a single platform tenant, with no one else to protect)."""
    if platforms <= 1:
        return None
    return max(1, -(-policy.min_matches // 2))


@dataclass(frozen=True)
class TenantShare:
    """One tenant's matches of one reference: how many, when last, and how many of them
    counted toward the flood window that starts at `window_start`."""

    matches: int = 0
    last: float = 0.0
    window_start: float = 0.0
    window_count: int = 0

    @classmethod
    def unpack(cls, raw: bytes) -> TenantShare:
        return cls(*_SHARE.unpack(raw))

    def pack(self) -> bytes:
        return _SHARE.pack(self.matches, self.last, self.window_start, self.window_count)

    def add(
        self, matches: int, last: float, window_start: float, cap: int | None
    ) -> tuple[TenantShare, int]:
        """Counts the tenant's new matches; returns how many of them count toward the
        window that starts at `window_start` (all of them without a cap)."""
        counted = self.window_count if self.window_start == window_start else 0
        allowed = matches if cap is None else max(0, min(matches, cap - counted))
        share = TenantShare(
            self.matches + matches, max(self.last, last), window_start, counted + allowed
        )
        return share, allowed


@dataclass(frozen=True)
class FloodStat:
    total: int = 0
    last: float = 0.0
    window_start: float = 0.0
    window_count: int = 0
    baseline: float = 0.0

    @classmethod
    def unpack(cls, raw: bytes) -> FloodStat:
        return cls(*_PACKED.unpack(raw))

    def pack(self) -> bytes:
        return _PACKED.pack(
            self.total, self.last, self.window_start, self.window_count, self.baseline
        )

    def rolled(self, now: float, policy: FloodPolicy) -> FloodStat:
        """The same counts with the window moved on to the one `now` falls in."""
        width = max(policy.window_seconds, 1)
        start, count, baseline = self.window_start, self.window_count, self.baseline
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
        return FloodStat(self.total, self.last, start, count, baseline)

    def add(
        self,
        matches: int,
        last: float,
        now: float,
        policy: FloodPolicy,
        counted: int | None = None,
    ) -> tuple[FloodStat, bool]:
        """Counts new matches; `counted` of them (all by default) toward the flood window.
        True when the current window trips the policy."""
        rolled = self.rolled(now, policy)
        added = matches if counted is None else counted
        count = rolled.window_count + added
        stat = FloodStat(
            self.total + matches, max(self.last, last), rolled.window_start, count, rolled.baseline
        )
        # Only matches that counted can trip it: a platform past its share cannot.
        tripped = (
            policy.factor > 0
            and added > 0
            and count >= policy.min_matches
            and count > policy.factor * max(rolled.baseline, 1.0)
        )
        return stat, tripped

"""Flood detection: when one reference suddenly matches far more than it used to.

A wrongly listed hash (a meme, a logo, a stock photo) can flood a platform with matches.
Each reference keeps a smoothed baseline of its matches per window; a window whose count
reaches the list's minimum and exceeds `factor` times the baseline trips the flood, and
the store quarantines the reference (it answers NO_MATCH until its owner releases it).
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

    def add(
        self, matches: int, last: float, now: float, policy: FloodPolicy
    ) -> tuple[FloodStat, bool]:
        """Counts new matches; True when the current window trips the policy."""
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
        count += matches
        stat = FloodStat(self.total + matches, max(self.last, last), start, count, baseline)
        tripped = (
            policy.factor > 0
            and count >= policy.min_matches
            and count > policy.factor * max(baseline, 1.0)
        )
        return stat, tripped

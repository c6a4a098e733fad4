"""Service levels an operator declares with `--slo NAME=VALUE`, and their PASS/FAIL.

Every name is a figure of the sign-off's summary; `max` levels pass when the measured
figure is at most the value, `min` levels when it is at least the value. A level whose
figure could not be measured (e.g. memory on a remote target) is NOT_MEASURED, which
makes the overall verdict INCOMPLETE rather than PASS.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SloSpec:
    name: str
    bound: str  # "max" or "min"
    unit: str
    meaning: str


SLOS: dict[str, SloSpec] = {
    s.name: s
    for s in (
        SloSpec(
            "unary_p50_ms",
            "max",
            "ms",
            "Match latency p50 at the SLO concurrency (one hash per call)",
        ),
        SloSpec("unary_p99_ms", "max", "ms", "Match latency p99 at the SLO concurrency"),
        SloSpec("unary_p999_ms", "max", "ms", "Match latency p99.9 at the SLO concurrency"),
        SloSpec(
            "batch_p99_ms",
            "max",
            "ms",
            "MatchBatch call latency p99 at the SLO concurrency (--batch-size items)",
        ),
        SloSpec(
            "stream_p99_ms",
            "max",
            "ms",
            "MatchStream per-message latency p99 at the SLO concurrency",
        ),
        SloSpec("unary_rps", "min", "calls/s", "peak Match calls per second over the sweep"),
        SloSpec(
            "batch_hashes_per_s",
            "min",
            "hashes/s",
            "peak hashes per second through MatchBatch over the sweep",
        ),
        SloSpec(
            "stream_hashes_per_s",
            "min",
            "hashes/s",
            "peak hashes per second through MatchStream over the sweep",
        ),
        SloSpec("error_rate", "max", "fraction", "failed calls / all calls over every load cell"),
        SloSpec("list_load_s", "max", "s", "seconds to bulk-load the list with UploadChanges"),
        SloSpec("list_load_entries_per_s", "min", "entries/s", "bulk-load rate"),
        SloSpec(
            "retraction_p50_ms",
            "max",
            "ms",
            "retraction sent until every poller answers NO_MATCH, p50 (worst server)",
        ),
        SloSpec("retraction_p99_ms", "max", "ms", "the same, p99"),
        SloSpec(
            "memory_bytes_per_entry",
            "max",
            "bytes",
            "anonymous RSS (heap: the in-memory indexes) added per list entry, all "
            "serving processes",
        ),
        SloSpec(
            "rss_bytes_per_entry",
            "max",
            "bytes",
            "total RSS added per list entry per serving process, mapped LMDB pages included",
        ),
        SloSpec(
            "server_start_s",
            "max",
            "s",
            "seconds for a restarted server to build its indexes from LMDB and serve",
        ),
    )
}

# Checked when no --slo is given: a conservative baseline for a small node, not a promise.
DEFAULT_SLOS: dict[str, float] = {
    "unary_p99_ms": 10.0,
    "batch_hashes_per_s": 20_000.0,
    "error_rate": 0.001,
    "retraction_p99_ms": 1_000.0,
    "list_load_s": 300.0,
    "memory_bytes_per_entry": 1_024.0,
}


class SloError(ValueError):
    pass


def parse(items: Iterable[str]) -> dict[str, float]:
    """`NAME=VALUE` strings to a mapping; unknown names and bad values are errors."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep:
            raise SloError(f"--slo {item!r}: expected NAME=VALUE")
        if name not in SLOS:
            known = ", ".join(SLOS)
            raise SloError(f"--slo {item!r}: unknown service level {name!r} (known: {known})")
        try:
            value = float(raw)
        except ValueError:
            raise SloError(f"--slo {item!r}: {raw!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise SloError(f"--slo {item!r}: the value must be a finite number >= 0")
        out[name] = value
    return out


def evaluate(declared: Mapping[str, float], figures: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per declared level: name, bound, target, measured, unit, status."""
    rows = []
    for name, target in declared.items():
        spec = SLOS[name]
        measured = figures.get(name)
        if measured is None or (isinstance(measured, float) and math.isnan(measured)):
            status = "NOT_MEASURED"
        elif spec.bound == "max":
            status = "PASS" if measured <= target else "FAIL"
        else:
            status = "PASS" if measured >= target else "FAIL"
        rows.append(
            {
                "name": name,
                "bound": spec.bound,
                "target": target,
                "measured": measured,
                "unit": spec.unit,
                "status": status,
                "meaning": spec.meaning,
            }
        )
    return rows


def verdict(rows: Iterable[Mapping[str, Any]]) -> str:
    statuses = {r["status"] for r in rows}
    if "FAIL" in statuses:
        return "FAIL"
    if "NOT_MEASURED" in statuses:
        return "INCOMPLETE"
    return "PASS"

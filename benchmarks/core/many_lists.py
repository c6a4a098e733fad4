"""Many lists against one: the same PDQ entries as `--lists` lists of equal size, and as one
list, queried the same way (one query per call, one thread, threshold 31, half
near-duplicates of listed entries at distances 0..32, half random).

    .venv/bin/python benchmarks/core/many_lists.py --entries 10000000 --lists 1000

Prints build seconds (loading, merges and the cross-list index), the core's bytes per
entry, and p50 / p99 µs per query of each layout and their ratio (many / one), and checks
that both answer every query with the same entries.

When both layouts do not fit in memory, `--only one` and `--only many` build one layout
per process; each prints a digest of its answers, which must be equal.

Figures (2 cores shared with other work, load average 7-16; one query thread; the ratio
is many / one of the same run; p99 over 1,000 queries swings with the load):

    --entries 10000000 --lists 1000 (1,000 lists of 10 k against 1 list of 10 M):
      before the cross-list index: 1 list p50 220 us, p99 4,277 us;
        1,000 lists p50 34,640 us, p99 70,469 us (157x)
      with it (one cross index of 10 M, +84.6 bytes per entry, 84.5 -> 169.1):
        1 list p50 228 us, p99 1,440 us; 1,000 lists p50 128 us, p99 269 us (0.56x)
        another run: 1 list p50 192 us, p99 665 us; 1,000 lists p50 152 us, p99 4,231 us
    --entries 30000000 --lists 300 (300 lists of 100 k against 1 list of 30 M):
      before: 1 list p50 374 us, p99 4,534 us; 300 lists p50 23,355 us, p99 32,660 us (62x)
      with it: 1 list p50 377 us, p99 4,481 us; 300 lists p50 277 us, p99 3,098 us (0.74x)

The single list is searched part by part (its tier keeps a few segments), the many lists
mostly through one cross index, hence ratios below 1.

1,000 lists of 100 k (100 M entries), each layout in its own process, the machine
otherwise idle (2026-11-30, 11:40 UTC):
    --entries 100000000 --lists 1000 --only many: built in 130.8 s (one cross index of
      100 M), 167.3 bytes per entry, p50 944.5 us, p99 1,926.5 us, 485 matches, answers
      digest 41d5efaa8706d986
    --only one: killed by the kernel's OOM killer at 24.3 GB (its last merge holds both
      halves) on this 24 GB machine. benchmarks/core/scale.py's single list of 100 M
      (another build path) answered at p50 1.16 ms built, 0.89-0.93 ms mapped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time

import numpy as np
from scale import CHUNK, chunk_rows, pct, queries, time_queries

from hashmatch.server import _hashcore

PDQ = 4
THRESHOLD = 31


def build(entries: int, lists: int, seed: int) -> tuple[_hashcore.Index, float]:
    index = _hashcore.Index()
    per = entries // lists
    for list_id in range(1, lists + 1):
        index.configure_list(list_id, THRESHOLD, 0)
    t0 = time.perf_counter()
    for i in range((entries + CHUNK - 1) // CHUNK):
        m = min(CHUNK, entries - i * CHUNK)
        rows = chunk_rows(seed, i, m)
        ids = np.arange(i * CHUNK, i * CHUNK + m, dtype="<u8")
        owner = ids // per + 1
        for list_id in np.unique(owner):
            take = owner == list_id
            k = int(take.sum())
            index.apply(
                int(list_id),
                bytes([PDQ]) * k,
                rows[take].tobytes(),
                ids[take].tobytes(),
                b"",
                b"",
            )
    index.compact()
    return index, time.perf_counter() - t0


def digest(found: list[set[int]]) -> str:
    """The answers of every query, in query order, as one short hash."""
    h = hashlib.sha256()
    for ids in found:
        h.update(np.array(sorted(ids), dtype="<u8").tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--entries", type=int, default=10_000_000)
    p.add_argument("--lists", type=int, default=1000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--seed", type=int, default=18)
    p.add_argument(
        "--only",
        choices=("one", "many"),
        help="build and time one layout only (compare the answers' digests across runs)",
    )
    args = p.parse_args()
    qs = queries(args.entries, args.queries, args.seed)
    report: dict[str, object] = {"entries": args.entries}
    answers = []
    layouts = {"one": [1], "many": [args.lists], None: [1, args.lists]}[args.only]
    p50: list[float] = []
    p99: list[float] = []
    for lists in layouts:
        index, seconds = build(args.entries, lists, args.seed)
        times, found = time_queries(index, qs)
        answers.append(found)
        p50.append(pct(times, 50))
        p99.append(pct(times, 99))
        report[f"{lists}_lists"] = {
            "build_seconds": round(seconds, 1),
            "core_bytes_per_entry": round(index.memory_bytes() / args.entries, 1),
            "p50_us": round(p50[-1], 1),
            "p99_us": round(p99[-1], 1),
            "cross_indexes_entries": index.cross_size()[:2],
            "answers_digest": digest(found),
            "matches": sum(len(f) for f in found),
        }
        print(lists, report[f"{lists}_lists"], flush=True)
        del index
    if len(answers) == 2:
        assert answers[0] == answers[1], "the two layouts answered differently"
        report["ratio_p50"] = round(p50[1] / p50[0], 2)
        report["ratio_p99"] = round(p99[1] / p99[0], 2)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

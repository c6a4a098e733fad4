"""Probe detection figures: where a boundary-walk attack is throttled, and the false-flag
rate on ordinary traffic.

The attack runs against a real server on loopback (one listed PDQ hash per run, an
attacker holding a copy 20 bits from it); the benign mix (random uploads, bursts of
re-uploaded near-duplicates, dihedral sets) runs through the detector itself.

    .venv/bin/python benchmarks/trust/probe_walk.py --runs 10 --benign 100000
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parents[2] / "tests"
sys.path.insert(0, str(TESTS))

from conftest import start  # noqa: E402
from hashmatch.client import PDQ, make_hash  # noqa: E402
from hashmatch.server.matching.probes import ProbeDetector  # noqa: E402
from hashmatch.v1 import match_pb2  # noqa: E402
from helpers import benign_mix, boundary_walk, random_pdq, upsert  # noqa: E402


def attack(seed: int) -> tuple[int, int, bool]:
    with tempfile.TemporaryDirectory() as tmp:
        running = start(Path(tmp))
        try:
            rng = random.Random(seed)
            listed = random_pdq(rng)
            running.lists().create_list("iwf")
            running.lists().apply_changes("iwf", "b1", [upsert(PDQ, listed, "P")])
            stub = running.matcher()._stub
            token = running.tokens["platform"]

            def match(value: bytes) -> bool:
                request = match_pb2.MatchRequest(hashes=[make_hash(PDQ, value)])
                response = stub.Match(
                    request, metadata=(("authorization", f"Bearer {token}"),), timeout=5
                )
                return response.verdict == match_pb2.VERDICT_MATCH

            return boundary_walk(match, listed, rng)
        finally:
            running.service.stop(grace=0)


def benign(queries: int, seed: int) -> tuple[int, int]:
    detector = ProbeDetector()
    sent = benign_mix(detector, queries, random.Random(seed))
    return sent, detector.flags


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--benign", type=int, default=100_000)
    args = parser.parse_args()
    results = [attack(seed) for seed in range(args.runs)]
    for seed, (queries, learned, throttled) in enumerate(results):
        state = "throttled" if throttled else "NOT throttled"
        print(f"attack {seed}: {state} after {queries} queries, {learned} bits learned")
    print(
        f"worst case: {max(r[1] for r in results)} of 256 bits learned, "
        f"{max(r[0] for r in results)} queries"
    )
    sent, flags = benign(args.benign, 1)
    print(f"benign mix: {sent} queries, {flags} flags (false-flag rate {flags / sent:.6f})")


if __name__ == "__main__":
    main()

"""Hotline sync at scale: bulk load, retraction visibility, replica catch-up.

Starts real servers on loopback (a primary, a second process on the same data folder,
and a read replica), loads N mixed entries through UploadChanges, then measures how fast
a retraction stops matching on the other process and on the replica, and how fast a
fresh replica catches up through WatchChanges. Every loop is bounded in count and time.

    .venv/bin/python benchmarks/sync/bench_sync.py --entries 10000000
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from hashmatch.client import MD5, Connection, HashmatchError, ListClient, MatchClient, make_hash
from hashmatch.client.list_client import Change
from hashmatch.server.store import Role, Store

HASHMATCH = str(Path(sys.executable).parent / "hashmatch")
LENGTHS = (16, 20, 32, 32)  # MD5, SHA-1, SHA-256, PDQ


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number: int, body: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(body)) + body


def pdq_like(rng: random.Random) -> bytes:
    # Random bytes are balanced enough: far from the degenerate all-0/all-1 hashes.
    return rng.randbytes(32)


def batch_bytes(list_name: str, n: int, size: int, rng: random.Random) -> tuple[bytes, bytes]:
    """One ApplyChangesRequest, encoded by hand (the protobuf runtime would dominate the
    client side of the benchmark), and the MD5 of its first entry."""
    parts = [field(1, list_name.encode()), field(2, f"load-{n:06d}".encode())]
    first = b""
    for i in range(size):
        alg = i % 4 + 1
        value = pdq_like(rng) if alg == 4 else rng.randbytes(LENGTHS[alg - 1])
        if i == 0:
            first = value
        hash_body = b"\x08" + bytes((alg,)) + field(2, value)
        entry = field(1, hash_body) + field(2, f"R{n}-{i}".encode())
        parts.append(field(3, entry))
    return b"".join(parts), first


def launch(data_dir: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [HASHMATCH, "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("hashmatch serving on "):
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line.split()[-1]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def visibility(clients: list[MatchClient], value: bytes, since: float, limit: float) -> list[float]:
    """Seconds from `since` until each client answers NO_MATCH (polled in turn)."""
    seen: list[float | None] = [None] * len(clients)
    while None in seen and time.perf_counter() - since < limit:
        for k, client in enumerate(clients):
            if seen[k] is None and not client.match([make_hash(MD5, value)]).matched:
                seen[k] = time.perf_counter() - since
    return [float("inf") if x is None else x for x in seen]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--retractions", type=int, default=100)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    rng = random.Random(2026)
    results: dict[str, float] = {"entries": args.entries}

    with tempfile.TemporaryDirectory(prefix="hm-sync-") as tmp:
        root = Path(tmp)
        store = Store(root / "primary")
        tokens = {
            name: store.add_tenant(name, role)
            for name, role in (
                ("hotline", Role.HOTLINE),
                ("platform", Role.PLATFORM),
                ("replica", Role.REPLICA),
            )
        }
        store.create_list("bulk", "hotline", pdq_threshold=31, pdq_min_quality=50)
        store.close()

        print(f"generating {args.entries:,} entries ...", file=sys.stderr)
        batches: list[bytes] = []
        md5s: list[bytes] = []
        for n in range(-(-args.entries // args.batch)):
            size = min(args.batch, args.entries - n * args.batch)
            raw, first = batch_bytes("bulk", n, size, rng)
            batches.append(raw)
            md5s.append(first)

        primary, address = launch(root / "primary")
        procs = [primary]
        try:
            meta = (("authorization", f"Bearer {tokens['hotline']}"),)
            with grpc.insecure_channel(
                address, options=[("grpc.max_send_message_length", 64 << 20)]
            ) as channel:
                upload = channel.stream_unary("/hashmatch.v1.ListService/UploadChanges")
                start = time.perf_counter()
                upload(iter(batches), metadata=meta, timeout=3600)
                loaded = time.perf_counter() - start
            platform = MatchClient(Connection(server=address, token=tokens["platform"]))
            assert platform.match([make_hash(MD5, md5s[-1])]).matched, "last batch not matchable"
            matchable = time.perf_counter() - start
            results["load_seconds"] = round(matchable, 2)
            results["load_entries_per_second"] = round(args.entries / matchable)
            print(
                f"bulk load: {args.entries:,} entries loaded in {loaded:.1f}s, "
                f"matchable after {matchable:.1f}s "
                f"({args.entries / matchable:,.0f} entries/s)",
                file=sys.stderr,
            )

            second, address_b = launch(root / "primary")
            procs.append(second)
            t0 = time.perf_counter()
            replica, address_r = launch(
                root / "replica", "--follow", address, "--token", tokens["replica"]
            )
            procs.append(replica)
            hotline = ListClient(Connection(server=address, token=tokens["hotline"], timeout=600))
            target_version = hotline.get_list("bulk").version
            replica_lists = ListClient(Connection(server=address_r, token=tokens["replica"]))
            deadline = time.perf_counter() + 3600
            while time.perf_counter() < deadline:
                try:
                    if replica_lists.get_list("bulk").version >= target_version:
                        break
                except HashmatchError:  # tenants or the list not copied yet
                    pass
                time.sleep(0.05)
            caught_up = time.perf_counter() - t0
            results["replica_catch_up_seconds"] = round(caught_up, 2)
            results["replica_catch_up_entries_per_second"] = round(args.entries / caught_up)
            print(
                f"replica catch-up (WatchChanges from 0): {caught_up:.1f}s "
                f"({args.entries / caught_up:,.0f} entries/s)",
                file=sys.stderr,
            )

            other = MatchClient(Connection(server=address_b, token=tokens["platform"]))
            mirror = MatchClient(Connection(server=address_r, token=tokens["platform"]))
            lag_other: list[float] = []
            lag_replica: list[float] = []
            for k in range(min(args.retractions, len(md5s))):
                value = md5s[k]
                hotline.apply_changes("bulk", f"retract-{k}", [Change(make_hash(MD5, value), None)])
                acked = time.perf_counter()
                # The process that took the write serves it before acknowledging.
                assert not platform.match([make_hash(MD5, value)]).matched
                lag_b, lag_r = visibility([other, mirror], value, acked, 10.0)
                lag_other.append(lag_b)
                lag_replica.append(lag_r)
            for name, lags in (("other_process", lag_other), ("replica", lag_replica)):
                ms = [x * 1000 for x in lags]
                results[f"retraction_{name}_p50_ms"] = round(percentile(ms, 50), 1)
                results[f"retraction_{name}_p99_ms"] = round(percentile(ms, 99), 1)
                results[f"retraction_{name}_max_ms"] = round(max(ms), 1)
            print(json.dumps(results, indent=2))
            if args.json:
                args.json.write_text(json.dumps(results, indent=2) + "\n")
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=60)


if __name__ == "__main__":
    main()

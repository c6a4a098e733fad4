"""Replicas behind HAProxy on separate hosts: throughput and latency with 1, 2 and 3 replicas
in rotation, each replica's CPU, and how long a new replica takes to catch up.

The hosts are network namespaces on one bridge (tests/multihost_net.py: needs root, `ip`
and Debian's haproxy), HAProxy is configured from deploy/haproxy/. The client runs here and
calls the balancer with pre-encoded MatchBatch (or Match) requests from one asyncio loop,
`--concurrency` calls in flight. On a 2-core machine the total cannot grow with replicas
(client, HAProxy and replicas share the cores): the per-replica CPU columns show the load
spreading. Every loop is bounded in time and count.

    sudo .venv/bin/python benchmarks/load/multihost.py --entries 1000000 --seconds 10
    sudo .venv/bin/python benchmarks/load/multihost.py --entries 10000000 --skip-throughput
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "benchmarks" / "sync"), str(Path(__file__).parent)]

import multihost_net as net  # noqa: E402
from bench_sync import batch_bytes, field  # noqa: E402
from proc_cpu import process_tree_ticks  # noqa: E402

from hashmatch.server.store import Role, Store  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
LIST = "bulk"
MAX_CALLS = 2_000_000


def match_request(md5: bytes) -> bytes:
    hash_body = b"\x08\x01" + field(2, md5)
    return field(2, hash_body)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def drive(
    endpoint: str, token: str, request: bytes, method: str, concurrency: int, seconds: float
) -> tuple[int, list[float], int]:
    """Keeps `concurrency` calls in flight for `seconds`: (calls, latencies, failures)."""
    latencies: list[float] = []
    failures = 0
    meta = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(endpoint) as channel:
        call = channel.unary_unary(method)
        end = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal failures
            while time.perf_counter() < end and len(latencies) < MAX_CALLS:
                t0 = time.perf_counter()
                try:
                    await call(request, metadata=meta, timeout=10)
                except grpc.aio.AioRpcError:
                    failures += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), latencies, failures


def cpu_pct(before: dict[int, int], after: dict[int, int], pid: int, wall: float) -> float:
    """Percent of one core `pid` (and its children) used between two readings."""
    return round(100 * (after.get(pid, 0) - before.get(pid, 0)) / TICKS / wall, 1)


def serving(endpoint: str) -> bool:
    with grpc.insecure_channel(endpoint) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
        except grpc.RpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000, help="entries per upload batch")
    parser.add_argument("--seconds", type=float, default=10.0, help="per replica count and mode")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--items", type=int, default=100, help="hashes per MatchBatch")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-catch-up", action="store_true")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    if (reason := net.unavailable()) is not None:
        sys.exit(f"multihost benchmark: {reason}")

    rng = random.Random(7)
    results: dict[str, object] = {"entries": args.entries}
    with tempfile.TemporaryDirectory(prefix="hashmatch-multihost-") as tmp:
        root = Path(tmp)
        (root / "logs").mkdir()
        store = Store(root / "primary")
        tokens = {
            name: store.add_tenant(name, role)
            for name, role in (
                ("hotline", Role.HOTLINE),
                ("platform", Role.PLATFORM),
                ("mirror", Role.REPLICA),
            )
        }
        store.create_list(LIST, "hotline", pdq_threshold=31, pdq_min_quality=50)
        store.close()
        print(f"generating {args.entries:,} entries ...", file=sys.stderr)
        batches, firsts = [], []
        for n in range(-(-args.entries // args.batch)):
            raw, first = batch_bytes(LIST, n, min(args.batch, args.entries - n * args.batch), rng)
            batches.append(raw)
            firsts.append(first)

        network = net.Network(root / "logs")
        try:
            primary_host = network.add("primary", 10)
            replica_hosts = [network.add(f"r{i + 1}", 11 + i) for i in range(3)]
            newcomer = network.add("r4", 14)
            lb_host = network.add("lb", 2)
            primary = primary_host.serve(root / "primary")
            meta = (("authorization", f"Bearer {tokens['hotline']}"),)
            with grpc.insecure_channel(
                primary_host.endpoint, options=[("grpc.max_send_message_length", 64 << 20)]
            ) as channel:
                upload = channel.stream_unary("/hashmatch.v1.ListService/UploadChanges")
                t0 = time.perf_counter()
                upload(iter(batches), metadata=meta, timeout=3600)
                results["load_seconds"] = round(time.perf_counter() - t0, 1)
            print(f"loaded in {results['load_seconds']} s", file=sys.stderr)
            follow = ["--follow", primary_host.endpoint, "--token", tokens["mirror"]]
            follow += ["--max-lag", "10"]

            if not args.skip_throughput:
                replicas = [h.serve(root / h.name, *follow) for h in replica_hosts]
                net.wait_for(
                    lambda: all(serving(h.endpoint) for h in replica_hosts),
                    "every replica caught up and SERVING",
                    limit=3600,
                )
                balancer = net.Balancer(lb_host, replica_hosts, root)
                net.wait_for(
                    lambda: all(s == "UP" for s in balancer.states().values()),
                    "HAProxy has every replica in rotation",
                )
                requests = {
                    "unary": (
                        "/hashmatch.v1.MatchService/Match",
                        match_request(firsts[0]),
                        1,
                    ),
                    "batch": (
                        "/hashmatch.v1.MatchService/MatchBatch",
                        b"".join(
                            field(1, match_request(firsts[i % len(firsts)]))
                            for i in range(args.items)
                        ),
                        args.items,
                    ),
                }
                rows = []
                for mode, (method, request, items) in requests.items():
                    for count in (1, 2, 3):
                        for i, host in enumerate(replica_hosts):
                            state = "ready" if i < count else "maint"
                            balancer.command(f"set server replicas/{host.name} state {state}")
                        net.wait_for(
                            lambda count=count: (
                                list(balancer.states().values()).count("UP") == count
                            ),
                            f"{count} replica(s) in rotation",
                        )
                        pids = [r.process.pid for r in replicas] + [balancer.process.pid]
                        before = process_tree_ticks(pids)
                        mine = os.times()
                        t0 = time.perf_counter()
                        calls, latencies, failures = asyncio.run(
                            drive(
                                lb_host.endpoint,
                                tokens["platform"],
                                request,
                                method,
                                args.concurrency,
                                args.seconds,
                            )
                        )
                        wall = time.perf_counter() - t0
                        after = process_tree_ticks(pids)
                        client = (os.times().user - mine.user) + (os.times().system - mine.system)

                        row = {
                            "mode": mode,
                            "replicas": count,
                            "calls_per_s": round(calls / wall),
                            "hashes_per_s": round(calls * items / wall),
                            "p50_ms": round(1000 * percentile(latencies, 50), 2),
                            "p99_ms": round(1000 * percentile(latencies, 99), 2),
                            "failures": failures,
                            "replica_cpu_pct": [
                                cpu_pct(before, after, r.process.pid, wall) for r in replicas
                            ],
                            "haproxy_cpu_pct": cpu_pct(before, after, balancer.process.pid, wall),
                            "client_cpu_pct": round(100 * client / wall, 1),
                        }
                        rows.append(row)
                        print(json.dumps(row), file=sys.stderr)
                results["throughput"] = rows
                for r in replicas:
                    r.stop()

            if not args.skip_catch_up:
                version = len(batches)
                t0 = time.perf_counter()
                fresh = newcomer.serve(root / "r4", *follow)
                net.wait_for(lambda: serving(newcomer.endpoint), "the new replica SERVING", 3600)
                caught = time.perf_counter() - t0
                results["catch_up_seconds"] = round(caught, 1)
                results["catch_up_entries_per_s"] = round(args.entries / caught)
                results["catch_up_version"] = version
                print(f"catch-up of a new replica: {caught:.1f} s", file=sys.stderr)
                fresh.stop()
            primary.stop()
        finally:
            network.close()
    print(json.dumps(results, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

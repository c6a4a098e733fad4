"""A serving process restarting over a big list: rebuilt from LMDB (`--no-segments`) against
mapped from its segment file, in the same run; and two workers sharing the file's pages.

    .venv/bin/python benchmarks/load/restart.py --entries 10000000

Loads N PDQ entries (uniform random, each with a reference ID) into one list through
UploadChanges on a fresh data folder, waits for the list's segment file, stops the server,
then starts it `--rounds` times each way, alternating. Per start: seconds from launching
`hashmatch serve` to its banner (it serves once every list is loaded) and to the first
answered match of a listed hash, and the serving process's memory once it has answered
the same 1,000 queries (VmRSS, RssAnon, RssFile, Pss from /proc). Then once with
`--workers 2`: the same figures for each worker. The data folder is removed at the end.

Measured on the 2-core test machine while another job held both cores (load average ~9),
2026-11-30, `--entries 2000000 --rounds 2` (upload 71.6 s):

    start                   serving after    VmRSS / RssAnon / Pss (GiB)
    rebuilt (--no-segments) 86.5 s, 93.7 s   0.66 / 0.27 / 0.64
    mapped                  5.7 s, 2.4 s     0.26 / 0.04 / 0.24
    mapped, --workers 2     3.8 s            worker 0.17 / 0.03 / 0.09, 0.25 / 0.04 / 0.18
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sync"))
from bench_sync import field, launch

from hashmatch.client import PDQ, Connection, MatchClient, RetryPolicy, make_hash
from hashmatch.server.core import read_segment_info
from hashmatch.server.store import Role, Store

BATCH = 50_000


def batch(n: int, size: int, rng: random.Random, keep: list[bytes]) -> bytes:
    """One ApplyChangesRequest of PDQ upserts, encoded by hand (cheap for the client)."""
    parts = [field(1, b"bulk"), field(2, f"load-{n:06d}".encode())]
    for i in range(size):
        value = rng.randbytes(32)
        if len(keep) < 1000 and i % 97 == 0:
            keep.append(value)
        hash_body = b"\x08\x04" + field(2, value)
        parts.append(field(3, field(1, hash_body) + field(2, f"ref-{n:05d}-{i:05d}".encode())))
    return b"".join(parts)


def memory(pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = round(int(value.split()[0]) / 2**20, 2)
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "Pss":
            out["Pss"] = round(int(value.split()[0]) / 2**20, 2)
    return out  # GiB


def start(data: Path, *extra: str) -> tuple[subprocess.Popen[str], str, float]:
    t0 = time.perf_counter()
    proc, address = launch(data, *extra)
    return proc, address, time.perf_counter() - t0


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()]


def measure(data: Path, token: str, probes: list[bytes], *extra: str) -> dict[str, object]:
    t0 = time.perf_counter()
    proc, address, banner = start(data, *extra)
    try:
        client = MatchClient(Connection(server=address, token=token, retry=RetryPolicy(3)))
        assert client.match([make_hash(PDQ, probes[0])]).matched
        first = time.perf_counter() - t0
        for value in probes:
            assert client.match([make_hash(PDQ, value)]).matched
        pids = children(proc.pid) or [proc.pid]
        return {
            "banner_seconds": round(banner, 2),
            "first_match_seconds": round(first, 2),
            "memory_gib": [memory(p) for p in pids],
        }
    finally:
        stop(proc)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--entries", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    args = p.parse_args()
    rng = random.Random(18)
    report: dict[str, object] = {"entries": args.entries}
    with tempfile.TemporaryDirectory(prefix="hm-restart-", dir=args.workdir) as tmp:
        data = Path(tmp)
        store = Store(data)
        hotline = store.add_tenant("hotline", Role.HOTLINE)
        platform = store.add_tenant("platform", Role.PLATFORM)
        store.create_list("bulk", "hotline", pdq_threshold=31, pdq_min_quality=0)
        store.close()
        probes: list[bytes] = []
        proc, address, _ = start(data, "--segment-quiet", "1")
        try:
            t0 = time.perf_counter()
            batches = (
                batch(n, min(BATCH, args.entries - n * BATCH), rng, probes)
                for n in range(-(-args.entries // BATCH))
            )
            with grpc.insecure_channel(
                address, options=[("grpc.max_send_message_length", 64 << 20)]
            ) as channel:
                upload = channel.stream_unary("/hashmatch.v1.ListService/UploadChanges")
                upload(batches, metadata=(("authorization", f"Bearer {hotline}"),), timeout=7200)
            report["upload_seconds"] = round(time.perf_counter() - t0, 1)
            print("uploaded", report, flush=True)
            reader = Store(data)
            version = reader.get_list("bulk")
            reader.close()
            assert version is not None
            path = data / "segments" / f"list-{version.id}.seg"
            deadline = time.monotonic() + 3600
            while time.monotonic() < deadline:
                try:
                    if read_segment_info(path)[1] == version.version:
                        break
                except ValueError:
                    pass
                time.sleep(1)
            report["segment_file_bytes"] = path.stat().st_size
        finally:
            stop(proc)
        for r in range(args.rounds):
            for label, extra in (("rebuilt", ("--no-segments",)), ("mapped", ())):
                got = measure(data, platform, probes, *extra)
                report[f"{label}_{r}"] = got
                print(label, got, flush=True)
        got = measure(data, platform, probes, "--workers", "2")
        report["mapped_two_workers"] = got
        print("two workers", got, flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

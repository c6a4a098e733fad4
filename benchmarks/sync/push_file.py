"""A list file pushed as one unit, against the same file pushed batch by batch.

Starts `hashmatch serve` on loopback over a temporary data folder, writes a synthetic CSV
of N rows (70% SHA-256, 30% PDQ, seeded), and pushes it with the client's `push` flow into
a new list, once per mode, each on a fresh server so the peak RSS is the push's own:

- `batches`: UploadChanges with no upload_mode, every batch committed as it comes (what
  `hashmatch-client push` did before whole-file uploads);
- `whole`: `push` (UPLOAD_MODE_WHOLE): staged, then published in one commit;
- `replace`: `push --replace` of the same file over a list already holding it.

Reported per mode: seconds from the first message to the acknowledgement, the server's peak
resident memory (VmHWM from /proc, so Linux only) before and after the push, and the peak
of a fresh server that loads the pushed list at start (what serving it costs by itself).

`--store-only` measures the upload path alone, in this process, with no server and no
index: the file's batches staged (Staging.stage) then published (Staging.publish), with
the process's peak RSS after each step.

    .venv/bin/python benchmarks/sync/push_file.py --rows 1000000
    .venv/bin/python benchmarks/sync/push_file.py --rows 10000000 --store-only

Measured on the 2-core test machine (other jobs running), 2026-11-30:

    rows  mode                 seconds  server peak RSS  serving the list alone
    1 M   batches (before)     86.5     528 MB
    1 M   whole                72.9     510 MB           314 MB
    1 M   replace (same file)  87.8     898 MB           321 MB
    3 M   batches (before)     257.7    1372 MB
    3 M   whole                242.3    1352 MB          793 MB

    --store-only  staging (s, peak)   publishing (s, peak)
    1 M           8.2 s, 58 MB        8.0 s, 254 MB
    3 M           36.2 s, 61 MB       40.2 s, 682 MB
    10 M          84.2 s, 61 MB       163.3 s, 1931 MB

Publishing a group of messages' new entries in one pass in key order
(staging.PUBLISH_GROUP_ENTRIES), 3 M, alternating with the code before it in one run
(load 13-16 from other jobs):

    --store-only  publishing, grouped       publishing, message by message
    3 M           8.6 s, 9.3 s; 1021 MB     11.0 s, 10.0 s; 690 MB
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hashmatch.client import Connection, ListClient
from hashmatch.client.push import FileSummary, batches, push
from hashmatch.server.store import Role, Store
from hashmatch.v1 import hashes_pb2, lists_pb2

HASHMATCH = str(Path(sys.executable).parent / "hashmatch")
MODES = ("batches", "whole", "replace")


def write_file(path: Path, rows: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="ascii") as f:
        f.write("algorithm,hash_hex,reference_id,quality\n")
        for i in range(rows):
            if i % 10 < 3:
                f.write(f"pdq,{rng.randbytes(32).hex()},R-{i},90\n")
            else:
                f.write(f"sha256,{rng.randbytes(32).hex()},R-{i},\n")


def launch(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [HASHMATCH, "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("hashmatch serving on "):
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line.split()[-1]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(mode: str, path: Path, rows: int, batch_size: int, root: Path) -> dict[str, float]:
    data = root / mode
    store = Store(data)
    token = store.add_tenant("hotline", Role.HOTLINE)
    store.close()
    proc, address = launch(data)
    try:
        with ListClient(Connection(server=address, token=token)) as client:
            client.create_list("bulk")
            summary = FileSummary(rows, "", [])
            if mode == "replace":  # the list already holds the file
                push(
                    client, path, "bulk", summary=summary, upload_id="first", batch_size=batch_size
                )
            before = peak_rss_mb(proc.pid)
            start = time.perf_counter()
            if mode == "batches":
                stream = batches(
                    path,
                    "bulk",
                    "load",
                    batch_size,
                    retire=False,
                    skip=0,
                    mode=lists_pb2.UPLOAD_MODE_UNSPECIFIED,
                )
                client.upload_changes(request for _, request in stream)
            else:
                push(
                    client,
                    path,
                    "bulk",
                    summary=summary,
                    upload_id="load",
                    batch_size=batch_size,
                    replace=mode == "replace",
                )
            seconds = time.perf_counter() - start
            info = client.get_list("bulk")
            assert sum(info.counts.values()) == rows, info.counts
        after = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    # What serving the pushed list costs by itself: a fresh server loading it at start.
    proc, _ = launch(data)
    try:
        served = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return {
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds),
        "peak_rss_mb_before": round(before, 1),
        "peak_rss_mb_after": round(after, 1),
        "peak_rss_mb_serving_it_after_a_restart": round(served, 1),
    }


def store_only(rows: int, batch_size: int, root: Path) -> dict[str, float]:
    """Stages then publishes `rows` SHA-256 upserts straight into a store: the upload
    path's own memory, without the serving index."""
    rng = random.Random(2026)
    store = Store(root / "store-only")
    try:
        meta = store.create_list("bulk", "hotline", pdq_threshold=31, pdq_min_quality=50)
        stage = store.open_stage(meta.id, "hotline")
        start = time.perf_counter()
        group: list[bytes] = []
        staged = 0
        for n in range(-(-rows // batch_size)):
            request = lists_pb2.ApplyChangesRequest(list="bulk", batch_id=f"load:{n}")
            for i in range(min(batch_size, rows - n * batch_size)):
                entry = request.upserts.add(reference_id=f"R-{n}-{i}")
                entry.hash.algorithm = hashes_pb2.ALGORITHM_SHA256
                entry.hash.value = rng.randbytes(32)
            group.append(request.SerializeToString())
            if len(group) * batch_size >= 200_000:  # as the service stages them
                store.stage(stage, staged, group, [])
                staged, group = staged + len(group), []
        store.stage(stage, staged, group, [])
        staging = time.perf_counter() - start
        staging_peak = peak_rss_mb(os.getpid())
        start = time.perf_counter()
        store.publish(stage, "bulk", actor="hotline")
        publishing = time.perf_counter() - start
        store.discard_stage(stage)
        return {
            "staging_seconds": round(staging, 1),
            "staging_peak_rss_mb": round(staging_peak, 1),
            "publishing_seconds": round(publishing, 1),
            "publishing_peak_rss_mb": round(peak_rss_mb(os.getpid()), 1),
        }
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--store-only", action="store_true", help="stage and publish in here")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results: dict[str, object] = {"rows": args.rows, "batch_size": args.batch_size}
    with tempfile.TemporaryDirectory(prefix="hm-push-") as tmp:
        root = Path(tmp)
        if args.store_only:
            results["store_only"] = store_only(args.rows, args.batch_size, root)
            print(json.dumps(results, indent=2))
            return
        path = root / "list.csv"
        print(f"writing {args.rows:,} rows ...", file=sys.stderr)
        write_file(path, args.rows, seed=2026)
        for mode in args.modes:
            results[mode] = run(mode, path, args.rows, args.batch_size, root)
            print(mode, results[mode], file=sys.stderr)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

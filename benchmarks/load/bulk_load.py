"""A bulk load through UploadChanges from outside: N PDQ entries into one new list, in one
stream of batches, until the serving process answers for all of them.

    .venv/bin/python benchmarks/load/bulk_load.py --entries 100000000

Starts `hashmatch serve` on a fresh data folder (its defaults: segment files on, one
process), creates a list, and streams batches of `--batch` PDQ upserts (uniform random
hashes, each with a 15-character reference ID) in the default mode, each message its own
batch. The batches are made on the fly from a byte template (numpy), so the client holds
one batch at a time and spends little CPU: its own CPU seconds are printed beside the
wall time. The time counted ends when UploadChanges answers, which it does once every
batch is committed and the serving process's index has caught up with them.

While it loads, one thread asks Match for one PDQ hash every `--query-every` seconds
(0 = none): a near-duplicate (8 bits flipped) of a hash sent earlier, or a random one, in
turn. It waits for each answer before the next: what the merges of a growing list cost
a platform's queries meanwhile, printed as p50 / p99 / max per `--mark` of entries.

Every `--mark` entries a line says the entries sent, the seconds since the start and the
server's resident memory. At the end: the total, the rate, the server's peak resident
memory (VmHWM), the store's size on disk, whether every one of 1,000 sampled hashes
matches (Match, through the client library), and the list's entry count as the
store holds it. Then, once the server serves the list from the segment file it wrote
(when the list has been quiet; at most `--file-wait` seconds), the seconds that took,
the same sampled hashes again and the server's memory then. The data folder is removed
at the end (`--keep` keeps it).

Measured on the 2-core, 24 GB test machine, 2026-11-30, `--entries 100000000` (one
server process, segment files on, a query every 50 ms, nothing else running):

    loaded and served      404 s (248 k entries/s); 50 M were in after 130 s
    server memory          VmRSS 20.2 GiB at the end (11.6 anonymous, 8.6 store pages),
                           peak 22.1 GiB; the store 24.0 GB on disk
    queries meanwhile      p50 3-11 ms, p99 18-118 ms per 5 M entries, max 682 ms
    sampled hashes         1000/1000 match; the store lists 100,000,000

Once the server served the list from the segment file it wrote (a later run, 461 s to
load: 20 s after the load's end), its anonymous memory went from 11.7 to 3.3 GiB, the
index's pages being those of the file (VmRSS 16.0 GiB, of which 12.7 file pages of the
segment file and the store); 1000/1000 sampled hashes still matched.

With the store's OS read-ahead off (as it was before), the same run took 897 s: past
75 M the store and the index no longer fit in memory together, and each group's commit
read the list's B-tree pages back from disk one page at a time. At the start of that day
(groups of 1 M, batches read on the event loop) the load had reached 65 M after 790 s.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from restart import memory, start, stop

from hashmatch.client import PDQ, Connection, MatchClient, RetryPolicy, make_hash
from hashmatch.server.store import Role, Store

# One upsert on the wire, 57 bytes: Entry{hash: Hash{algorithm: PDQ, value: 32 bytes},
# reference_id: "r" + 14 digits}.
ENTRY = bytes.fromhex("1a37" + "0a24" + "0804" + "1220") + bytes(32) + bytes.fromhex("120f")
DIGEST_AT = len(ENTRY) - 2 - 32
REF_AT = len(ENTRY)
ENTRY_LEN = REF_AT + 15
REF_DIGITS = 14
PROBES = 1000


class Batches:
    """The upload's messages, made one at a time; keeps a sample of the hashes sent."""

    def __init__(self, entries: int, size: int, mark: int, seed: int = 18) -> None:
        self.entries, self.size, self.mark = entries, size, mark
        self.rng = np.random.default_rng(seed)
        self.template = np.frombuffer(ENTRY + bytes(15), dtype=np.uint8)
        self.probes: list[bytes] = []
        self.sent = 0
        self.marks: list[tuple[int, float]] = []

    def batch(self, n: int, first: int, count: int) -> bytes:
        rows = np.tile(self.template, (count, 1))
        rows[:, DIGEST_AT : DIGEST_AT + 32] = self.rng.integers(
            0, 256, size=(count, 32), dtype=np.uint8
        )
        rows[:, REF_AT] = ord("r")
        numbers = np.arange(first, first + count, dtype=np.int64)
        for d in range(REF_DIGITS):
            rows[:, REF_AT + REF_DIGITS - d] = 48 + (numbers // 10**d) % 10
        if len(self.probes) < PROBES:
            self.probes.append(rows[count // 2, DIGEST_AT : DIGEST_AT + 32].tobytes())
        batch_id = f"load-{n:08d}".encode()
        head = b"\x0a\x04bulk" + bytes([0x12, len(batch_id)]) + batch_id
        return head + rows.tobytes()

    def __iter__(self) -> Iterator[bytes]:
        start = time.perf_counter()
        n = 0
        while self.sent < self.entries:
            count = min(self.size, self.entries - self.sent)
            yield self.batch(n, self.sent, count)
            n += 1
            before = self.sent
            self.sent += count
            if self.sent // self.mark != before // self.mark:
                self.marks.append((self.sent, time.perf_counter() - start))


class Queries(threading.Thread):
    """Match calls during the load, one at a time, each timed (see the module's text)."""

    def __init__(self, address: str, token: str, batches: Batches, every: float) -> None:
        super().__init__(daemon=True)
        self.client = MatchClient(Connection(server=address, token=token, retry=RetryPolicy(1)))
        self.batches, self.every = batches, every
        self.done = threading.Event()
        # (entries sent when asked, seconds, matched)
        self.times: list[tuple[int, float, bool]] = []
        self.rng = random.Random(7)

    def query(self, n: int) -> bytes:
        probes = self.batches.probes
        if n % 2 or not probes:
            return self.rng.randbytes(32)
        value = bytearray(self.rng.choice(probes))
        for bit in self.rng.sample(range(256), 8):
            value[bit // 8] ^= 1 << (bit % 8)
        return bytes(value)

    def run(self) -> None:
        n = 0
        while not self.done.wait(self.every):
            sent = self.batches.sent
            t0 = time.perf_counter()
            matched = self.client.match([make_hash(PDQ, self.query(n))], timeout=60).matched
            self.times.append((sent, time.perf_counter() - t0, matched))
            n += 1

    def summary(self, mark: int) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        windows: dict[int, list[float]] = {}
        for sent, seconds, _ in self.times:
            windows.setdefault(sent // mark, []).append(seconds * 1e3)
        for w, ms in sorted(windows.items()):
            ms.sort()
            out.append(
                {
                    "entries_sent_from": w * mark,
                    "queries": len(ms),
                    "p50_ms": round(statistics.median(ms), 2),
                    "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
                    "max_ms": round(ms[-1], 2),
                }
            )
        return out


def from_file(pid: int, data: Path, wait: float) -> float | None:
    """Seconds until the server maps the list's current segment file (it serves from the
    file it wrote once the list is quiet), at most `wait`; None if it did not. Current:
    the file now at the path, by inode, not one it replaced (which may still be mapped)."""
    path = data / "segments" / "list-1.seg"
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < wait:
        try:
            inode = str(path.stat().st_ino)
        except FileNotFoundError:
            inode = ""
        maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
        if inode and any(line.split()[4:6] == [inode, str(path)] for line in maps):
            return round(time.perf_counter() - t0, 1)
        time.sleep(1)
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--entries", type=int, default=10_000_000)
    p.add_argument("--batch", type=int, default=50_000)
    p.add_argument("--mark", type=int, default=5_000_000)
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    p.add_argument("--query-every", type=float, default=0.05, help="seconds; 0 = no queries")
    p.add_argument(
        "--file-wait", type=float, default=600.0, help="seconds to wait for the segment file"
    )
    p.add_argument("--keep", action="store_true", help="keep the data folder; print its path")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hm-bulk-", dir=args.workdir))
    report: dict[str, object] = {"entries": args.entries, "batch": args.batch}
    try:
        store = Store(tmp)
        hotline = store.add_tenant("hotline", Role.HOTLINE)
        platform = store.add_tenant("platform", Role.PLATFORM)
        store.create_list("bulk", "hotline", pdq_threshold=31, pdq_min_quality=0)
        store.close()
        proc, address, _ = start(tmp)
        try:
            batches = Batches(args.entries, args.batch, args.mark)
            marks = batches.marks
            queries = Queries(address, platform, batches, args.query_every)
            if args.query_every > 0:
                queries.start()
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()

            def messages() -> Iterator[bytes]:
                seen = 0
                for message in batches:
                    yield message
                    if len(marks) > seen:
                        seen = len(marks)
                        sent, at = marks[-1]
                        rss = memory(proc.pid)["VmRSS"]
                        print(f"sent {sent:,} at {at:.1f} s; server RSS {rss} GiB", flush=True)

            with grpc.insecure_channel(
                address, options=[("grpc.max_send_message_length", 64 << 20)]
            ) as channel:
                upload = channel.stream_unary("/hashmatch.v1.ListService/UploadChanges")
                upload(messages(), metadata=(("authorization", f"Bearer {hotline}"),), timeout=7200)
            seconds = time.perf_counter() - t0
            queries.done.set()
            if queries.is_alive():
                queries.join()
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak = next(line for line in status.splitlines() if line.startswith("VmHWM"))
            report |= {
                "seconds": round(seconds, 1),
                "entries_per_second": round(args.entries / seconds),
                "client_cpu_seconds": round(
                    cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1
                ),
                "server_memory_gib": memory(proc.pid),
                "server_peak_gib": round(int(peak.split()[1]) / 2**20, 2),
                "marks": [(sent, round(at, 1)) for sent, at in marks],
                "queries_during_load": queries.summary(args.mark),
            }
            client = MatchClient(Connection(server=address, token=platform, retry=RetryPolicy(3)))
            found = sum(client.match([make_hash(PDQ, value)]).matched for value in batches.probes)
            report["sampled_matches"] = f"{found}/{len(batches.probes)}"
            report["from_file"] = from_file(proc.pid, tmp, args.file_wait)
            if report["from_file"] is not None:
                found = sum(
                    client.match([make_hash(PDQ, value)]).matched for value in batches.probes
                )
                report["sampled_matches_from_file"] = f"{found}/{len(batches.probes)}"
                report["server_memory_from_file_gib"] = memory(proc.pid)
        finally:
            stop(proc)
        du = subprocess.run(["du", "-sb", str(tmp / "store")], capture_output=True, text=True)
        report["store_gib"] = round(int(du.stdout.split()[0]) / 2**30, 2)
        reader = Store(tmp)
        listed = reader.get_list("bulk")
        reader.close()
        assert listed is not None
        report["listed"] = sum(listed.counts)
    finally:
        if args.keep:
            print("data folder kept:", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(report, indent=1), flush=True)


if __name__ == "__main__":
    main()

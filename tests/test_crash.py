"""Crash safety and a full disk: acknowledged batches survive, nothing is half-applied."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import start
from hashmatch.client import (
    MD5,
    Connection,
    HashmatchError,
    ListClient,
    ResourceExhausted,
    RetryPolicy,
)
from hashmatch.client.digest import ListDigest
from hashmatch.client.list_client import Change, build_batch
from hashmatch.server.store import Role, Store
from helpers import hashes, launch, random_digest, upsert

BATCH = 50


def batch_changes(n: int) -> list[Change]:
    rng = random.Random(n)
    return [upsert(MD5, random_digest(rng, MD5), f"B{n}-{i}") for i in range(BATCH)]


def digest_upto(version: int) -> str:
    d = ListDigest()
    for n in range(version):
        for c in batch_changes(n):
            d.add(MD5, c.hash.value, c.reference_id or "")
    return d.hex()


def test_sigkill_during_uploads_keeps_every_acknowledged_batch(tmp_path: Path) -> None:
    store = Store(tmp_path)
    token = store.add_tenant("hotline", Role.HOTLINE)
    store.create_list("iwf", "hotline", pdq_threshold=31, pdq_min_quality=50)
    store.close()
    rng = random.Random(99)
    acked = 0
    for round_ in range(20):
        proc, address = launch(tmp_path)
        client = ListClient(Connection(server=address, token=token, retry=RetryPolicy(attempts=1)))
        try:
            info = client.get_list("iwf")
            # Every acknowledged batch is there, and nothing but whole batches.
            assert info.version >= acked
            assert info.counts["md5"] == BATCH * info.version
            assert info.digest == digest_upto(info.version)
            next_batch = info.version
            stop = threading.Event()

            def writer(
                first: int, use_stream: bool, client: ListClient, stop: threading.Event
            ) -> None:
                nonlocal acked
                n = first
                while not stop.is_set():
                    try:
                        if use_stream:
                            reqs = [
                                build_batch("iwf", f"b{k}", batch_changes(k))
                                for k in range(n, n + 4)
                            ]
                            client.upload_changes(reqs)
                            n += 4
                        else:
                            client.apply_changes("iwf", f"b{n}", batch_changes(n))
                            n += 1
                        acked = n
                    except HashmatchError:
                        return

            t = threading.Thread(target=writer, args=(next_batch, round_ % 2 == 1, client, stop))
            t.start()
            time.sleep(rng.uniform(0.05, 0.25))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            stop.set()
            t.join()
        finally:
            client.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    proc, address = launch(tmp_path)
    try:
        with ListClient(Connection(server=address, token=token)) as client:
            info = client.get_list("iwf")
            assert info.version >= acked > 0
            assert info.counts["md5"] == BATCH * info.version
            assert info.digest == digest_upto(info.version)
    finally:
        proc.terminate()
        proc.wait()


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_is_a_clean_error_and_the_store_recovers(tiny_fs: Path) -> None:
    ballast = tiny_fs / "ballast"
    ballast.write_bytes(bytes(1 << 20))
    running = start(tiny_fs / "data")
    try:
        lists = running.lists()
        lists.create_list("iwf")
        applied = 0
        with pytest.raises(ResourceExhausted) as err:
            for n in range(1000):
                lists.apply_changes("iwf", f"b{n}", batch_changes(n))
                applied = n + 1
        assert err.value.reason == "ERROR_REASON_STORE_FULL"
        assert applied > 0
        info = lists.get_list("iwf")
        assert info.version == applied and info.counts["md5"] == BATCH * applied
        assert info.digest == digest_upto(applied)
        first = batch_changes(0)[0].hash.value
        assert running.matcher().match(hashes((MD5, first))).matched

        ballast.unlink()
        lists.apply_changes("iwf", f"b{applied}", batch_changes(applied))
        assert lists.get_list("iwf").version == applied + 1
    finally:
        running.service.stop(grace=0)


def test_reader_slots_of_a_killed_process_are_reclaimed(tmp_path: Path) -> None:
    store = Store(tmp_path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from pathlib import Path; from hashmatch.server.store import Store;"
            f"t = Store(Path({str(tmp_path)!r})).read(); t.get(b'x');"
            "print('reading', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "reading"
        holder.kill()
        holder.wait()
        # The dead process's read slot would pin old pages and make the file grow.
        assert store.reclaim_readers() == 1
        assert store.reclaim_readers() == 0
    finally:
        store.close()

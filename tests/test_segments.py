"""Segment files: a restarted server maps each list from its file instead of rebuilding it
from LMDB, follows the change log from the file's version, and refuses, loudly, a file
that is damaged, of another format, or not the store's list (rebuilding from the store)."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import TENANTS, Running
from hashmatch.client import (
    MD5,
    PDQ,
    Change,
    Connection,
    ListClient,
    MatchClient,
    RetryPolicy,
)
from hashmatch.server import _hashcore
from hashmatch.server.app import build
from hashmatch.server.core import read_segment_info
from hashmatch.server.settings import Settings
from hashmatch.server.store import Store
from helpers import eventually, flip_bits, hashes, launch, random_digest, random_pdq, retire, upsert

FOLLOWER = "hashmatch.server.sync.follower"


def serve(data_dir: Path, tokens: dict[str, str] | None = None, quiet: float = 0.0) -> Running:
    """A server writing a changed list's segment file once it is `quiet` seconds unchanged."""
    service = build(
        Settings(data_dir=data_dir, listen="127.0.0.1:0", poll_interval=0.01, segment_quiet=quiet)
    )
    if tokens is None:
        tokens = {name: service.store.add_tenant(name, role) for name, role in TENANTS.items()}
    return Running(service, tokens)


def segment(data_dir: Path, list_id: int = 1) -> Path:
    return data_dir / "segments" / f"list-{list_id}.seg"


def filed_version(data_dir: Path, list_id: int = 1) -> int | None:
    try:
        return read_segment_info(segment(data_dir, list_id))[1]
    except (FileNotFoundError, ValueError):
        return None


def wait_filed(data_dir: Path, version: int) -> None:
    eventually(lambda: filed_version(data_dir) == version, f"segment file at version {version}")


class Listed:
    """A list's entries and the hashes to probe it with."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self.rng = rng
        self.md5 = [random_digest(rng, MD5) for _ in range(300)]
        self.pdq = [random_pdq(rng) for _ in range(50)]

    def changes(self) -> list[Change]:
        return [upsert(MD5, v, f"M-{i}") for i, v in enumerate(self.md5)] + [
            upsert(PDQ, v, f"P-{i}") for i, v in enumerate(self.pdq)
        ]

    def refs(self, client: MatchClient, alg: int, value: bytes) -> list[str]:
        return [r.reference_id for r in client.match(hashes((alg, value))).references]


def fill(running: Running, listed: Listed) -> int:
    lists = running.lists()
    lists.create_list("iwf")
    return lists.apply_changes("iwf", "b1", listed.changes()).version


def test_a_restart_maps_the_list_from_its_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    listed = Listed(1)
    first = serve(tmp_path)
    version = fill(first, listed)
    wait_filed(tmp_path, version)
    before = first.lists().get_list("iwf")
    first.service.stop(grace=0)

    with caplog.at_level(logging.INFO, logger=FOLLOWER):
        second = serve(tmp_path, first.tokens)
    try:
        assert f"mapped list iwf from {segment(tmp_path)} at version {version}" in caplog.text
        assert "rebuilding" not in caplog.text
        after = second.lists().get_list("iwf")
        assert (after.version, after.counts, after.digest) == (
            before.version,
            before.counts,
            before.digest,
        )
        client = second.matcher()
        assert listed.refs(client, MD5, listed.md5[7]) == ["M-7"]
        near = flip_bits(listed.pdq[3], 12, listed.rng)
        assert listed.refs(client, PDQ, near) == ["P-3"]
        assert not client.match(hashes((MD5, random_digest(listed.rng, MD5)))).matched
        # The mapped list takes changes like any other, and its file follows them.
        done = second.lists().apply_changes("iwf", "b2", [retire(MD5, listed.md5[7])])
        assert not client.match(hashes((MD5, listed.md5[7]))).matched
        wait_filed(tmp_path, done.version)
    finally:
        second.service.stop(grace=0)


def test_changes_after_the_file_are_followed_from_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    listed = Listed(2)
    first = serve(tmp_path)
    version = fill(first, listed)
    wait_filed(tmp_path, version)
    first.service.stop(grace=0)

    # A server that writes no file in its lifetime: the changes are only in the log.
    second = serve(tmp_path, first.tokens, quiet=3600)
    fresh = random_digest(listed.rng, MD5)
    lists = second.lists()
    lists.apply_changes("iwf", "b2", [retire(MD5, listed.md5[0]), upsert(MD5, fresh, "NEW")])
    last = lists.apply_changes("iwf", "b3", [upsert(MD5, listed.md5[1], "M-1-again")]).version
    second.service.stop(grace=0)
    assert filed_version(tmp_path) == version

    with caplog.at_level(logging.INFO, logger=FOLLOWER):
        third = serve(tmp_path, first.tokens, quiet=3600)
    try:
        assert f"at version {version}" in caplog.text
        client = third.matcher()
        assert not client.match(hashes((MD5, listed.md5[0]))).matched
        assert listed.refs(client, MD5, fresh) == ["NEW"]
        assert listed.refs(client, MD5, listed.md5[1]) == ["M-1-again"]
        assert third.lists().get_list("iwf").version == last
    finally:
        third.service.stop(grace=0)


def mapped_here(path: Path) -> bool:
    """Whether this process (which runs the test's server) maps the file at `path`."""
    return str(path) in Path("/proc/self/maps").read_text()


def test_the_writing_process_serves_from_the_file_it_wrote(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Once a quiet list's file is written, the process serves from it (its pages shared
    with other workers and the next start) instead of the index it built, with the same
    answers and digest; later changes are served on top, and files follow them."""
    listed = Listed(5)
    running = serve(tmp_path)
    try:
        with caplog.at_level(logging.INFO, logger=FOLLOWER):
            version = fill(running, listed)
            wait_filed(tmp_path, version)
            eventually(lambda: mapped_here(segment(tmp_path)), "the file is mapped")
        assert f"serving list id 1 from its segment file at version {version}" in caplog.text
        client = running.matcher()
        assert listed.refs(client, MD5, listed.md5[9]) == ["M-9"]
        assert listed.refs(client, PDQ, flip_bits(listed.pdq[4], 12, listed.rng)) == ["P-4"]
        assert not client.match(hashes((MD5, random_digest(listed.rng, MD5)))).matched
        fresh = random_digest(listed.rng, MD5)
        lists = running.lists()
        done = lists.apply_changes(
            "iwf", "b2", [retire(MD5, listed.md5[9]), upsert(MD5, fresh, "N")]
        )
        assert not client.match(hashes((MD5, listed.md5[9]))).matched
        assert listed.refs(client, MD5, fresh) == ["N"]
        assert running.service.follower.index.list_snapshot(1).digest() == bytes.fromhex(
            lists.get_list("iwf").digest
        )
        wait_filed(tmp_path, done.version)
    finally:
        running.service.stop(grace=0)


def damage(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("harm", "reason"),
    [
        # A byte inside the largest section (the MD5 digests, near the file's start).
        (lambda p: damage(p, 4096), "checksum does not match"),
        (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "truncated"),
        (lambda p: damage(p, 8), "format version"),
        (lambda p: p.write_bytes(b"not a segment file"), "shorter than a header"),
    ],
    ids=["flipped-byte", "truncated", "other-format-version", "not-a-segment-file"],
)
def test_a_bad_file_is_refused_loudly_and_the_list_rebuilt(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    harm: Callable[[Path], None],
    reason: str,
) -> None:
    listed = Listed(3)
    first = serve(tmp_path)
    version = fill(first, listed)
    wait_filed(tmp_path, version)
    first.service.stop(grace=0)
    harm(segment(tmp_path))
    harmed = segment(tmp_path).read_bytes()

    with caplog.at_level(logging.INFO, logger=FOLLOWER):
        second = serve(tmp_path, first.tokens)
    try:
        warned = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warned) == 1, caplog.text
        assert "not used" in warned[0].getMessage() and reason in warned[0].getMessage()
        assert "rebuilding the list from the store" in warned[0].getMessage()
        client = second.matcher()
        assert listed.refs(client, MD5, listed.md5[5]) == ["M-5"]
        assert listed.refs(client, PDQ, listed.pdq[9]) == ["P-9"]
        # A good file replaces the bad one.
        eventually(lambda: segment(tmp_path).read_bytes() != harmed, "the file rewritten")
        assert filed_version(tmp_path) == version
    finally:
        second.service.stop(grace=0)
    with caplog.at_level(logging.INFO, logger=FOLLOWER):
        caplog.clear()
        third = serve(tmp_path, first.tokens)
    try:
        assert "mapped list iwf" in caplog.text
    finally:
        third.service.stop(grace=0)


def test_a_file_of_another_store_is_refused_by_its_digest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Two data folders whose list has the same id and version but other entries (a folder
    # restored from a backup beside newer segment files, say).
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    mine, other = Listed(4), Listed(5)
    a = serve(ours)
    version = fill(a, mine)
    wait_filed(ours, version)
    a.service.stop(grace=0)
    b = serve(theirs)
    assert fill(b, other) == version
    wait_filed(theirs, version)
    b.service.stop(grace=0)
    segment(ours).write_bytes(segment(theirs).read_bytes())

    with caplog.at_level(logging.INFO, logger=FOLLOWER):
        again = serve(ours, a.tokens)
    try:
        assert "its digest" in caplog.text and "rebuilding the list from the store" in caplog.text
        client = again.matcher()
        assert mine.refs(client, MD5, mine.md5[0]) == ["M-0"]
        assert not client.match(hashes((MD5, other.md5[0]))).matched
    finally:
        again.service.stop(grace=0)


def test_a_file_whose_entries_are_not_its_digest_is_reloaded_from_the_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    listed = Listed(6)
    first = serve(tmp_path)
    version = fill(first, listed)
    wait_filed(tmp_path, version)
    meta = first.service.store.get_list("iwf")
    assert meta is not None
    first.service.stop(grace=0)
    # A whole, well-formed file saying the store's version and digest over other entries:
    # only the digest of its entries, checked once the list is served, tells.
    forged = _hashcore.Index()
    forged.configure_list(meta.id, 31, 0)
    stranger = random_digest(listed.rng, MD5)
    algs, slots = bytes([MD5]), stranger.ljust(32, b"\0")
    forged.apply(meta.id, algs, slots, (1).to_bytes(8, "little"), b"", b"", b"", b"", version)
    forged.list_snapshot(meta.id).save(segment(tmp_path), meta.id, version, 0, meta.digest)

    with caplog.at_level(logging.INFO, logger=FOLLOWER):
        second = serve(tmp_path, first.tokens, quiet=3600)
    try:
        eventually(lambda: "reloading it from the store" in caplog.text, "the digest check")
        client = second.matcher()
        eventually(lambda: listed.refs(client, MD5, listed.md5[2]) == ["M-2"], "reloaded")
        assert not client.match(hashes((MD5, stranger))).matched
    finally:
        second.service.stop(grace=0)


def test_a_crash_while_writing_leaves_a_usable_folder(tmp_path: Path) -> None:
    """kill -9 of the server at moments around its file writes: whatever is on disk after,
    a restart serves exactly the acknowledged list (mapped or rebuilt)."""
    rng = random.Random(7)
    store = Store(tmp_path)
    token = store.add_tenant("hotline", TENANTS["hotline-a"])
    platform = store.add_tenant("platform", TENANTS["platform"])
    store.close()
    listed: dict[bytes, str] = {}
    for round_ in range(4):
        proc, address = launch(tmp_path, "--segment-quiet", "0")
        try:
            lists = ListClient(Connection(server=address, token=token, retry=RetryPolicy(1)))
            if round_ == 0:
                lists.create_list("iwf")
            batch = {random_digest(rng, MD5): f"R{round_}-{i}" for i in range(20_000)}
            lists.apply_changes("iwf", f"b{round_}", [upsert(MD5, v, r) for v, r in batch.items()])
            listed.update(batch)
            lists.close()
            # The file of this version is being written about now: kill at varied moments.
            time.sleep(rng.uniform(0.0, 1.5))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        (tmp_path / "segments" / f"list-1.seg.tmp-{proc.pid}").write_bytes(b"partial")
    proc, address = launch(tmp_path, "--segment-quiet", "3600")
    try:
        client = MatchClient(Connection(server=address, token=platform, retry=RetryPolicy(1)))
        sample = rng.sample(sorted(listed), 200)
        for value in sample:
            got = [r.reference_id for r in client.match(hashes((MD5, value))).references]
            assert got == [listed[value]]
        assert not client.match(hashes((MD5, random_digest(rng, MD5)))).matched
        assert not list((tmp_path / "segments").glob("*.tmp-*")), "stray files are removed"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

"""A list file is applied whole or not at all (issue 16): a file the server refuses, at
whatever row, leaves the list exactly as it was: version, digest and every verdict."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import Running, same_lists, start, start_replica
from hashmatch.client import PDQ, SHA1, make_hash
from hashmatch.client.cli import main
from hashmatch.client.errors import HashmatchError, ResourceExhausted
from hashmatch.client.list_client import build_batch
from hashmatch.client.push import FileRefused, PushResult, batches, push, summarize, upload_id_for
from hashmatch.server.services import lists as list_service
from hashmatch.server.store import staging
from hashmatch.server.store.checks import check_store
from hashmatch.server.store.keys import U64
from hashmatch.v1 import lists_pb2
from helpers import eventually, random_digest, random_pdq, upsert

ROWS = 25_001
BATCH = 2_500  # eleven messages
# Rows the server refuses at every kind of place: first, last, either side of a message
# boundary, and the one the issue reported.
BAD_AT = (0, 1, 2_499, 2_500, 2_501, 7_777, 14_999, 15_000, 22_500, 24_999, 25_000)
DEGENERATE_PDQ = "00" * 32


def rows(seed: int, n: int, prefix: str) -> list[tuple[str, str, str, str]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 4 == 0:
            out.append(("pdq", random_pdq(rng).hex(), f"{prefix}-{i}", "90"))
        else:
            out.append(("sha1", random_digest(rng, SHA1).hex(), f"{prefix}-{i}", ""))
    return out


def write(path: Path, data: list[tuple[str, str, str, str]]) -> Path:
    lines = ["algorithm,hash_hex,reference_id,quality", *(",".join(r) for r in data)]
    path.write_text("\n".join(lines) + "\n")
    return path


def verdicts(running: Running, data: list[tuple[str, str, str, str]]) -> list[tuple[str, ...]]:
    """The served verdict (references) of every row's hash, in row order."""
    matcher = running.matcher()
    out: list[tuple[str, ...]] = []
    for first in range(0, len(data), 5_000):
        items = [
            (str(i), [make_hash(PDQ if alg == "pdq" else SHA1, bytes.fromhex(value))])
            for i, (alg, value, _, _) in enumerate(data[first : first + 5_000])
        ]
        out += [tuple(r.reference_id for r in res.references) for res in matcher.match_batch(items)]
    return out


def state(running: Running) -> tuple[int, str, str]:
    info = running.lists().get_list("iwf")
    return info.version, info.digest, info.last_batch_id


@pytest.fixture
def listed(running: Running, tmp_path: Path) -> list[tuple[str, str, str, str]]:
    """A list already holding 3,000 entries, some of which the big file re-lists."""
    running.lists().create_list("iwf")
    before = rows(1, 3_000, "OLD")
    path = write(tmp_path / "old.csv", before)
    push(
        running.lists(),
        path,
        "iwf",
        summary=summarize(path, retire=False),
        upload_id=upload_id_for(path),
        batch_size=1_000,
    )
    return before


def test_a_refused_file_leaves_the_list_exactly_as_it_was(
    running: Running, tmp_path: Path, listed: list[tuple[str, str, str, str]]
) -> None:
    big = rows(2, ROWS, "NEW")
    big[100:110] = listed[:10]  # re-listed entries: already there, same references
    watched = listed + big
    before = (state(running), verdicts(running, watched))
    for n, at in enumerate(BAD_AT):
        data = list(big)
        ref = data[at][2]
        # Alternately a degenerate PDQ and one below the list's minimum quality: checks
        # only the server makes against the list's settings.
        low = random_pdq(random.Random(at)).hex()
        data[at] = ("pdq", DEGENERATE_PDQ, ref, "90") if n % 2 else ("pdq", low, ref, "10")
        path = write(tmp_path / f"bad-{at}.csv", data)
        with pytest.raises(FileRefused) as refused:
            push(
                running.lists(),
                path,
                "iwf",
                summary=summarize(path, retire=False),
                upload_id=upload_id_for(path),
                batch_size=BATCH,
            )
        assert (state(running), verdicts(running, watched)) == before, f"bad row at {at}"
        # The refusal names the file line of the bad row (the header is line 1).
        assert [line for line, _ in refused.value.lines] == [at + 2]
    assert running.service.store.stages() == []


def push_file(running: Running, path: Path, **kw: object) -> PushResult:
    return push(
        running.lists(),
        path,
        "iwf",
        summary=summarize(path, retire=False),
        upload_id=upload_id_for(path),
        batch_size=1_000,
        **kw,  # type: ignore[arg-type]
    )


def test_replace_makes_the_list_equal_to_the_file_in_one_unit(
    running: Running,
    tmp_path: Path,
    listed: list[tuple[str, str, str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """More than one scan step and many retirement batches: 25,000 entries listed before,
    of which the file keeps 1,000 (one under a new reference) and adds 500."""
    more = rows(3, 22_000, "MORE")
    push_file(running, write(tmp_path / "more.csv", more))
    kept = [*listed[:999], (*listed[999][:2], "RENAMED", listed[999][3])]
    added = rows(4, 500, "ADDED")
    path = write(tmp_path / "export.csv", kept + added)
    # Small steps: the scan for entries to retire resumes many times.
    monkeypatch.setattr(staging, "REST_SCAN", 4_096)
    monkeypatch.setattr(staging, "REST_BATCH", 1_500)
    version = state(running)[0]
    result = push_file(running, path, replace=True)
    assert result.digest_matches and result.replaced == 24_000
    info = running.lists().get_list("iwf")
    assert sum(info.counts.values()) == 1_500
    # Each retirement batch and each batch of the file got its own version, and the
    # change log, counts and digest agree.
    assert info.version >= version + 24_000 // 1_500 + 2
    assert all(report.ok for report in check_store(running.service.store))
    expected = [(r[2],) for r in kept + added] + [()] * (len(listed) - 1_000 + len(more))
    assert verdicts(running, kept + added + listed[1_000:] + more) == expected
    # The same export again: nothing to retire, nothing new.
    again = push_file(running, path, replace=True)
    assert again.digest_matches and again.replaced == 0


def test_a_replica_receives_a_replacement_as_batches(tmp_path: Path) -> None:
    primary = start(tmp_path / "primary")
    replica = start_replica(tmp_path / "replica", primary.address, primary.tokens)
    try:
        primary.lists().create_list("iwf")
        push_file(primary, write(tmp_path / "old.csv", rows(5, 3_000, "OLD")))
        result = push_file(
            primary, write(tmp_path / "new.csv", rows(6, 2_000, "NEW")), replace=True
        )
        assert result.digest_matches and result.replaced == 3_000
        eventually(lambda: same_lists(primary, replica), "the replica holds the replacement")
    finally:
        replica.service.stop(grace=0)
        primary.service.stop(grace=0)


def test_a_delta_file_upserts_and_retires_as_one_unit(
    running: Running, tmp_path: Path, listed: list[tuple[str, str, str, str]]
) -> None:
    lines = []
    for alg, value, ref, _ in listed[:2_000]:  # retired
        lines.append(
            json.dumps({"algorithm": alg, "hash": value, "reference_id": ref, "retire": True})
        )
    for alg, value, ref, quality in rows(7, 2_000, "DELTA"):
        entry = {"algorithm": alg, "hash": value, "reference_id": ref}
        lines.append(json.dumps(entry | ({"quality": int(quality)} if quality else {})))
    path = tmp_path / "delta.jsonl"
    path.write_text("\n".join(lines) + "\n")
    version = state(running)[0]
    push_file(running, path)
    info = running.lists().get_list("iwf")
    assert info.version == version + 4 and sum(info.counts.values()) == 3_000
    assert verdicts(running, listed[:2_001]) == [()] * 2_000 + [(listed[2_000][2],)]


def test_a_dropped_upload_leaves_nothing_visible_and_nothing_staged(
    running: Running, tmp_path: Path, listed: list[tuple[str, str, str, str]]
) -> None:
    path = write(tmp_path / "new.csv", rows(8, 5_000, "NEW"))
    before = state(running)

    def dropped() -> Iterator[lists_pb2.ApplyChangesRequest]:
        for n, (_, request) in enumerate(batches(path, "iwf", "up", 1_000, retire=False, skip=0)):
            if n == 3:
                raise ConnectionError("the uploader went away")
            yield request

    with pytest.raises(HashmatchError):
        running.lists().upload_changes(dropped())
    eventually(lambda: running.service.store.stages() == [], "the stage is discarded")
    assert state(running) == before
    # Sent again, whole, it is applied.
    assert push_file(running, path).version == before[0] + 5


def test_a_refusal_when_publishing_keeps_nothing(
    running: Running, listed: list[tuple[str, str, str, str]]
) -> None:
    """A batch_id reused with other content is only found when the file is published."""
    rng = random.Random(9)
    lists = running.lists()
    lists.apply_changes("iwf", "taken", [upsert(SHA1, random_digest(rng, SHA1), "T")])
    before = state(running)
    fresh = build_batch("iwf", "f0", [upsert(SHA1, random_digest(rng, SHA1), "F")])
    fresh.upload_mode = lists_pb2.UPLOAD_MODE_WHOLE
    reused = build_batch("iwf", "taken", [upsert(SHA1, random_digest(rng, SHA1), "X")])
    with pytest.raises(HashmatchError) as refused:
        lists.upload_changes([fresh, reused])
    assert "nothing of the file was applied" in refused.value.message
    assert [v.field for v in refused.value.violations] == ["messages[1].batch_id"]
    assert state(running) == before
    assert running.service.store.stages() == []


def test_a_stage_left_by_a_dead_process_is_discarded(
    running: Running, tmp_path: Path, listed: list[tuple[str, str, str, str]]
) -> None:
    store = running.service.store
    stage = store.open_stage(1, "hotline-a")
    store.stage(stage, 0, [b"left over"], [b"\x01" + bytes(16)])
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    # The stage's owner, as a crashed server would have left it.
    owner = {"pid": int(gone.stdout), "started": "0", "list": 1, "actor": "hotline-a", "at": 0}
    with store._write() as txn:
        txn.put(U64.pack(stage), json.dumps(owner).encode(), db=store._db("uploads"))
    live = store.open_stage(1, "hotline-a")
    assert store.stages() == [live]
    store.discard_stage(live)


def test_push_exit_codes(
    running: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--server", running.address, "--token", running.tokens["hotline-a"]]
    running.lists().create_list("iwf")
    good = write(tmp_path / "good.csv", rows(11, 300, "G"))
    assert main([*argv, "push", "iwf", str(good), "--batch-size", "100"]) == 0
    replace = write(tmp_path / "replace.csv", rows(12, 10, "R"))
    assert main([*argv, "push", "iwf", str(replace), "--replace"]) == 0
    out = capsys.readouterr().out
    assert "retired 300 entries the file does not list" in out and "exactly this file" in out
    bad = write(tmp_path / "bad.csv", [*rows(13, 10, "B"), ("pdq", DEGENERATE_PDQ, "Z", "90")])
    assert main([*argv, "push", "iwf", str(bad)]) == 1
    assert f"{bad}:12:" in capsys.readouterr().err
    assert main([*argv, "push", "iwf", str(tmp_path / "missing.csv")]) == 2
    unreachable = ["--server", "127.0.0.1:1", "--token", "x"]
    assert main([*unreachable, "push", "iwf", str(good)]) == 2
    assert main([*argv, "push", "iwf", str(good), "--delta"]) == 0
    empty = write(tmp_path / "empty.csv", [])
    assert main([*argv, "push", "iwf", str(empty), "--replace"]) == 1
    assert "an empty file does not replace a list" in capsys.readouterr().err
    assert running.lists().get_list("iwf").counts["sha1"] > 0


def test_the_change_log_is_read_in_pages_of_bounded_size(
    running: Running, listed: list[tuple[str, str, str, str]]
) -> None:
    """A published file is thousands of batches at once: readers page through them."""
    store = running.service.store
    list_id = store.get_list("iwf").id  # type: ignore[union-attr]
    assert [r.version for r in store.changes_since(list_id, 0)] == [1, 2, 3]
    assert [r.version for r in store.changes_since(list_id, 0, max_bytes=1)] == [1]
    assert [r.version for r in store.changes_since(list_id, 1, max_bytes=1)] == [2]


def test_a_file_over_the_size_bound_is_refused_whole(
    running: Running,
    tmp_path: Path,
    listed: list[tuple[str, str, str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(list_service, "MAX_FILE_CHANGES", 2_500)
    before = state(running)
    with pytest.raises(FileRefused) as refused:
        push_file(running, write(tmp_path / "big.csv", rows(14, 3_000, "BIG")))
    assert "a file holds at most 2500" in str(refused.value.lines)
    assert state(running) == before


def held_upload(
    list_name: str, batch_id: str, release: threading.Event
) -> Iterator[lists_pb2.ApplyChangesRequest]:
    """A whole-file upload that stays open after its first message until `release`."""
    digest = random_digest(random.Random(batch_id), SHA1)
    first = build_batch(list_name, batch_id, [upsert(SHA1, digest, "H")])
    first.upload_mode = lists_pb2.UPLOAD_MODE_WHOLE
    yield first
    release.wait(30)


def test_one_whole_file_upload_of_a_list_at_a_time(
    running: Running, listed: list[tuple[str, str, str, str]]
) -> None:
    """A second whole-file upload of a list while one is open is refused at once (each may
    stage millions of changes and publishing holds the store's writer); the open one is
    still applied, and the list takes the next file once it has ended."""
    rng = random.Random(12)
    release = threading.Event()
    before = state(running)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(running.lists().upload_changes, held_upload("iwf", "held-0", release))
        second = build_batch("iwf", "second-0", [upsert(SHA1, random_digest(rng, SHA1), "S")])
        second.upload_mode = lists_pb2.UPLOAD_MODE_WHOLE

        # The server holds the first file's stage once it has read its first message.
        eventually(lambda: running.service.store.stages() != [], "the first file is staged")
        with pytest.raises(ResourceExhausted) as info:
            running.lists().upload_changes(iter([second]))
        assert "already in progress" in str(info.value)
        release.set()
        assert first.result(timeout=30).last_batch_id == "held-0"
    assert state(running)[0] > before[0]
    again = build_batch("iwf", "again-0", [upsert(SHA1, random_digest(rng, SHA1), "A")])
    again.upload_mode = lists_pb2.UPLOAD_MODE_WHOLE
    assert running.lists().upload_changes(iter([again])).last_batch_id == "again-0"


def test_a_tenant_has_a_bounded_number_of_whole_file_uploads_open(
    running: Running, listed: list[tuple[str, str, str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Across its lists too: a hotline creating lists to stage files in parallel is held to
    MAX_TENANT_WHOLE_UPLOADS (1 here) at a time."""
    monkeypatch.setattr(list_service, "MAX_TENANT_WHOLE_UPLOADS", 1)
    running.lists().create_list("other")
    release = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(running.lists().upload_changes, held_upload("iwf", "held-0", release))
        eventually(lambda: running.service.store.stages() != [], "the first file is staged")
        other = build_batch("other", "o-0", [upsert(SHA1, bytes(20), "O")])
        other.upload_mode = lists_pb2.UPLOAD_MODE_WHOLE
        with pytest.raises(ResourceExhausted) as info:
            running.lists().upload_changes(iter([other]))
        assert "whole-file uploads of yours are in progress" in str(info.value)
        release.set()
        assert first.result(timeout=30).last_batch_id == "held-0"
    assert running.lists().upload_changes(iter([other])).last_batch_id == "o-0"

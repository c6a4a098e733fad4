"""Silent misses in the client: PDQ requested without the extra, symlinks leading out of a
scanned folder, reports without `list_version`, and push's digest check exiting like a match."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import pytest

from conftest import Running
from hashmatch.client import MD5, Change, PdqNotInstalled, hashing, make_hash
from hashmatch.client.cli import main
from hashmatch.client.report import open_report
from hashmatch.client.results import FileResult, Verdict
from hashmatch.client.scan import ScanOptions, scan, walk
from helpers import upsert


@pytest.fixture
def no_pdq(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the [pdq] extra were not installed."""

    def missing() -> hashing._PdqBackend:
        raise PdqNotInstalled(f"{hashing._PDQ_EXTRA_HINT}; import failed: simulated")

    monkeypatch.setattr(hashing, "_pdq_backend", missing)
    assert not hashing.pdq_available()


def listed_file(running: Running, path: Path) -> None:
    path.write_bytes(b"listed content")
    with running.lists() as lists:
        lists.create_list("l")
        digest = hashlib.md5(b"listed content").digest()
        lists.apply_changes("l", "b1", [Change(make_hash(MD5, digest), "REF-X")])


@pytest.mark.parametrize("kwargs", [{"dihedral": True}, {"pdq": True}])
def test_match_file_asking_for_pdq_without_the_extra_raises(
    running: Running, tmp_path: Path, no_pdq: None, kwargs: dict[str, bool]
) -> None:
    f = tmp_path / "f.jpg"
    listed_file(running, f)
    with running.matcher() as client:
        with pytest.raises(PdqNotInstalled, match=r"hashmatch-client\[pdq\]"):
            client.match_file(f, **kwargs)
        with pytest.raises(PdqNotInstalled, match=r"hashmatch-client\[pdq\]"):
            client.match_files([f], **kwargs)


def test_match_file_without_the_extra_says_pdq_was_not_computed(
    running: Running, tmp_path: Path, no_pdq: None
) -> None:
    f = tmp_path / "f.jpg"
    listed_file(running, f)
    with running.matcher() as client:
        one = client.match_file(f)
        many = client.match_files([f])
        off = client.match_file(f, pdq=False)
    assert one.verdict is Verdict.MATCH
    assert one.reason is not None and "PDQ not computed" in one.reason
    assert "hashmatch-client[pdq]" in one.reason
    assert many[0].reason == one.reason
    assert off.verdict is Verdict.MATCH and off.reason is None  # explicitly off: no remark


def test_async_match_file_asking_for_pdq_without_the_extra_raises(
    running: Running, tmp_path: Path, no_pdq: None
) -> None:
    import asyncio

    from hashmatch.client.aio import AsyncMatchClient

    f = tmp_path / "f.jpg"
    listed_file(running, f)

    async def go() -> FileResult:
        async with AsyncMatchClient(running.connection("platform")) as client:
            with pytest.raises(PdqNotInstalled):
                await client.match_file(f, dihedral=True)
            return await client.match_file(f)

    result = asyncio.run(go())
    assert result.verdict is Verdict.MATCH and "PDQ not computed" in (result.reason or "")


@pytest.fixture
def escaping(tmp_path: Path) -> Path:
    root = tmp_path / "folder"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "sub" / "b.txt").write_text("b")
    (tmp_path / "outside.txt").write_text("secret")
    (root / "up").symlink_to("..")  # the parent: would walk tmp_path (and loop)
    (root / "sub" / "slash").symlink_to("/")  # would walk the whole disk
    (root / "out.txt").symlink_to(tmp_path / "outside.txt")
    (root / "sub" / "in").symlink_to(root / "a.txt")  # stays inside: scanned
    (root / "sub" / "back").symlink_to(root)  # a loop inside: walked once
    return root


OUTSIDE = "symlink leads outside the scanned folder"


def test_walk_never_leaves_the_folders_given(escaping: Path) -> None:
    found = {os.path.relpath(f.path, escaping): f.problem for f in walk([escaping])}
    assert found == {
        "a.txt": None,
        "out.txt": OUTSIDE,
        "sub/b.txt": None,
        "sub/in": None,
        "sub/slash": OUTSIDE,
        "up": OUTSIDE,
    }


def test_the_roots_given_are_the_boundary(escaping: Path, tmp_path: Path) -> None:
    link = tmp_path / "link-to-folder"
    link.symlink_to(escaping)
    # A root that is itself a symlink: its target is the folder scanned.
    via_link = {os.path.relpath(f.path, link): f.problem for f in walk([link])}
    assert via_link == {os.path.relpath(f.path, escaping): f.problem for f in walk([escaping])}
    # Only "sub" given: links back to the folder above it lead outside.
    sub = {os.path.relpath(f.path, escaping / "sub"): f.problem for f in walk([escaping / "sub"])}
    assert sub == {"b.txt": None, "back": OUTSIDE, "in": OUTSIDE, "slash": OUTSIDE}
    # With the folder given too, they lead inside one of the roots.
    both = {f.path: f.problem for f in walk([escaping / "sub", escaping])}
    assert both[str(escaping / "sub" / "in")] is None
    assert both[str(escaping / "sub" / "back" / "a.txt")] is None
    assert both[str(escaping / "sub" / "back" / "up")] == OUTSIDE


def test_scan_covers_only_the_folders_own_files(running: Running, escaping: Path) -> None:
    got: list[FileResult] = []
    with running.matcher() as client:
        scan([escaping], client, ScanOptions(workers=0, pdq=False), on_result=got.append)
    by_path = {os.path.relpath(r.path, escaping): r for r in got}
    assert sorted(by_path) == ["a.txt", "out.txt", "sub/b.txt", "sub/in", "sub/slash", "up"]
    for rel in ("out.txt", "sub/slash", "up"):
        assert by_path[rel].verdict is Verdict.SKIPPED and by_path[rel].reason == OUTSIDE
    for rel in ("a.txt", "sub/b.txt", "sub/in"):
        assert by_path[rel].verdict is Verdict.NO_MATCH


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_scan_reports_carry_list_version(running: Running, tmp_path: Path, suffix: str) -> None:
    f = tmp_path / "files" / "f.bin"
    f.parent.mkdir()
    listed_file(running, f)
    with running.lists() as lists:
        lists.apply_changes("l", "b2", [upsert(MD5, bytes(16), "OTHER")])  # version 2
    report_path = tmp_path / f"report{suffix}"
    report = open_report(report_path)
    with running.matcher() as client:
        scan([f.parent], client, ScanOptions(workers=0, pdq=False), on_result=report.write)
    report.close()
    if suffix == ".jsonl":
        records = [json.loads(line) for line in report_path.read_text().splitlines()]
        assert records[0]["references"] == [
            {"list": "l", "reference_id": "REF-X", "list_version": 2, "labels": {}}
        ]
    else:
        with report_path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert rows[0]["references"] == "l:REF-X"
        assert rows[0]["list_versions"] == "2"


def test_push_exit_codes_keep_1_for_matches(
    running: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--server", running.address, "--token", running.tokens["hotline-a"]]
    with running.lists() as lists:
        lists.create_list("exact")
        lists.create_list("more")
        lists.apply_changes("more", "b1", [upsert(MD5, bytes(16), "ALREADY-THERE")])
    listfile = tmp_path / "list.csv"
    listfile.write_text(f"md5,{'ab' * 16},NEW-1\n")
    assert main([*argv, "push", "exact", str(listfile)]) == 0
    capsys.readouterr()
    # Applied: exit 0 (issue 16: 0 applied, 1 refused, 2 could not run), and it says so.
    assert main([*argv, "push", "more", str(listfile)]) == 0
    out = capsys.readouterr().out
    assert "also holds entries this file does not list" in out and "pushed 1 rows" in out
    # Retiring never claims the list equals the file.
    retire = tmp_path / "retire.csv"
    retire.write_text(f"md5,{'00' * 16},ALREADY-THERE\n")
    assert main([*argv, "push", "more", str(retire), "--retire"]) == 0


def test_retiring_a_file_just_pushed_retires_it(
    running: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--server", running.address, "--token", running.tokens["hotline-a"]]
    with running.lists() as lists:
        lists.create_list("x")
    listfile = tmp_path / "list.csv"
    listfile.write_text(f"md5,{'ab' * 16},R\n")
    assert main([*argv, "push", "x", str(listfile)]) == 0
    # The same content, retired: a new upload, not a "resume" that sends nothing.
    assert main([*argv, "push", "x", str(listfile), "--retire"]) == 0
    assert "resumed" not in capsys.readouterr().out
    with running.lists() as lists:
        info = lists.get_list("x")
    assert (info.version, info.counts["md5"]) == (2, 0)

"""`hashmatch-client scan` and the scan pipeline, end to end against a real server.

Uses the PDQ test data (tests/data/pdq/images, a copy of Meta's, kept in the repository)
plus files made here: a text file, a FIFO, a dangling link and a symlink loop.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hashmatch.client import MD5, PDQ, SHA1, SHA256, Change, FileResult, Verdict, make_hash
from hashmatch.client.report import open_report
from hashmatch.client.results import Reference
from hashmatch.client.scan import ScanOptions, scan, walk
from tests.conftest import Running

pytest.importorskip("pdqhash", reason="the hashmatch-client[pdq] extra is not installed")

BIN = Path(sys.executable).parent
# The bridge original, as the demo list holds it: (algorithm, hex, demo reference ID).
BRIDGE = {
    "md5": (MD5, "d35c785545392755e7e4164457657269", "DEMO-BRIDGE-1"),
    "sha1": (SHA1, "ea45d7166b30f98aac6af52f952193ce3083cb4c", "DEMO-BRIDGE-2"),
    "sha256": (
        SHA256,
        "b5b0799616df52d475a3968dc7e54f1d0724c912244ffa6175bc786375dd7298",
        "DEMO-BRIDGE-3",
    ),
    "pdq": (
        PDQ,
        "d8f8f0cee0f4a84f0637022a078f67f0b36e2ed596621e1d33e6339c4e9c9b22",
        "DEMO-BRIDGE-4",
    ),
}
# Reference IDs the test list (`bridge_list`) gives, and the demo list's, by hash name.
OWN_REFS = {name: f"BRIDGE-{name}" for name in BRIDGE}
DEMO_REFS = {name: ref for name, (_, _, ref) in BRIDGE.items()}


def bridge_list(running: Running, name: str = "bridge") -> None:
    """A list holding the bridge original's digests and (reference) PDQ, one ID each."""
    with running.lists() as lists:
        lists.create_list(name)
        lists.apply_changes(
            name,
            "b1",
            [
                Change(make_hash(alg, bytes.fromhex(h)), OWN_REFS[name])
                for name, (alg, h, _) in BRIDGE.items()
            ],
        )


@pytest.fixture
def mixed(shared_pdq: Path, tmp_path: Path) -> Path:
    """A folder of mixed files; see EXPECTED."""
    images = shared_pdq / "images"
    root = tmp_path / "uploads"
    (root / "sub").mkdir(parents=True)
    shutil.copy(images / "bridge-mods" / "aaa-orig.jpg", root / "orig.jpg")
    shutil.copy(images / "bridge-mods" / "blur-a-lot.jpg", root / "sub" / "blurred.jpg")
    shutil.copy(images / "labelme-subset" / "q0003.jpg", root / "sub" / "flat.jpg")
    shutil.copy(images / "misc" / "wee.jpg", root / "wee.jpg")
    (root / "notes.txt").write_text("not an image\n")
    os.mkfifo(root / "pipe")
    (root / "gone.jpg").symlink_to(root / "deleted-before-the-scan.jpg")
    (root / "sub" / "loop").symlink_to(root)  # a symlink loop: walked once
    return root


# path relative to the folder -> (verdict, names of the matching hashes, reason prefix)
EXPECTED: dict[str, tuple[str, set[str], str | None]] = {
    "gone.jpg": ("SKIPPED", set(), "No such file"),
    "notes.txt": ("NO_MATCH", set(), "not an image"),
    "orig.jpg": ("MATCH", set(BRIDGE), None),
    "pipe": ("SKIPPED", set(), "not a regular file"),
    "wee.jpg": ("NO_MATCH", set(), None),
    "sub/blurred.jpg": ("MATCH", {"pdq"}, None),
    "sub/flat.jpg": ("NO_MATCH", set(), "low PDQ quality 3 < 50"),
}


def check_records(
    records: list[dict[str, object]], root: Path, list_name: str, refs_by_name: dict[str, str]
) -> None:
    got = {str(Path(str(r["path"])).relative_to(root)): r for r in records}
    assert sorted(got) == sorted(EXPECTED), got.keys()
    for rel, (verdict, refs, reason) in EXPECTED.items():
        record = got[rel]
        assert record["verdict"] == verdict, (rel, record)
        references = record["references"]
        assert isinstance(references, list)
        assert {r["reference_id"] for r in references} == {refs_by_name[n] for n in refs}, (
            rel,
            record,
        )
        assert all(r["list"] == list_name for r in references)
        if reason is None:
            assert not record["reason"], (rel, record)
        else:
            assert str(record["reason"]).startswith(reason), (rel, record)


def read_report(path: Path) -> list[dict[str, object]]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        pairs = [p.split(":", 1) for p in row["references"].split(";") if p]
        row["references"] = [{"list": a, "reference_id": b} for a, b in pairs]  # type: ignore[assignment]
    return rows  # type: ignore[return-value]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_scan_of_a_mixed_folder_reports_every_file(
    running: Running, mixed: Path, tmp_path: Path, suffix: str
) -> None:
    bridge_list(running)
    report_path = tmp_path / f"report{suffix}"
    report = open_report(report_path)
    with running.matcher() as client:
        summary = scan([mixed], client, ScanOptions(workers=0), on_result=report.write)
    report.close()
    check_records(read_report(report_path), mixed, "bridge", OWN_REFS)
    assert (summary.files, summary.matched, summary.skipped, summary.errors) == (7, 2, 2, 0)
    assert summary.exit_code == 1


def test_scan_exit_codes_follow_virus_scanners(running: Running, mixed: Path) -> None:
    bridge_list(running)
    with running.matcher() as client:
        clean = scan([mixed / "wee.jpg", mixed / "notes.txt"], client, ScanOptions(workers=0))
        unchecked = scan([mixed / "wee.jpg", mixed / "pipe"], client, ScanOptions(workers=0))
        both = scan([mixed / "orig.jpg", mixed / "pipe"], client, ScanOptions(workers=0))
        missing = scan([mixed / "no-such-file"], client, ScanOptions(workers=0))
    assert clean.exit_code == 0
    assert unchecked.exit_code == 2  # a file could not be checked: never "clean"
    assert both.exit_code == 1  # a match is never hidden behind an error
    assert (missing.exit_code, missing.skipped) == (2, 1)


def test_worker_processes_give_the_same_results(running: Running, mixed: Path) -> None:
    bridge_list(running)
    results: dict[str, list[FileResult]] = {"inline": [], "pool": []}
    with running.matcher() as client:
        for key, workers in (("inline", 0), ("pool", 2)):
            scan([mixed], client, ScanOptions(workers=workers), on_result=results[key].append)
    assert results["inline"] == results["pool"]
    assert len(results["pool"]) == len(EXPECTED)


def test_every_bridge_edit_matches(running: Running, shared_pdq: Path) -> None:
    bridge_list(running)
    folder = shared_pdq / "images" / "bridge-mods"
    got: list[FileResult] = []
    with running.matcher() as client:
        summary = scan([folder], client, ScanOptions(workers=0), on_result=got.append)
    assert len(got) == len(list(folder.iterdir())) >= 12
    assert all(r.verdict is Verdict.MATCH for r in got), [r for r in got if not r.matched]
    assert summary.exit_code == 1


@pytest.mark.parametrize("dihedral", [True, False])
def test_dihedral_variants_match_rotated_copies(
    running: Running, shared_pdq: Path, dihedral: bool
) -> None:
    bridge_list(running)
    got: list[FileResult] = []
    with running.matcher() as client:
        scan(
            [shared_pdq / "images" / "dihedral"],
            client,
            ScanOptions(workers=0, dihedral=dihedral),
            on_result=got.append,
        )
    verdicts = {Path(r.path).name: r.verdict for r in got}
    assert len(verdicts) == 8
    assert verdicts.pop("bridge-1-original.jpg") is Verdict.MATCH
    expected = Verdict.MATCH if dihedral else Verdict.NO_MATCH
    assert set(verdicts.values()) == {expected}, verdicts


def test_server_sees_opaque_item_ids_not_paths(running: Running, mixed: Path) -> None:
    bridge_list(running)
    seen: list[str] = []
    with running.matcher() as client:
        original = client.match_batch

        def spy(items, **kwargs):  # type: ignore[no-untyped-def]
            items = list(items)
            seen.extend(item_id for item_id, _ in items)
            return original(items, **kwargs)

        client.match_batch = spy  # type: ignore[method-assign]
        scan([mixed], client, ScanOptions(workers=0, batch_size=2))
    assert seen and all(i.isdigit() for i in seen), seen


def test_a_failing_server_stops_the_scan_with_every_file_reported(
    running: Running, mixed: Path
) -> None:
    got: list[FileResult] = []
    with running.matcher("hotline-a") as client:  # wrong role: no batch can succeed
        summary = scan([mixed], client, ScanOptions(workers=0, batch_size=1), on_result=got.append)
    assert len(got) == len(EXPECTED)
    assert summary.aborted and "PERMISSION_DENIED" in summary.aborted
    assert {r.verdict for r in got} == {Verdict.ERROR, Verdict.SKIPPED}
    assert summary.exit_code == 2


def test_walk_survives_loops_dangling_links_and_missing_roots(mixed: Path) -> None:
    found = list(walk([mixed, mixed / "sub", mixed / "missing"]))
    names = [str(Path(f.path).relative_to(mixed)) for f in found]
    assert names == [
        "gone.jpg",
        "notes.txt",
        "orig.jpg",
        "pipe",
        "wee.jpg",
        "sub/blurred.jpg",
        "sub/flat.jpg",
        "missing",  # sub was walked already, through the root
    ]
    assert found[-1].problem


def test_report_stays_valid_utf8_with_undecodable_names(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9.jpg")  # Latin-1 bytes: not UTF-8
    for suffix in (".jsonl", ".csv"):
        path = tmp_path / f"r{suffix}"
        report = open_report(path)
        report.write(FileResult(name, Verdict.MATCH, (Reference("l", "ref;1%", 1),), reason="x"))
        report.close()
        text = path.read_bytes().decode("utf-8")  # never raises
        if suffix == ".jsonl":
            assert json.loads(text)["path"] == name
        else:
            assert "l:ref%3B1%25" in text
    with pytest.raises(ValueError, match=r"\.jsonl or \.csv"):
        open_report(tmp_path / "r.txt")


# --- the command line, against `hashmatch serve --demo` in a subprocess ---


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[dict[str, str]]:
    exe = shutil.which("hashmatch", path=str(BIN))
    if exe is None:
        pytest.skip("the hashmatch server is not installed in this environment")
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [exe, "serve", "--data-dir", str(data), "--listen", "127.0.0.1:0", "--demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("hashmatch serving on "), line
    token = (data / "demo-platform.token").read_text().strip()
    try:
        yield {**os.environ, "HASHMATCH_SERVER": line.split()[-1], "HASHMATCH_TOKEN": token}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def scan_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("hashmatch-client", path=str(BIN))
    if exe is None:
        pytest.skip("hashmatch-client is not installed in this environment")
    return subprocess.run(
        [exe, "scan", *args], capture_output=True, text=True, timeout=300, env=env
    )


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_cli_scan_against_the_demo_list(
    demo_server: dict[str, str], mixed: Path, tmp_path: Path, suffix: str
) -> None:
    report = mixed / f"report{suffix}"  # inside the scanned folder: left out of the scan
    done = scan_cli(demo_server, str(mixed), "--report", str(report), "--workers", "2")
    assert done.returncode == 1, done.stderr
    check_records(read_report(report), mixed, "demo", DEMO_REFS)
    assert "MATCH\t" + str(mixed / "orig.jpg") in done.stdout
    assert "2 MATCH" in done.stderr and "SKIPPED" in done.stderr
    assert "\r" not in done.stderr  # no progress bar when standard error is not a terminal


def test_cli_scan_dihedral_flag(demo_server: dict[str, str], shared_pdq: Path) -> None:
    folder = str(shared_pdq / "images" / "dihedral")
    plain = scan_cli(demo_server, folder, "--workers", "0")
    rotated = scan_cli(demo_server, folder, "--dihedral", "--workers", "0", "--batch-size", "3")
    assert plain.returncode == rotated.returncode == 1
    assert plain.stdout.count("MATCH\t") == 1
    assert rotated.stdout.count("MATCH\t") == 8
    bad = scan_cli(demo_server, folder, "--report", "x.txt")
    assert bad.returncode == 2 and ".jsonl or .csv" in bad.stderr


def test_progress_line_shows_rate_and_eta_only_on_a_terminal() -> None:
    import io

    from hashmatch.client.progress import Progress

    quiet = io.StringIO()  # not a TTY
    bar = Progress(10, 10_000_000, stream=quiet)
    bar.advance(1, 1_000_000)
    bar.close()
    assert quiet.getvalue() == ""
    shown = io.StringIO()
    bar = Progress(10, 10_000_000, stream=shown, enabled=True)
    for _ in range(10):
        bar.advance(1, 1_000_000, matched=1)
    assert shown.getvalue().startswith("\r[")  # drawn in place (cut to the terminal's width)
    line = bar.line()
    assert "10/10 files" in line and "files/s" in line and "MB/s" in line and "ETA" in line
    assert "10 matched" in line
    bar.close()
    assert shown.getvalue().endswith("\r")

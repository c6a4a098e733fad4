"""`hashmatch-client hash`: the rows it prints are a list file that `push` takes, and `scan` of
the same files then matches every one of them. A real server; the CLI in-process."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hashmatch.client import MD5, PDQ, SHA1, SHA256
from hashmatch.client.cli import main
from hashmatch.client.listfile import Row, read_rows
from tests.conftest import Running

pytest.importorskip("pdqhash", reason="the hashmatch-client[pdq] extra is not installed")


class Cli:
    def __init__(self, running: Running, capsys: pytest.CaptureFixture[str]) -> None:
        self.running = running
        self.capsys = capsys

    def __call__(self, tenant: str | None, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        argv = []
        if tenant is not None:
            argv = ["--server", self.running.address, "--token", self.running.tokens[tenant]]
        code = main([*argv, *args])
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def cli(running: Running, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(running, capsys)


@pytest.fixture
def vetted(shared_pdq: Path, tmp_path: Path) -> Path:
    """A hotline's folder: a photo, a phone photo stored turned (EXIF 6), a flat image (no
    PDQ) and a document, one of them in a subfolder."""
    images = shared_pdq / "images"
    root = tmp_path / "vetted"
    (root / "sub").mkdir(parents=True)
    shutil.copy(images / "bridge-mods" / "aaa-orig.jpg", root / "bridge.jpg")
    shutil.copy(images / "exif-rotn" / "exif-rotn-6.jpg", root / "sub" / "phone.jpg")
    shutil.copy(images / "labelme-subset" / "q0003.jpg", root / "flat.jpg")
    (root / "notes.txt").write_text("a document, matched by its digests\n")
    return root


def rows_of(text: str, tmp_path: Path) -> list[Row]:
    path = tmp_path / "list.csv"
    path.write_text(text)
    rows = list(read_rows(path))
    assert all(isinstance(r, Row) for r in rows), rows
    return rows  # type: ignore[return-value]


def test_hash_prints_rows_push_reads(cli: Cli, vetted: Path, tmp_path: Path) -> None:
    code, out, err = cli(None, "hash", str(vetted))
    assert code == 0, err
    rows = rows_of(out, tmp_path)
    by_ref: dict[str, list[int]] = {}
    for row in rows:
        by_ref.setdefault(row.reference_id, []).append(row.algorithm)
    assert by_ref == {
        "bridge.jpg": [MD5, SHA1, SHA256, PDQ],
        "flat.jpg": [MD5, SHA1, SHA256],
        "notes.txt": [MD5, SHA1, SHA256],
        # Upright and as stored.
        "sub/phone.jpg": [MD5, SHA1, SHA256, PDQ, PDQ],
    }
    assert all(r.quality is not None for r in rows if r.algorithm == PDQ)
    assert f"{vetted / 'flat.jpg'}: no PDQ: low PDQ quality 3 < 50" in err


def test_hashed_rows_pushed_make_scan_match(
    cli: Cli, running: Running, vetted: Path, tmp_path: Path
) -> None:
    code, out, _ = cli(None, "hash", str(vetted))
    assert code == 0
    listed = tmp_path / "list.csv"
    listed.write_text(out)
    assert cli("hotline-a", "create-list", "vetted")[0] == 0
    code, _, err = cli("hotline-a", "push", "vetted", str(listed))
    assert code == 0, err

    code, out, err = cli("platform", "scan", "--workers", "1", str(vetted))
    assert code == 1, err
    matched = {line.split("\t")[1]: line.split("\t")[2] for line in out.splitlines()}
    names = ["bridge.jpg", "flat.jpg", "notes.txt", "sub/phone.jpg"]
    assert matched == {str(vetted / n): f"vetted:{n}" for n in names}


def test_phone_photo_rows_match_either_way(
    cli: Cli, running: Running, vetted: Path, tmp_path: Path
) -> None:
    # Only the PDQ rows: the photo must match through each of them alone.
    code, out, _ = cli(None, "hash", str(vetted / "sub" / "phone.jpg"))
    assert code == 0
    pdq_lines = [line for line in out.splitlines() if line.startswith("pdq,")]
    assert len(pdq_lines) == 2
    edited = tmp_path / "edited.jpg"
    shutil.copy(vetted / "sub" / "phone.jpg", edited)
    with edited.open("ab") as fh:
        fh.write(b"\0")  # other digests, same pixels
    assert cli("hotline-a", "create-list", "one")[0] == 0
    listed = tmp_path / "pdq.csv"
    for line in pdq_lines:
        if listed.exists():
            assert cli("hotline-a", "push", "one", str(listed), "--retire")[0] == 0
        listed.write_text(line + "\n")
        cli("hotline-a", "push", "one", str(listed))
        code, out, err = cli("platform", "scan", "--workers", "1", str(edited))
        assert (code, out) == (1, f"MATCH\t{edited}\tone:phone.jpg\n"), (line, err)


def test_reference_id_option_and_repeated_hashes(cli: Cli, vetted: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy-of-bridge.jpg"
    shutil.copy(vetted / "bridge.jpg", copy)
    code, out, err = cli(
        None, "hash", "--reference-id", "IWF-123, A", str(vetted / "bridge.jpg"), str(copy)
    )
    assert code == 0
    rows = rows_of(out, tmp_path)
    assert [r.reference_id for r in rows] == ["IWF-123, A"] * 4
    # A list holds a hash once: the copy's hashes are left out, and said so.
    assert f"{copy}: md5 already given for {vetted / 'bridge.jpg'}: left out" in err


def test_unreadable_file_and_bad_reference_exit_2(cli: Cli, vetted: Path, tmp_path: Path) -> None:
    bad_name = tmp_path / "line\nbreak.jpg"
    shutil.copy(vetted / "bridge.jpg", bad_name)
    code, out, err = cli(
        None, "hash", str(tmp_path / "missing.jpg"), str(bad_name), str(vetted / "notes.txt")
    )
    assert code == 2
    assert [r.reference_id for r in rows_of(out, tmp_path)] == ["notes.txt"] * 3
    assert "missing.jpg" in err
    assert "contains control characters (use --reference-id)" in err


def test_digests_only(cli: Cli, vetted: Path, tmp_path: Path) -> None:
    code, out, _ = cli(None, "hash", "--no-pdq", str(vetted / "bridge.jpg"))
    assert code == 0
    assert out.splitlines()[0] == "md5,d35c785545392755e7e4164457657269,bridge.jpg"
    assert len(rows_of(out, tmp_path)) == 3

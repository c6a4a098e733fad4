"""A damaged, emptied or unreadable store is refused with one clear line, never served.

Every damaged folder here is made from a real store: truncated, emptied, overwritten with
garbage, or put where a folder should be. `hashmatch serve` (one process or workers) and
the admin commands must exit with a code (not a signal), name the file and say what to do,
and print no traceback.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
import threading
from pathlib import Path

import pytest

from hashmatch.client import MD5
from hashmatch.client.list_client import build_batch
from hashmatch.server.core import parse_changes
from hashmatch.server.store import Role, Store, checks
from helpers import HASHMATCH, random_digest, upsert

# The exit code of a store that cannot be served (README, "Operating it").
UNUSABLE = 3


def seed(data_dir: Path, batches: int = 4, per_batch: int = 2000) -> None:
    """A real store: initialised by `admin init`, then a tenant and a list of entries."""
    done = subprocess.run(
        [HASHMATCH, "admin", "init", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    rng = random.Random(5)
    store = Store(data_dir)
    try:
        store.add_tenant("hotline", Role.HOTLINE)
        store.create_list("iwf", "hotline", pdq_threshold=31, pdq_min_quality=50)
        for b in range(batches):
            changes = [upsert(MD5, random_digest(rng, MD5), f"R{b}-{i}") for i in range(per_batch)]
            raw = build_batch("iwf", f"b{b}", changes).SerializeToString()
            store.apply_changes("iwf", parse_changes(raw, 50), actor="hotline")
    finally:
        store.close()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not Path(HASHMATCH).exists():
        pytest.skip("the hashmatch command is not installed in this environment")
    data_dir = tmp_path_factory.mktemp("template") / "data"
    seed(data_dir)
    # A server has run on it: lock.mdb is there too, as in the field.
    store = Store(data_dir)
    store.close()
    return data_dir


@pytest.fixture
def data_dir(template: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(template, copy)
    return copy


def serve(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Runs `hashmatch serve`; a server that starts serving anyway is stopped and fails."""
    command = [HASHMATCH, "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0"]
    proc = subprocess.Popen(
        [*command, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the server served a damaged store:\n{out}\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def admin(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HASHMATCH, "admin", *args], capture_output=True, text=True, timeout=60)


def assert_refused(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit code UNUSABLE (not a signal), no traceback, one line naming the problem."""
    assert done.returncode == UNUSABLE, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert "hashmatch serving on" not in done.stdout
    lines = [line for line in done.stderr.splitlines() if line.startswith("hashmatch: ")]
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def data_file(data_dir: Path) -> Path:
    return data_dir / "store" / "data.mdb"


def test_a_healthy_copy_serves(data_dir: Path) -> None:
    proc = subprocess.Popen(
        [HASHMATCH, "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().startswith("hashmatch serving on ")
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_truncated_store_is_refused_not_a_sigbus(data_dir: Path, workers: str) -> None:
    path = data_file(data_dir)
    os.truncate(path, path.stat().st_size // 2)
    line = assert_refused(serve(data_dir, "--workers", workers), str(path), "truncated")
    assert "backup" in line


def test_a_store_cut_shorter_than_its_meta_pages_is_refused(data_dir: Path) -> None:
    path = data_file(data_dir)
    os.truncate(path, 5000)
    assert_refused(serve(data_dir), str(path))


def test_an_emptied_store_is_refused_not_served_empty(data_dir: Path) -> None:
    path = data_file(data_dir)
    os.truncate(path, 0)
    assert_refused(serve(data_dir), str(path), "empty")
    # Nothing was written into it on the way.
    assert path.stat().st_size == 0


def test_an_emptied_store_without_its_lock_file_is_still_refused(data_dir: Path) -> None:
    # The FORMAT marker says a store was created here.
    (data_dir / "store" / "lock.mdb").unlink()
    os.truncate(data_file(data_dir), 0)
    assert_refused(serve(data_dir), str(data_file(data_dir)), "empty")


def test_a_deleted_data_file_is_refused(data_dir: Path) -> None:
    data_file(data_dir).unlink()
    assert_refused(serve(data_dir), str(data_file(data_dir)), "missing")
    assert not data_file(data_dir).exists()


def test_garbage_meta_pages_are_refused(data_dir: Path) -> None:
    path = data_file(data_dir)
    with path.open("r+b") as f:
        f.write(random.Random(1).randbytes(8192))
    assert_refused(serve(data_dir), str(path), "not an LMDB")


def test_garbage_inside_is_refused_without_a_traceback(data_dir: Path) -> None:
    path = data_file(data_dir)
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(3 * 4096)
        f.write(random.Random(2).randbytes(size - 3 * 4096))
    assert_refused(serve(data_dir), str(path), "damaged")


def garble_all_but_roots(path: Path) -> None:
    """Overwrites every page but the meta pages and the two tree roots they name: the
    file passes a look at its meta pages, and LMDB meets the garbage on its first read."""
    raw = bytearray(path.read_bytes())
    page = struct.unpack_from("<I", raw, 40)[0]  # the page size, in meta page 0
    # The current meta page has the higher transaction id (+144); the free and main
    # trees' roots are at +80 and +128.
    current = max((0, page), key=lambda at: struct.unpack_from("<Q", raw, at + 144)[0])
    keep = {struct.unpack_from("<Q", raw, current + at)[0] for at in (80, 128)}
    rng = random.Random(9)
    for n in range(2, len(raw) // page):
        if n not in keep:
            raw[n * page : (n + 1) * page] = rng.randbytes(page)
    path.write_bytes(raw)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_garbage_lmdb_meets_later_is_refused_without_a_traceback(
    data_dir: Path, workers: str
) -> None:
    path = data_file(data_dir)
    garble_all_but_roots(path)
    assert_refused(serve(data_dir, "--workers", workers), str(path), "damaged")
    checked = admin("check", "--data-dir", str(data_dir))
    assert checked.returncode == 1 and "Traceback" not in checked.stderr, checked.stderr
    assert f"hashmatch: {path} is damaged" in checked.stderr


def test_a_file_where_the_folder_should_be_is_refused(tmp_path: Path) -> None:
    where = tmp_path / "data"
    where.write_text("not a folder")
    assert_refused(serve(where), str(where), "not a folder")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "store").write_text("not a folder")
    assert_refused(serve(tmp_path / "other"), str(tmp_path / "other" / "store"))


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root reads any folder whatever its permissions; covered by a file in its place",
)
def test_an_unreadable_folder_is_refused(data_dir: Path) -> None:
    folder = data_dir / "store"
    folder.chmod(0)
    try:
        assert_refused(serve(data_dir), str(folder), "permission")
    finally:
        folder.chmod(0o755)


def test_admin_commands_refuse_a_damaged_store(data_dir: Path) -> None:
    path = data_file(data_dir)
    os.truncate(path, path.stat().st_size // 2)
    for args in (
        ["list-tenants"],
        ["add-tenant", "x", "--role", "platform", "--create"],
        ["init"],
        ["backup", str(data_dir.parent / "copy")],
    ):
        assert_refused(admin(*args, "--data-dir", str(data_dir)), str(path))
    checked = admin("check", "--data-dir", str(data_dir))
    assert checked.returncode == 1 and "Traceback" not in checked.stderr
    assert str(path) in checked.stdout + checked.stderr


def test_a_busy_store_is_never_taken_for_a_damaged_one(tmp_path: Path) -> None:
    """The meta pages are read while another writer commits, over and over."""
    store = Store(tmp_path)
    store.create_list("iwf", "hotline", pdq_threshold=31, pdq_min_quality=50)
    stop = threading.Event()
    commits = [0]

    def write() -> None:
        rng = random.Random(3)
        while not stop.is_set():
            b = commits[0]
            changes = [upsert(MD5, random_digest(rng, MD5), f"R{b}-{i}") for i in range(200)]
            raw = build_batch("iwf", f"b{b}", changes).SerializeToString()
            store.apply_changes("iwf", parse_changes(raw, 50), actor="hotline")
            commits[0] = b + 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        inspected = 0
        while inspected < 300 or commits[0] < 30:
            assert checks.inspect(tmp_path) is checks.State.PRESENT
            inspected += 1
    finally:
        stop.set()
        writer.join()
        store.close()

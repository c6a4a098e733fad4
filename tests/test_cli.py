"""The operator's and the client's command lines, end to end in subprocesses."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest

from hashmatch.client import MD5
from hashmatch.client.digest import ListDigest
from hashmatch.client.list_client import Change, build_batch
from hashmatch.server.core import parse_changes
from hashmatch.server.store import Role, Store
from helpers import eventually, random_digest, upsert

BIN = Path(sys.executable).parent
BRIDGE_MD5 = "d35c785545392755e7e4164457657269"
BRIDGE_PDQ = "d8f8f0cee0f4a84f0637022a078f67f0b36e2ed596621e1d33e6339c4e9c9b22"


def tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN))
    if path is None:
        pytest.skip(f"{name} is not installed in this environment")
    return path


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    proc = subprocess.Popen(
        [
            tool("hashmatch"),
            "serve",
            "--data-dir",
            str(tmp_path),
            "--listen",
            "127.0.0.1:0",
            "--demo",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("hashmatch serving on "), proc.stderr.read() if proc.stderr else line
    try:
        yield line.split()[-1], tmp_path
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        assert proc.returncode == 0


def test_demo_list_matches_through_both_command_lines(server: tuple[str, Path]) -> None:
    address, data_dir = server
    env = {**os.environ, "HASHMATCH_SERVER": address}
    env["HASHMATCH_TOKEN"] = (data_dir / "demo-platform.token").read_text().strip()
    client = tool("hashmatch-client")

    hit = run(client, "match", "--md5", BRIDGE_MD5, env=env)
    assert hit.returncode == 1, hit.stderr
    assert "MATCH" in hit.stdout and "reference_id=DEMO-BRIDGE-1" in hit.stdout
    near = f"{int(BRIDGE_PDQ, 16) ^ 0b111:064x}"
    assert run(client, "match", "--pdq", near, env=env).returncode == 1
    miss = run(client, "match", "--md5", "00" * 16, env=env)
    assert (miss.returncode, miss.stdout.strip()) == (0, "NO_MATCH")
    bad = run(client, "match", "--md5", "abc", env=env)
    assert bad.returncode == 2 and "hex" in bad.stderr
    anonymous = {k: v for k, v in env.items() if k != "HASHMATCH_TOKEN"}
    refused = run(client, "match", "--md5", BRIDGE_MD5, env=anonymous)
    assert refused.returncode == 2 and "UNAUTHENTICATED" in refused.stderr
    assert "set HASHMATCH_TOKEN" in refused.stderr


def test_admin_tenant_then_hotline_applies_a_csv(server: tuple[str, Path], tmp_path: Path) -> None:
    address, data_dir = server
    admin = tool("hashmatch")
    added = run(
        admin, "admin", "add-tenant", "iwf", "--role", "hotline", "--data-dir", str(data_dir)
    )
    assert added.returncode == 0, added.stderr
    hotline_token = added.stdout.strip().splitlines()[-1]
    platform = run(
        admin, "admin", "add-tenant", "acme", "--role", "platform", "--data-dir", str(data_dir)
    )
    platform_token = platform.stdout.strip().splitlines()[-1]
    listing = run(admin, "admin", "list-tenants", "--data-dir", str(data_dir))
    assert "iwf\thotline\t1 token(s)" in listing.stdout

    client = tool("hashmatch-client")
    env = {**os.environ, "HASHMATCH_SERVER": address, "HASHMATCH_TOKEN": hotline_token}
    assert run(client, "create-list", "iwf-main", env=env).returncode == 0
    csv_file = tmp_path / "list.csv"
    csv_file.write_text(f"algorithm,hash_hex,reference_id\nmd5,{'ab' * 16},IWF-1\n")
    applied = run(client, "apply", "iwf-main", str(csv_file), "--batch-id", "b1", env=env)
    assert applied.returncode == 0 and "version=1" in applied.stdout, applied.stderr
    again = run(client, "apply", "iwf-main", str(csv_file), "--batch-id", "b1", env=env)
    assert "already applied" in again.stdout

    bad_file = tmp_path / "bad.csv"
    bad_file.write_text(f"md5,{'ab' * 16},OK\nsha1,zz,BAD\nmd5,{'cd' * 16}\n")
    bad = run(client, "apply", "iwf-main", str(bad_file), "--batch-id", "b2", env=env)
    assert bad.returncode == 1
    assert f"{bad_file}:2:" in bad.stderr and f"{bad_file}:3:" in bad.stderr

    env["HASHMATCH_TOKEN"] = platform_token
    assert run(client, "match", "--md5", "ab" * 16, env=env).returncode == 1
    revoked = run(admin, "admin", "revoke-tokens", "acme", "--data-dir", str(data_dir))
    assert "revoked 1 token(s)" in revoked.stdout
    denied = run(client, "match", "--md5", "ab" * 16, env=env)
    assert denied.returncode == 2 and "UNAUTHENTICATED" in denied.stderr
    audit = run(admin, "admin", "audit", "--data-dir", str(data_dir))
    assert '"action": "apply-changes"' in audit.stdout


def test_a_taken_port_fails_loudly(server: tuple[str, Path], tmp_path: Path) -> None:
    address, _ = server
    other = run(
        tool("hashmatch"), "serve", "--data-dir", str(tmp_path / "other"), "--listen", address
    )
    assert other.returncode != 0


def test_push_streams_a_list_file_and_proves_the_digest(
    server: tuple[str, Path], tmp_path: Path
) -> None:
    address, data_dir = server
    added = run(
        tool("hashmatch"),
        "admin",
        "add-tenant",
        "ncmec",
        "--role",
        "hotline",
        "--data-dir",
        str(data_dir),
    )
    env = {**os.environ, "HASHMATCH_SERVER": address}
    env["HASHMATCH_TOKEN"] = added.stdout.strip().splitlines()[-1]
    client = tool("hashmatch-client")
    assert run(client, "create-list", "ncmec", env=env).returncode == 0

    rows = [
        f'{{"algorithm": "sha256", "hash": "{i:064x}", "reference_id": "N-{i}"}}'
        for i in range(1, 2501)
    ]
    rows.append(
        f'{{"algorithm": "pdq", "hash": "{BRIDGE_PDQ}", "reference_id": "N-PDQ", "quality": 100}}'
    )
    good = tmp_path / "list.jsonl"
    good.write_text("\n".join(rows) + "\n")
    pushed = run(client, "push", "ncmec", str(good), "--batch-size", "1000", env=env)
    assert pushed.returncode == 0, pushed.stderr
    assert "in 3 batch(es)" in pushed.stdout and "holds exactly this file" in pushed.stdout
    again = run(client, "push", "ncmec", str(good), "--batch-size", "1000", env=env)
    assert again.returncode == 0 and "resumed after 3" in again.stdout
    local = run(client, "digest", str(good), env=env).stdout.strip()
    assert f"digest={local}" in run(client, "get-list", "ncmec", env=env).stdout

    bad = tmp_path / "bad.csv"
    bad.write_text(f"sha1,{'ab' * 20},OK\npdq,{BRIDGE_PDQ},LOW,101\nmd5,nothex,X\n")
    refused = run(client, "push", "ncmec", str(bad), env=env)
    assert refused.returncode == 1
    assert f"{bad}:2:" in refused.stderr and f"{bad}:3:" in refused.stderr
    assert "nothing was sent" in refused.stderr


def test_trust_commands_for_platforms_and_hotlines(server: tuple[str, Path]) -> None:
    address, data_dir = server
    client = tool("hashmatch-client")
    platform = {**os.environ, "HASHMATCH_SERVER": address}
    platform["HASHMATCH_TOKEN"] = (data_dir / "demo-platform.token").read_text().strip()

    shown = run(client, "subscribe", "--all", env=platform)
    assert shown.returncode == 0 and "available: demo" in shown.stdout
    assert run(client, "allow", "add", "md5", BRIDGE_MD5, env=platform).stdout.strip() == (
        "allow-list holds 1 hash(es)"
    )
    assert run(client, "match", "--md5", BRIDGE_MD5, env=platform).returncode == 0
    assert f"md5,{BRIDGE_MD5}" in run(client, "allow", "show", env=platform).stdout
    run(client, "allow", "remove", "md5", BRIDGE_MD5, env=platform)
    assert run(client, "match", "--md5", BRIDGE_MD5, env=platform).returncode == 1

    def reported() -> bool:
        done = run(
            client,
            "report",
            "demo",
            "DEMO-BRIDGE-1",
            "--reason",
            "benign",
            "--note",
            "test photo",
            env=platform,
        )
        return done.returncode == 0

    eventually(reported, "the match count reached the store")
    hotline_token = (
        run(tool("hashmatch"), "admin", "issue-token", "demo-hotline", "--data-dir", str(data_dir))
        .stdout.strip()
        .splitlines()[-1]
    )
    hotline = {**platform, "HASHMATCH_TOKEN": hotline_token}
    feedback = run(client, "feedback", "demo", env=hotline)
    assert "DEMO-BRIDGE-1\t1 report(s)\tbenign=1" in feedback.stdout
    assert "note: test photo" in feedback.stdout
    assert run(client, "quarantine", "demo", env=hotline).stdout == "nothing quarantined in demo\n"
    assert "released 0" in run(client, "release", "demo", "DEMO-BRIDGE-1", env=hotline).stdout


# -- a typo makes no new store -------------------------------------------------------------


def test_admin_refuses_a_folder_without_a_store(tmp_path: Path) -> None:
    admin = tool("hashmatch")
    typo = tmp_path / "typo"
    added = run(admin, "admin", "add-tenant", "iwf", "--role", "hotline", "--data-dir", str(typo))
    assert added.returncode == 2, added.stderr
    assert added.stdout == "" and "Traceback" not in added.stderr
    assert f"no hashmatch store in {typo}" in added.stderr
    assert "admin init" in added.stderr and "--create" in added.stderr
    assert not typo.exists(), "a refused command must not create the folder"
    listed = run(admin, "admin", "list-tenants", "--data-dir", str(typo))
    assert listed.returncode == 2 and f"no hashmatch store in {typo}" in listed.stderr
    # An existing folder that holds something else is no store either.
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "notes.txt").write_text("hello")
    listed = run(admin, "admin", "list-tenants", "--data-dir", str(tmp_path / "elsewhere"))
    assert listed.returncode == 2 and "no hashmatch store" in listed.stderr
    assert not (tmp_path / "elsewhere" / "store").exists()


def test_admin_init_and_create_make_a_store(tmp_path: Path) -> None:
    admin = tool("hashmatch")
    created = run(admin, "admin", "init", "--data-dir", str(tmp_path / "a"))
    assert created.returncode == 0, created.stderr
    assert f"created an empty store in {tmp_path / 'a'}" in created.stdout
    assert (tmp_path / "a" / "store" / "FORMAT").is_file()
    again = run(admin, "admin", "init", "--data-dir", str(tmp_path / "a"))
    assert again.returncode == 0 and "already holds a store" in again.stdout
    added = run(
        admin, "admin", "add-tenant", "iwf", "--role", "hotline", "--data-dir", str(tmp_path / "a")
    )
    assert added.returncode == 0, added.stderr

    fresh = tmp_path / "b"
    added = run(
        admin,
        "admin",
        "add-tenant",
        "iwf",
        "--role",
        "hotline",
        "--create",
        "--data-dir",
        str(fresh),
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip().splitlines()[-1].startswith("hm_")
    listing = run(admin, "admin", "list-tenants", "--data-dir", str(fresh))
    assert listing.returncode == 0 and listing.stdout.startswith("iwf\thotline\t1 token(s)")
    assert "using data folder" not in listing.stderr


def test_the_default_data_folder_is_said_aloud(tmp_path: Path) -> None:
    admin = tool("hashmatch")
    done = subprocess.run(
        [admin, "admin", "list-tenants"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 2
    assert "using data folder ./data" in done.stderr
    done = subprocess.run(
        [admin, "admin", "init"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0 and "using data folder ./data" in done.stderr
    assert (tmp_path / "data" / "store" / "data.mdb").is_file()


# -- admin check and admin backup ------------------------------------------------------------

BATCH = 500


def batch_changes(n: int) -> list[Change]:
    rng = random.Random(n)
    return [upsert(MD5, random_digest(rng, MD5), f"B{n}-{i}") for i in range(BATCH)]


def digest_upto(version: int) -> str:
    d = ListDigest()
    for n in range(version):
        for c in batch_changes(n):
            d.add(MD5, c.hash.value, c.reference_id or "")
    return d.hex()


def seeded(data_dir: Path, lists: dict[str, int]) -> None:
    """A store with each list holding `lists[name]` batches, through the store's own path."""
    store = Store(data_dir)
    try:
        store.add_tenant("hotline", Role.HOTLINE)
        for name, batches in lists.items():
            store.create_list(name, "hotline", pdq_threshold=31, pdq_min_quality=50)
            for n in range(batches):
                raw = build_batch(name, f"b{n}", batch_changes(n)).SerializeToString()
                store.apply_changes(name, parse_changes(raw, 50), actor="hotline")
    finally:
        store.close()


def raw_db(data_dir: Path, name: str) -> tuple[lmdb.Environment, Any]:
    env = lmdb.open(str(data_dir / "store"), max_dbs=32, map_size=1 << 30)
    return env, env.open_db(name.encode())


def test_admin_check_passes_a_sound_store(tmp_path: Path) -> None:
    seeded(tmp_path, {"iwf": 3, "empty": 0})
    done = run(tool("hashmatch"), "admin", "check", "--data-dir", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert any(line.startswith("ok\tiwf\tversion 3\t1500 entries") for line in lines), lines
    assert any(line.startswith("ok\tempty\tversion 0\t0 entries") for line in lines), lines
    assert f"digest {digest_upto(3)}" in done.stdout


def test_admin_check_names_a_wrong_digest(tmp_path: Path) -> None:
    seeded(tmp_path, {"iwf": 2, "other": 1})
    env, lists = raw_db(tmp_path, "lists")
    with env.begin(write=True) as txn:
        meta = json.loads(txn.get(b"iwf", db=lists))
        meta["digest"] = "00" * 16
        txn.put(b"iwf", json.dumps(meta).encode(), db=lists)
    env.close()
    done = run(tool("hashmatch"), "admin", "check", "--data-dir", str(tmp_path))
    assert done.returncode == 1
    bad = [line for line in done.stdout.splitlines() if line.startswith("BAD\tiwf")]
    assert len(bad) == 1 and "digest" in bad[0] and digest_upto(2) in bad[0], done.stdout
    assert any(line.startswith("ok\tother") for line in done.stdout.splitlines())
    assert "1 of 2 list(s) failed" in done.stderr


def test_admin_check_names_a_gap_and_an_undecodable_change(tmp_path: Path) -> None:
    seeded(tmp_path, {"iwf": 4})
    env, changes = raw_db(tmp_path, "changes")
    with env.begin(write=True) as txn:
        keys = [key for key, _ in txn.cursor(db=changes)]
        assert len(keys) == 4
        txn.delete(keys[1], db=changes)  # version 2
        raw = txn.get(keys[2], db=changes)
        txn.put(keys[2], raw[:40], db=changes)  # version 3, cut short
    env.close()
    done = run(tool("hashmatch"), "admin", "check", "--data-dir", str(tmp_path))
    assert done.returncode == 1
    bad = done.stdout.strip()
    assert bad.startswith("BAD\tiwf"), bad
    assert "version 2 is missing" in bad and "version 3 does not decode" in bad


def test_backup_during_an_upload_is_a_consistent_copy(tmp_path: Path) -> None:
    from conftest import start

    primary = start(tmp_path / "primary")
    stop = threading.Event()
    acked: list[int] = [0]
    errors: list[BaseException] = []

    def upload() -> None:
        try:
            with primary.lists() as hotline:
                n = 0
                while not stop.is_set():
                    hotline.upload_changes(
                        [build_batch("iwf", f"b{k}", batch_changes(k)) for k in range(n, n + 4)]
                    )
                    n += 4
                    acked[0] = n
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    copy = tmp_path / "copy"
    try:
        primary.lists().create_list("iwf")
        writer = threading.Thread(target=upload)
        writer.start()
        eventually(lambda: acked[0] >= 8, "the upload is under way")
        before = acked[0]
        done = run(
            tool("hashmatch"), "admin", "backup", str(copy), "--data-dir", str(tmp_path / "primary")
        )
        after = primary.lists().get_list("iwf").version
        stop.set()
        writer.join()
        assert not errors, errors
        assert done.returncode == 0, done.stderr
        assert f"backed up {tmp_path / 'primary'}" in done.stdout
        assert " MB in " in done.stdout and str(copy / "store") in done.stdout
    finally:
        stop.set()
        primary.service.stop(grace=0)

    second = start(copy, primary.tokens)
    try:
        info = second.lists().get_list("iwf")
        assert before <= info.version <= after
        assert info.counts["md5"] == BATCH * info.version
        assert info.digest == digest_upto(info.version)
        assert info.version > 0
    finally:
        second.service.stop(grace=0)
    checked = run(tool("hashmatch"), "admin", "check", "--data-dir", str(copy))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    refused = run(
        tool("hashmatch"), "admin", "backup", str(copy), "--data-dir", str(tmp_path / "primary")
    )
    assert refused.returncode == 2 and "already holds a store" in refused.stderr

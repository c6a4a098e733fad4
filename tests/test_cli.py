"""The operator's and the client's command lines, end to end in subprocesses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import eventually

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
    assert bad.returncode == 2
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
    assert refused.returncode == 2
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
    assert run(client, "quarantine", "demo", env=hotline).stdout == ""
    assert "released 0" in run(client, "release", "demo", "DEMO-BRIDGE-1", env=hotline).stdout

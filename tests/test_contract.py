"""The committed Python stubs and descriptor set are exactly what the .proto files
generate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[1]


def test_generated_stubs_are_current(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the dev extra) regenerates stubs")
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "gen_protos.py"),
            "--out",
            str(tmp_path),
            "--protoset",
            str(tmp_path / "hashmatch-v1.protoset"),
        ],
        check=True,
    )
    committed = ROOT / "clients" / "hashmatch" / "v1"
    fresh = tmp_path / "hashmatch" / "v1"
    names = sorted(p.name for p in fresh.iterdir() if p.is_file())
    assert names == sorted(p.name for p in committed.iterdir() if p.suffix in (".py", ".pyi"))
    stale = [n for n in names if (fresh / n).read_bytes() != (committed / n).read_bytes()]
    assert not stale, f"stale stubs, run scripts/gen_protos.py: {stale}"
    assert protoset_files(tmp_path / "hashmatch-v1.protoset") == protoset_files(
        ROOT / "proto" / "hashmatch-v1.protoset"
    ), "stale proto/hashmatch-v1.protoset, run scripts/gen_protos.py"


def protoset_files(path: Path) -> dict[str, bytes]:
    """The descriptor set's files; imported files outside hashmatch/ without their comments,
    which change with the installed googleapis-common-protos, not with the contract."""
    files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file
    for f in files:
        if not f.name.startswith("hashmatch/"):
            f.ClearField("source_code_info")
    return {f.name: f.SerializeToString(deterministic=True) for f in files}

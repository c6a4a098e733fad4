"""Regenerates the Python stubs in clients/hashmatch/v1 from proto/hashmatch/v1, and the
descriptor set proto/hashmatch-v1.protoset (every file with its imports and comments, for
`grpcurl -protoset`).

Run with the pinned grpcio-tools (the `dev` extra): `python scripts/gen_protos.py`.
`--out DIR` and `--protoset FILE` write elsewhere; tests use them to prove the committed
files are current.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
DEFAULT_OUT = ROOT / "clients"
DEFAULT_PROTOSET = PROTO_ROOT / "hashmatch-v1.protoset"


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "hashmatch" / "v1").glob("*.proto"))


def generate(out: Path, protoset: Path = DEFAULT_PROTOSET) -> None:
    out.mkdir(parents=True, exist_ok=True)
    protoset.parent.mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"
    # google/rpc/*.proto ship inside googleapis-common-protos' package folder.
    import google.rpc

    googleapis = Path(google.rpc.__path__[0]).parent.parent
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"-I{googleapis}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        f"--descriptor_set_out={protoset}",
        "--include_imports",
        "--include_source_info",
        *(str(p.relative_to(PROTO_ROOT)) for p in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--protoset", type=Path, default=DEFAULT_PROTOSET)
    ns = parser.parse_args()
    generate(ns.out, ns.protoset)
    print(
        f"generated stubs for {len(proto_files())} files under {ns.out}, "
        f"descriptor set {ns.protoset}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()

"""The operator's command line: `hashmatch serve` and `hashmatch admin ...`.

Admin commands act on the data folder directly (LMDB is safe to share with running
servers), never over the network.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

from hashmatch.server import __version__
from hashmatch.server.app import serve
from hashmatch.server.settings import Settings
from hashmatch.server.store import Role, Store, StoreError

DEFAULT_DATA_DIR = Path("data")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.run(args) or 0)
    except StoreError as exc:
        print(f"hashmatch: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hashmatch", description="hashmatch service")
    parser.add_argument("--version", action="version", version=f"hashmatch {__version__}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="serve matching and list sync over gRPC")
    _data_dir(p)
    p.add_argument("--listen", default="127.0.0.1:50051", help="HOST:PORT (port 0: any free)")
    p.add_argument("--workers", type=int, default=1, help="serving processes on one port")
    p.add_argument(
        "--demo", action="store_true", help="create the benign demo list on a fresh data folder"
    )
    p.set_defaults(run=_serve)

    admin = sub.add_parser("admin", help="manage tenants on the local data folder").add_subparsers(
        required=True, metavar="ACTION"
    )
    p = admin.add_parser("add-tenant", help="create a tenant; prints its token as the last line")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=[r.value for r in Role])
    _data_dir(p)
    p.set_defaults(run=_add_tenant)

    p = admin.add_parser("issue-token", help="issue another token for a tenant (rotation)")
    p.add_argument("name")
    _data_dir(p)
    p.set_defaults(run=_issue_token)

    p = admin.add_parser("revoke-tokens", help="revoke every token of a tenant")
    p.add_argument("name")
    _data_dir(p)
    p.set_defaults(run=_revoke)

    p = admin.add_parser("list-tenants", help="list tenants and their live token counts")
    _data_dir(p)
    p.set_defaults(run=_list_tenants)

    p = admin.add_parser("audit", help="print the newest audit records as JSON lines")
    p.add_argument("--limit", type=int, default=100)
    _data_dir(p)
    p.set_defaults(run=_audit)
    return parser


def _data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="LMDB data folder")


def _serve(args: argparse.Namespace) -> int:
    if args.workers != 1:
        print("hashmatch: --workers other than 1 is not supported yet", file=sys.stderr)
        return 2
    try:
        serve(Settings(data_dir=args.data_dir, listen=args.listen, demo=args.demo))
    except RuntimeError as exc:  # grpcio reports a port it cannot bind this way
        print(f"hashmatch: cannot serve on {args.listen}: {exc}", file=sys.stderr)
        return 1
    return 0


def _with_store(args: argparse.Namespace) -> Store:
    return Store(args.data_dir)


def _add_tenant(args: argparse.Namespace) -> int:
    store = _with_store(args)
    try:
        token = store.add_tenant(args.name, Role(args.role))
    finally:
        store.close()
    print(f"created {args.role} tenant {args.name}; its token (shown once):")
    print(token)
    return 0


def _issue_token(args: argparse.Namespace) -> int:
    store = _with_store(args)
    try:
        token = store.issue_token(args.name)
    finally:
        store.close()
    print(f"new token for {args.name} (shown once):")
    print(token)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    store = _with_store(args)
    try:
        count = store.revoke_tokens(args.name)
    finally:
        store.close()
    print(f"revoked {count} token(s) of {args.name}")
    return 0


def _list_tenants(args: argparse.Namespace) -> int:
    store = _with_store(args)
    try:
        rows = store.tenants()
    finally:
        store.close()
    for tenant, live in rows:
        created = datetime.fromtimestamp(tenant.created_at, UTC).isoformat(timespec="seconds")
        print(f"{tenant.name}\t{tenant.role.value}\t{live} token(s)\tcreated {created}")
    return 0


def _audit(args: argparse.Namespace) -> int:
    store = _with_store(args)
    try:
        records = store.audit_log(args.limit)
    finally:
        store.close()
    for record in records:
        print(json.dumps(record))
    return 0

"""The operator's command line: `hashmatch serve` and `hashmatch admin ...`.

Admin commands act on the data folder directly (LMDB is safe to share with running
servers), never over the network.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from hashmatch.server import __version__, logs
from hashmatch.server.bench.signoff import add_parser as add_bench_parser
from hashmatch.server.main import serve
from hashmatch.server.settings import Settings, SettingsError
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

    p = sub.add_parser(
        "serve",
        help="serve matching and list sync over gRPC",
        description="Flags override HASHMATCH_* environment variables, which override the "
        "TOML file given with --config, which overrides the defaults.",
    )
    _serve_flags(p)
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

    add_bench_parser(sub)  # `hashmatch bench signoff`: see hashmatch.server.bench
    return parser


def _data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="LMDB data folder")


def _serve_flags(p: argparse.ArgumentParser) -> None:
    """Every flag defaults to None: only flags actually given override the other sources."""
    p.add_argument("--config", type=Path, help="TOML settings file")
    p.add_argument("--data-dir", type=Path, help="LMDB data folder (default ./data)")
    p.add_argument("--listen", help="HOST:PORT (port 0: any free; default 127.0.0.1:50051)")
    p.add_argument("--workers", type=int, help="serving processes on one port (default 1)")
    p.add_argument("--threads", type=int, help="gRPC handler threads per process")
    p.add_argument("--max-concurrent-rpcs", type=int, help="calls per process before refusing")
    p.add_argument("--metrics-listen", help="HOST:PORT for Prometheus /metrics (default off)")
    p.add_argument("--tls-cert", type=Path, help="PEM certificate chain of the server")
    p.add_argument("--tls-key", type=Path, help="PEM private key of the server")
    p.add_argument("--tls-client-ca", type=Path, help="PEM CA: require client certificates")
    p.add_argument("--log-format", choices=["auto", "json", "text"])
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR")
    p.add_argument("--grace", type=float, help="seconds in-flight calls get on shutdown")
    p.add_argument("--follow", help="HOST:PORT of a primary to follow as a read replica")
    p.add_argument("--token", dest="follow_token", help="replica token for --follow")
    p.add_argument(
        "--demo",
        action="store_const",
        const=True,
        help="create the benign demo list on a fresh data folder",
    )


SERVE_FLAGS = (
    "data_dir",
    "listen",
    "workers",
    "threads",
    "max_concurrent_rpcs",
    "metrics_listen",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "log_format",
    "log_level",
    "grace",
    "follow",
    "follow_token",
    "demo",
)


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = Settings.load(
            {k: getattr(args, k) for k in SERVE_FLAGS}, config_file=args.config
        )
    except SettingsError as exc:
        print(f"hashmatch: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_format, settings.log_level)
    try:
        serve(settings)
    except SettingsError as exc:
        print(f"hashmatch: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # grpcio reports a port it cannot bind this way
        print(f"hashmatch: cannot serve on {settings.listen}: {exc}", file=sys.stderr)
        return 1
    return 0


@contextmanager
def _opened(args: argparse.Namespace) -> Iterator[Store]:
    store = Store(args.data_dir)
    try:
        yield store
    finally:
        store.close()


def _add_tenant(args: argparse.Namespace) -> int:
    with _opened(args) as store:
        token = store.add_tenant(args.name, Role(args.role))
    print(f"created {args.role} tenant {args.name}; its token (shown once):")
    print(token)
    return 0


def _issue_token(args: argparse.Namespace) -> int:
    with _opened(args) as store:
        token = store.issue_token(args.name)
    print(f"new token for {args.name} (shown once):")
    print(token)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    with _opened(args) as store:
        count = store.revoke_tokens(args.name)
    print(f"revoked {count} token(s) of {args.name}")
    return 0


def _list_tenants(args: argparse.Namespace) -> int:
    with _opened(args) as store:
        rows = store.tenants()
    for tenant, live in rows:
        created = datetime.fromtimestamp(tenant.created_at, UTC).isoformat(timespec="seconds")
        print(f"{tenant.name}\t{tenant.role.value}\t{live} token(s)\tcreated {created}")
    return 0


def _audit(args: argparse.Namespace) -> int:
    with _opened(args) as store:
        records = store.audit_log(args.limit)
    for record in records:
        print(json.dumps(record))
    return 0

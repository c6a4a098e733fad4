"""`hashmatch serve`: settings from flags, environment and a TOML file, then main.serve."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hashmatch.server import logs
from hashmatch.server.main import serve
from hashmatch.server.rpc import tls
from hashmatch.server.settings import Settings, SettingsError

DEFAULT_DATA_DIR = Path("data")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="serve matching and list sync over gRPC",
        description="Flags override HASHMATCH_* environment variables, which override the "
        "TOML file given with --config, which overrides the defaults.",
    )
    _serve_flags(p)
    p.set_defaults(run=_serve)


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
    p.add_argument("--follow-ca", type=Path, help="PEM CA: follow the primary over TLS")
    p.add_argument("--follow-cert", type=Path, help="PEM client certificate for an mTLS primary")
    p.add_argument("--follow-key", type=Path, help="PEM private key of --follow-cert")
    p.add_argument(
        "--max-lag",
        type=float,
        help="replica: report NOT_SERVING when not proven current for this many seconds",
    )
    p.add_argument(
        "--no-segments",
        dest="segments",
        action="store_const",
        const=False,
        help="rebuild every list from the store at start; write no segment files",
    )
    p.add_argument(
        "--segment-quiet",
        type=float,
        help="seconds a changed list stays unchanged before its segment file is rewritten",
    )
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
    "follow_ca",
    "follow_cert",
    "follow_key",
    "max_lag",
    "segments",
    "segment_quiet",
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
    if args.data_dir is None and settings.data_dir == DEFAULT_DATA_DIR:
        print(f"hashmatch: using data folder ./{DEFAULT_DATA_DIR}", file=sys.stderr, flush=True)
    try:
        tls.check(settings)
    except SettingsError as exc:
        print(f"hashmatch: {exc}", file=sys.stderr)
        return 2
    if settings.tls:
        # Beside the banner on stdout ("hashmatch serving on HOST:PORT", which scripts read
        # the address from): clients need --ca-file, and with mTLS --cert-file/--key-file.
        print(f"hashmatch: serving with {tls.describe(settings)}", file=sys.stderr, flush=True)
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

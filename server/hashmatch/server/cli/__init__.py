"""The operator's command line: `hashmatch serve` and `hashmatch admin ...`.

Admin commands act on the data folder directly (LMDB is safe to share with running
servers), never over the network.

Exit codes (README, "Operating it"): 0 done; 1 refused or failed (a tenant that exists, a
port in use, `admin check` found a problem); 2 a usage mistake (bad flags or settings, a
folder that holds no store); 3 the store cannot be used (damaged, emptied, unreadable).
"""

from __future__ import annotations

import os

# grpc core writes a line to stderr for every failed TLS handshake or dropped connection,
# which any client can provoke; the service logs what matters itself. Set before grpc is
# first imported (the imports below), and an operator's own setting wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import argparse
import logging
import sys

from hashmatch.server import __version__
from hashmatch.server.bench.signoff import add_parser as add_bench_parser
from hashmatch.server.cli import admin, serve
from hashmatch.server.store import StoreError
from hashmatch.server.store.backup import BackupRefused
from hashmatch.server.store.checks import NoStore, StoreUnusable

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNUSABLE = 3


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.run(args) or 0)
    except (NoStore, BackupRefused) as exc:
        return _say(exc, EXIT_USAGE)
    except StoreUnusable as exc:
        return _say(exc, EXIT_UNUSABLE)
    except StoreError as exc:
        print(f"hashmatch: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _say(exc: Exception, code: int) -> int:
    print(f"hashmatch: {exc}", file=sys.stderr, flush=True)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hashmatch", description="hashmatch service")
    parser.add_argument("--version", action="version", version=f"hashmatch {__version__}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    serve.add_parser(sub)
    admin.add_parser(sub)
    add_bench_parser(sub)  # `hashmatch bench signoff`: see hashmatch.server.bench
    return parser

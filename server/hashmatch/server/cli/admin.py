"""`hashmatch admin ...`: tenants, checks, backups and promotion, on the data folder directly.

A folder that holds no store is refused (a mistyped --data-dir must not quietly become a
new store no server reads) unless the command is told to create one: `admin init`, or
`add-tenant --create`. The default folder, ./data, is said aloud when --data-dir is not
given.

Only `promote --peer` reaches the network, to read other replicas' list versions with a
replica token (ListLists); it changes nothing there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hashmatch.client import ListClient
from hashmatch.client.connection import Connection, RetryPolicy, TlsConfig
from hashmatch.client.errors import HashmatchError
from hashmatch.server.store import Role, Store, checks, replica_state
from hashmatch.server.store.backup import backup
from hashmatch.server.store.checks import StoreDamaged
from hashmatch.server.store.env import audit_nanos

DEFAULT_DATA_DIR = Path("data")


def add_parser(sub: Any) -> None:
    admin = sub.add_parser(
        "admin", help="manage tenants, check and back up the local data folder"
    ).add_subparsers(required=True, metavar="ACTION")

    p = admin.add_parser("init", help="create an empty store in the data folder")
    _data_dir(p)
    p.set_defaults(run=_init)

    p = admin.add_parser("add-tenant", help="create a tenant; prints its token as the last line")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=[r.value for r in Role])
    p.add_argument(
        "--create", action="store_true", help="create the store when the folder holds none"
    )
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

    p = admin.add_parser(
        "audit",
        help="print the newest audit records as JSON lines",
        description="The newest audit records that pass the filters, oldest first, as JSON "
        "lines; `at` is ISO-8601 UTC (e.g. 2026-11-30T03:14:00.123Z).",
    )
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--list", metavar="NAME", help="only records of this list")
    p.add_argument("--since", metavar="ISO", help="only records at or after this time")
    p.add_argument("--until", metavar="ISO", help="only records at or before this time")
    p.add_argument(
        "--action",
        action="append",
        default=[],
        metavar="ACTION",
        help="only this action (e.g. apply-changes); repeatable",
    )
    _data_dir(p)
    p.set_defaults(run=_audit)

    p = admin.add_parser(
        "check",
        help="recompute every list's digest and walk its change log; exit 1 on a problem",
    )
    _data_dir(p)
    p.set_defaults(run=_check)

    p = admin.add_parser(
        "backup",
        help="copy the store, consistent and compacted, into DEST/store (also while serving)",
    )
    p.add_argument("dest", type=Path, metavar="DEST", help="folder to copy into (DEST/store)")
    _data_dir(p)
    p.set_defaults(run=_backup)

    p = admin.add_parser(
        "promote",
        help="make a stopped replica's data folder a primary's (refused when behind)",
        description="Refuses while a server runs on the folder, and when any list is "
        "unverified, behind the primary's version this replica heard of, or behind (or "
        "different from) a peer replica's copy given with --peer. Peers are asked over the "
        "network with a replica token (--token or HASHMATCH_TOKEN).",
    )
    p.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="another replica of the same primary to compare with; repeatable",
    )
    p.add_argument("--token", help="replica token for the peers (default $HASHMATCH_TOKEN)")
    p.add_argument("--peer-ca", type=Path, help="PEM CA when the peers serve TLS")
    _data_dir(p)
    p.set_defaults(run=_promote)

    p = admin.add_parser(
        "demote",
        help="mark a former primary's folder as a replica of the new primary",
        description="`hashmatch serve` then refuses the folder without --follow, so a "
        "returning old primary cannot serve as a second primary.",
    )
    p.add_argument("primary", metavar="HOST:PORT", help="the new primary")
    _data_dir(p)
    p.set_defaults(run=_demote)


def _data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, help="data folder (default ./data)")


def data_dir(args: argparse.Namespace) -> Path:
    if args.data_dir is None:
        print(f"hashmatch: using data folder ./{DEFAULT_DATA_DIR}", file=sys.stderr, flush=True)
        return DEFAULT_DATA_DIR
    return Path(args.data_dir)


@contextmanager
def opened(path: Path, *, create: bool = False) -> Iterator[Store]:
    """The store in `path`, checked before LMDB maps it (NoStore, StoreDamaged)."""
    checks.require(path, create=create)
    with checks.damage_named(path, opening=True):
        store = Store(path)
    try:
        checks.mark_created(path)
        with checks.damage_named(path):
            yield store
    finally:
        store.close()


def _init(args: argparse.Namespace) -> int:
    path = data_dir(args)
    state = checks.require(path, create=True)
    with opened(path, create=True):
        pass
    if state is checks.State.ABSENT:
        print(f"created an empty store in {path}")
    else:
        print(f"{path} already holds a store; nothing changed")
    return 0


def _add_tenant(args: argparse.Namespace) -> int:
    with opened(data_dir(args), create=args.create) as store:
        token = store.add_tenant(args.name, Role(args.role))
    print(f"created {args.role} tenant {args.name}; its token (shown once):")
    print(token)
    return 0


def _issue_token(args: argparse.Namespace) -> int:
    with opened(data_dir(args)) as store:
        token = store.issue_token(args.name)
    print(f"new token for {args.name} (shown once):")
    print(token)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    with opened(data_dir(args)) as store:
        count = store.revoke_tokens(args.name)
    print(f"revoked {count} token(s) of {args.name}")
    return 0


def _list_tenants(args: argparse.Namespace) -> int:
    with opened(data_dir(args)) as store:
        rows = store.tenants()
    for tenant, live in rows:
        created = datetime.fromtimestamp(tenant.created_at, UTC).isoformat(timespec="seconds")
        print(f"{tenant.name}\t{tenant.role.value}\t{live} token(s)\tcreated {created}")
    return 0


def _audit(args: argparse.Namespace) -> int:
    try:
        since, until = _nanos(args.since, "--since"), _nanos(args.until, "--until")
    except ValueError as exc:
        print(f"hashmatch: {exc}", file=sys.stderr)
        return 2
    with opened(data_dir(args)) as store:
        records = store.audit_log(
            args.limit, list_name=args.list, since_ns=since, until_ns=until, actions=args.action
        )
    for record in records:
        print(json.dumps({**record, "at": _iso_ms(audit_nanos(record))}))
    return 0


def _nanos(text: str | None, option: str) -> int | None:
    """An ISO-8601 time ("Z" allowed; UTC without a zone) in nanoseconds since the epoch."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{option} must be an ISO-8601 time, got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


def _iso_ms(nanos: int) -> str:
    """ISO-8601 UTC to the millisecond, e.g. 2026-11-30T03:14:00.123Z."""
    moment = datetime.fromtimestamp(nanos // 1_000_000 / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _check(args: argparse.Namespace) -> int:
    """One line per list on stdout; exit 0 when every list is sound, 1 otherwise."""
    path = data_dir(args)
    total = failed = 0
    try:
        with opened(path) as store:
            records = checks.walk_databases(store)
            for report in checks.check_store(store):
                total += 1
                head = f"{report.name}\tversion {report.version}\t{report.entries} entries"
                if report.ok:
                    print(f"ok\t{head}\tdigest {report.digest}", flush=True)
                else:
                    failed += 1
                    print(f"BAD\t{head}\t{'; '.join(report.problems)}", flush=True)
    except StoreDamaged as exc:
        print(f"hashmatch: {exc}", file=sys.stderr)
        return 1
    if failed:
        print(f"hashmatch: {failed} of {total} list(s) failed the check", file=sys.stderr)
        return 1
    print(
        f"hashmatch: {total} list(s) and {len(records)} database(s) of "
        f"{sum(records.values())} record(s) checked, all sound",
        file=sys.stderr,
    )
    return 0


def _promote(args: argparse.Namespace) -> int:
    """Exit 0 promoted; 1 refused (each reason on its own line)."""
    path = data_dir(args)
    token = args.token or os.environ.get("HASHMATCH_TOKEN")
    if args.peer and not token:
        print(
            "hashmatch: --peer needs a replica token (--token or HASHMATCH_TOKEN)",
            file=sys.stderr,
        )
        return 2
    peers: dict[str, list[replica_state.PeerList]] = {}
    problems = []
    for address in args.peer:
        try:
            peers[address] = _peer_lists(address, token, args.peer_ca)
        except HashmatchError as exc:
            problems.append(f"peer {address} could not be asked: {exc}")
    with opened(path) as store:
        if replica_state.being_served(path):
            problems.append(f"a server is still serving {path}: stop it first")
        primary = replica_state.replica_of(store)
        if primary is None:
            print(f"hashmatch: {path} already holds a primary's store", file=sys.stderr)
            return 1
        problems += replica_state.promotion_problems(store, peers)
        if problems:
            print(f"hashmatch: not promoting {path}, a replica of {primary}:", file=sys.stderr)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            return 1
        lists = store.lists()
        replica_state.promote(store, actor="admin")
    print(f"promoted {path}: no longer a replica of {primary}; serve it without --follow")
    for meta in lists:
        print(f"{meta.name}\tversion {meta.version}\tdigest {meta.digest.hex()}")
    return 0


def _peer_lists(address: str, token: str | None, ca: Path | None) -> list[replica_state.PeerList]:
    tls = TlsConfig(ca_file=ca) if ca is not None else None
    connection = Connection(
        server=address, token=token, tls=tls, timeout=10.0, retry=RetryPolicy(attempts=2)
    )
    return [
        replica_state.PeerList(x.name, x.version, bytes.fromhex(x.digest))
        for x in ListClient(connection).list_lists()
    ]


def _demote(args: argparse.Namespace) -> int:
    path = data_dir(args)
    with opened(path) as store:
        if replica_state.being_served(path):
            print(f"hashmatch: a server is still serving {path}: stop it first", file=sys.stderr)
            return 1
        replica_state.demote(store, args.primary, actor="admin")
    print(f"{path} is now a replica of {args.primary}: serve it with --follow {args.primary}")
    return 0


def _backup(args: argparse.Namespace) -> int:
    path = data_dir(args)
    with opened(path) as store:
        done = backup(store, args.dest)
    print(
        f"backed up {path} to {done.path}: {done.size / 1e6:.1f} MB in {done.seconds:.2f} s, "
        f"{len(done.lists)} list(s)"
    )
    for meta in done.lists:
        print(f"{meta.name}\tversion {meta.version}\tdigest {meta.digest.hex()}")
    return 0

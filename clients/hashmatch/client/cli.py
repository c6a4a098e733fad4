"""`hashmatch-client`: match hashes (platforms) and manage lists (hotlines) from a shell.

The server address and token come from --server/--token, or HASHMATCH_SERVER and
HASHMATCH_TOKEN. Exit codes follow virus scanners: 0 no match, 1 match, 2 error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hashmatch.client.algorithms import (
    MD5,
    NAMES,
    PDQ,
    SHA1,
    SHA256,
    make_hash,
    parse_algorithm,
    parse_hex_digest,
)
from hashmatch.client.connection import Connection, TlsConfig
from hashmatch.client.errors import HashmatchError, Unauthenticated
from hashmatch.client.list_client import Change, ListClient
from hashmatch.client.listfile import BadRow, Row, read_rows
from hashmatch.client.match_client import MatchClient
from hashmatch.client.platform_client import REASONS, PlatformClient
from hashmatch.client.progress import Progress
from hashmatch.client.push import (
    DEFAULT_BATCH_SIZE,
    push,
    summarize,
    upload_id_for,
)
from hashmatch.client.results import ListInfo
from hashmatch.v1 import lists_pb2

EXIT_CLEAN, EXIT_MATCH, EXIT_ERROR = 0, 1, 2
TOKEN_ENV = "HASHMATCH_TOKEN"
# The server takes at most 100,000 changes per batch.
MAX_PUSH_BATCH = 100_000


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except HashmatchError as exc:
        print(f"hashmatch-client: {exc}", file=sys.stderr)
        if isinstance(exc, Unauthenticated) and not (args.token or os.environ.get(TOKEN_ENV)):
            print(
                f"hashmatch-client: no token given: use --token or set {TOKEN_ENV}", file=sys.stderr
            )
        return EXIT_ERROR
    except (ValueError, OSError) as exc:
        print(f"hashmatch-client: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hashmatch-client", description=__doc__)
    parser.add_argument("--server", help="HOST:PORT (default: $HASHMATCH_SERVER)")
    parser.add_argument("--token", help="bearer token (default: $HASHMATCH_TOKEN)")
    parser.add_argument("--ca-file", type=Path, help="CA certificate to verify the server (TLS)")
    parser.add_argument("--cert-file", type=Path, help="client certificate (mTLS)")
    parser.add_argument("--key-file", type=Path, help="client private key (mTLS)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per call")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("match", help="match the hashes of one upload, given as hex")
    p.add_argument("--md5")
    p.add_argument("--sha1")
    p.add_argument("--sha256")
    p.add_argument("--pdq", action="append", default=[], help="repeatable (dihedral variants)")
    p.add_argument("--pdq-quality", type=int, help="quality of the PDQ hash(es), 0-100")
    p.add_argument("--item-id", default="", help="your correlation ID, echoed back")
    p.set_defaults(run=_match)

    p = sub.add_parser(
        "scan",
        help="hash files and folders here and match them; only hashes are sent",
        description="Hash files and folders locally (MD5, SHA-1, SHA-256, PDQ) and match them "
        "in batches. Exit 0: nothing matched; 1: something matched; 2: a file could not be "
        "checked (and nothing matched), or an error.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files and folders (recursive)")
    p.add_argument(
        "--dihedral", action="store_true", help="also match rotated and mirrored copies (PDQ)"
    )
    p.add_argument("--report", type=Path, help="write one record per file: FILE.jsonl or FILE.csv")
    p.add_argument("--workers", type=int, help="hashing processes (default: one per CPU)")
    p.add_argument(
        "--batch-size", type=int, default=1000, help="files per MatchBatch call (max 10000)"
    )
    p.add_argument(
        "--pdq-min-quality",
        type=int,
        default=50,
        help="send no PDQ for images below this quality (default 50)",
    )
    p.set_defaults(run=_scan)

    p = sub.add_parser("apply", help="apply a CSV list file (algorithm,hash_hex,reference_id)")
    p.add_argument("list")
    p.add_argument("file", type=Path)
    p.add_argument("--batch-id", required=True, help="ID of the batch; re-running is a no-op")
    p.add_argument("--retire", action="store_true", help="retire the file's hashes instead")
    p.add_argument("--expected-version", type=int)
    p.set_defaults(run=_apply)

    p = sub.add_parser(
        "push",
        help="stream a list file (CSV or JSON lines) in batches; resumable; digest check",
    )
    p.add_argument("list")
    p.add_argument("file", type=Path)
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument(
        "--upload-id",
        help="names the batches (<id>:<n>); default: derived from the file, so a re-run resumes",
    )
    p.add_argument("--retire", action="store_true", help="retire the file's hashes instead")
    p.set_defaults(run=_push)

    p = sub.add_parser("digest", help="compute a list file's digest, to compare with get-list")
    p.add_argument("file", type=Path)
    p.set_defaults(run=_digest)

    p = sub.add_parser("report", help="report a matched reference as a false positive")
    p.add_argument("list")
    p.add_argument("reference_id")
    p.add_argument("--reason", required=True, choices=sorted(REASONS))
    p.add_argument("--note", default="", help="short; must not identify a user or the content")
    p.set_defaults(run=_report)

    p = sub.add_parser("subscribe", help="choose which lists apply to this platform")
    p.add_argument("lists", nargs="*", metavar="LIST")
    p.add_argument("--all", action="store_true", help="every list, now and future")
    p.set_defaults(run=_subscribe)

    p = sub.add_parser("allow", help="this platform's allow-list of hashes reviewed as benign")
    p.add_argument("action", choices=["add", "remove", "show"])
    p.add_argument("algorithm", nargs="?")
    p.add_argument("hash_hex", nargs="?")
    p.set_defaults(run=_allow)

    p = sub.add_parser("feedback", help="false-positive reports against your list")
    p.add_argument("list")
    p.set_defaults(run=_feedback)

    p = sub.add_parser("quarantine", help="references of your list quarantined for flooding")
    p.add_argument("list")
    p.set_defaults(run=_quarantine)

    p = sub.add_parser("release", help="let quarantined references match again")
    p.add_argument("list")
    p.add_argument("reference_ids", nargs="+", metavar="REFERENCE_ID")
    p.set_defaults(run=_release)

    p = sub.add_parser("create-list", help="create a list owned by the calling hotline")
    p.add_argument("name")
    p.add_argument("--pdq-threshold", type=int)
    p.add_argument("--pdq-min-quality", type=int)
    p.set_defaults(run=_create)

    p = sub.add_parser("get-list", help="show a list's version, counts and digest")
    p.add_argument("name")
    p.set_defaults(run=_get)

    p = sub.add_parser("lists", help="show the lists the caller may see")
    p.set_defaults(run=_lists)

    p = sub.add_parser(
        "grant", help="let a tenant (a partner, a platform's mirror) read one of your lists"
    )
    p.add_argument("list")
    p.add_argument("tenant")
    p.set_defaults(run=_grant)

    p = sub.add_parser("revoke", help="end a tenant's read access to one of your lists")
    p.add_argument("list")
    p.add_argument("tenant")
    p.set_defaults(run=_revoke)

    p = sub.add_parser("grants", help="the tenants one of your lists is granted to")
    p.add_argument("list")
    p.set_defaults(run=_grants)
    return parser


def connection(args: argparse.Namespace) -> Connection:
    tls = None
    if args.ca_file or args.cert_file:
        tls = TlsConfig(args.ca_file, args.cert_file, args.key_file)
    return Connection.from_env(args.server, args.token, tls=tls, timeout=args.timeout)


def _match(args: argparse.Namespace) -> int:
    hashes = [
        make_hash(alg, parse_hex_digest(alg, text))
        for alg, text in ((MD5, args.md5), (SHA1, args.sha1), (SHA256, args.sha256))
        if text
    ]
    hashes += [make_hash(PDQ, parse_hex_digest(PDQ, h), args.pdq_quality) for h in args.pdq]
    if not hashes:
        raise ValueError("give at least one of --md5, --sha1, --sha256, --pdq")
    with MatchClient(connection(args)) as client:
        result = client.match(hashes, item_id=args.item_id)
    if not result.matched:
        print("NO_MATCH")
        return EXIT_CLEAN
    print("MATCH")
    for ref in result.references:
        print(f"  list={ref.list} reference_id={ref.reference_id} list_version={ref.list_version}")
    return EXIT_MATCH


def _scan(args: argparse.Namespace) -> int:
    # Imported here: the process pool and report code are not needed by the other commands.
    from hashmatch.client.report import NullReport, ReportWriter, open_report
    from hashmatch.client.results import FileResult, Verdict
    from hashmatch.client.scan import ScanOptions, scan

    options = ScanOptions(
        dihedral=args.dihedral,
        workers=args.workers,
        batch_size=args.batch_size,
        min_quality=args.pdq_min_quality,
    )
    report: ReportWriter = open_report(args.report) if args.report else NullReport()
    exclude: set[tuple[int, int]] = set()
    if args.report:
        st = args.report.stat()
        exclude.add((st.st_dev, st.st_ino))
    noted: list[FileResult] = []

    def on_result(result: FileResult) -> None:
        report.write(result)
        if result.verdict is not Verdict.NO_MATCH:
            noted.append(result)

    try:
        with MatchClient(connection(args)) as client:
            summary = scan(args.paths, client, options, on_result=on_result, exclude=exclude)
    finally:
        report.close()
    # Printed after the scan so the progress bar never breaks a line.
    for r in noted:
        if r.matched:
            refs = ";".join(f"{ref.list}:{ref.reference_id}" for ref in r.references)
            print(f"MATCH\t{r.path}\t{refs}")
        elif not args.report:
            print(f"{r.verdict.value}\t{r.path}\t{r.reason}", file=sys.stderr)
    print(summary.text(), file=sys.stderr)
    if args.report:
        print(f"  report: {args.report}", file=sys.stderr)
    return summary.exit_code


def _apply(args: argparse.Namespace) -> int:
    rows: list[Row] = []
    bad: list[BadRow] = []
    for row in read_rows(args.file):
        (bad if isinstance(row, BadRow) else rows).append(row)  # type: ignore[arg-type]
    if bad:
        _report_bad_rows(args.file, bad)
        return EXIT_ERROR
    changes = [
        Change(make_hash(r.algorithm, r.value, r.quality), None if args.retire else r.reference_id)
        for r in rows
    ]
    with ListClient(connection(args)) as client:
        result = client.apply_changes(
            args.list, args.batch_id, changes, expected_version=args.expected_version
        )
    state = "already applied; nothing changed" if result.already_applied else "applied"
    print(
        f"batch {args.batch_id} {state}: version={result.version} upserted={result.upserted} "
        f"retired={result.retired} digest={result.digest}"
    )
    return EXIT_CLEAN


def _push(args: argparse.Namespace) -> int:
    if not 1 <= args.batch_size <= MAX_PUSH_BATCH:
        raise ValueError(f"--batch-size must be 1-{MAX_PUSH_BATCH}")
    summary = summarize(args.file, retire=args.retire)
    if summary.bad:
        _report_bad_rows(args.file, summary.bad)
        return EXIT_ERROR
    upload_id = args.upload_id or upload_id_for(args.file)
    bar = Progress(summary.rows, 0, unit="rows")
    with ListClient(connection(args)) as client:
        result = push(
            client,
            args.file,
            args.list,
            summary=summary,
            upload_id=upload_id,
            batch_size=args.batch_size,
            retire=args.retire,
            # push reports rows sent so far; after a resume that can go back.
            progress=lambda sent: bar.advance(sent - bar.files),
        )
    bar.close()
    resumed = f", resumed after {result.skipped_batches}" if result.skipped_batches else ""
    print(
        f"pushed {result.rows} rows in {result.batches} batch(es){resumed}: "
        f"list version {result.version}"
    )
    if args.retire:
        return EXIT_CLEAN
    if result.digest_matches:
        print(f"digest {result.list_digest}: the list holds exactly this file")
        return EXIT_CLEAN
    print(
        f"digest differs: file {result.file_digest}, list {result.list_digest} "
        "(the list holds entries this file does not, or lacks some)",
        file=sys.stderr,
    )
    return EXIT_MATCH


def _digest(args: argparse.Namespace) -> int:
    summary = summarize(args.file, retire=False)
    if summary.bad:
        _report_bad_rows(args.file, summary.bad)
        return EXIT_ERROR
    print(summary.digest)
    return EXIT_CLEAN


def _report_bad_rows(path: Path, bad: list[BadRow]) -> None:
    for b in bad[:50]:
        print(f"{path}:{b.line}: {b.problem}", file=sys.stderr)
    more = " (first 50 shown)" if len(bad) > 50 else ""
    print(f"hashmatch-client: {len(bad)} bad row(s){more}; nothing was sent", file=sys.stderr)


def _report(args: argparse.Namespace) -> int:
    with PlatformClient(connection(args)) as client:
        client.report_false_positive(args.list, args.reference_id, args.reason, args.note)
    print(f"reported {args.reference_id} in {args.list} as {args.reason}")
    return EXIT_CLEAN


def _subscribe(args: argparse.Namespace) -> int:
    if args.all == bool(args.lists):
        raise ValueError("give list names, or --all")
    with PlatformClient(connection(args)) as client:
        subs = client.subscribe(None if args.all else args.lists)
    chosen = "every list" if subs.all_lists else ", ".join(subs.lists)
    print(f"subscribed to {chosen} (available: {', '.join(subs.available)})")
    return EXIT_CLEAN


def _allow(args: argparse.Namespace) -> int:
    with PlatformClient(connection(args)) as client:
        if args.action == "show":
            for h in client.allow_list():
                print(f"{NAMES[h.algorithm]},{h.value.hex()}")
            return EXIT_CLEAN
        if not (args.algorithm and args.hash_hex):
            raise ValueError(f"allow {args.action} needs ALGORITHM and HASH_HEX")
        alg = parse_algorithm(args.algorithm)
        h = make_hash(alg, parse_hex_digest(alg, args.hash_hex))
        size = client.update_allow_list(
            add=[h] if args.action == "add" else [], remove=[h] if args.action == "remove" else []
        )
    print(f"allow-list holds {size} hash(es)")
    return EXIT_CLEAN


def _feedback(args: argparse.Namespace) -> int:
    with ListClient(connection(args)) as client:
        for ref in client.feedback(args.list):
            reasons = " ".join(
                f"{lists_pb2.FeedbackReason.Name(c.reason).removeprefix('FEEDBACK_REASON_').lower()}"
                f"={c.count}"
                for c in ref.counts
            )
            print(f"{ref.reference_id}\t{ref.total} report(s)\t{reasons}")
            for note in ref.notes:
                print(f"\tnote: {note}")
    return EXIT_CLEAN


def _quarantine(args: argparse.Namespace) -> int:
    with ListClient(connection(args)) as client:
        for q in client.quarantine(args.list):
            print(
                f"{q.reference_id}\tsince {q.since.ToDatetime().isoformat(timespec='seconds')}"
                f"\t{q.window_matches} matches in a window (baseline {q.baseline:.1f})"
            )
    return EXIT_CLEAN


def _release(args: argparse.Namespace) -> int:
    with ListClient(connection(args)) as client:
        released = client.release(args.list, args.reference_ids)
    print(f"released {released} reference(s)")
    return EXIT_CLEAN


def _create(args: argparse.Namespace) -> int:
    with ListClient(connection(args)) as client:
        info = client.create_list(
            args.name, pdq_threshold=args.pdq_threshold, pdq_min_quality=args.pdq_min_quality
        )
    _print_list(info)
    return EXIT_CLEAN


def _get(args: argparse.Namespace) -> int:
    with ListClient(connection(args)) as client:
        _print_list(client.get_list(args.name))
    return EXIT_CLEAN


def _lists(args: argparse.Namespace) -> int:
    with ListClient(connection(args)) as client:
        for info in client.list_lists():
            _print_list(info)
    return EXIT_CLEAN


def _grant(args: argparse.Namespace) -> int:
    with ListClient(connection(args)) as client:
        granted = client.grant_access(args.list, args.tenant)
    state = "may now read" if granted else "could already read"
    print(f"{args.tenant} {state} {args.list}")
    return EXIT_CLEAN


def _revoke(args: argparse.Namespace) -> int:
    with ListClient(connection(args)) as client:
        revoked = client.revoke_access(args.list, args.tenant)
    state = "may no longer read" if revoked else "had no access to"
    print(f"{args.tenant} {state} {args.list}")
    return EXIT_CLEAN


def _grants(args: argparse.Namespace) -> int:
    with ListClient(connection(args)) as client:
        for g in client.list_grants(args.list):
            since = g.granted_at.ToDatetime().isoformat(timespec="seconds")
            print(f"{g.tenant}\tsince {since}\tby {g.granted_by}")
    return EXIT_CLEAN


def _print_list(info: ListInfo) -> None:
    counts = " ".join(f"{k}={v}" for k, v in info.counts.items())
    print(
        f"{info.name}\towner={info.owner}\tversion={info.version}\t{counts}\t"
        f"pdq_threshold={info.pdq_threshold}\tpdq_min_quality={info.pdq_min_quality}\t"
        f"digest={info.digest}"
    )

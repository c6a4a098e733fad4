"""`hashmatch-client`: match hashes (platforms) and manage lists (hotlines) from a shell.

The server address and token come from --server/--token, or HASHMATCH_SERVER and
HASHMATCH_TOKEN. Exit codes follow virus scanners: 0 no match, 1 match, 2 error; for push
and apply: 0 applied, 1 refused (nothing applied), 2 could not run.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf import timestamp_pb2

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
from hashmatch.client.connection import DEFAULT_SERVER, Connection, TlsConfig
from hashmatch.client.entrychecks import check_rows
from hashmatch.client.errors import (
    FailedPrecondition,
    HashmatchError,
    InvalidArgument,
    Unauthenticated,
)
from hashmatch.client.labels import LABEL_KEYS
from hashmatch.client.list_client import Change, ListClient
from hashmatch.client.listfile import FORMATS, BadRow, Row, read_rows
from hashmatch.client.match_client import MatchClient
from hashmatch.client.platform_client import REASONS, PlatformClient
from hashmatch.client.progress import Progress
from hashmatch.client.push import (
    DEFAULT_BATCH_SIZE,
    MAX_REPORTED_BAD,
    FileRefused,
    FileSummary,
    push,
    summarize,
    upload_id_for,
)
from hashmatch.client.results import ListInfo
from hashmatch.v1 import lists_pb2

EXIT_CLEAN, EXIT_MATCH, EXIT_ERROR = 0, 1, 2
# push/apply: the file was refused (bad rows, or by the server); nothing of it was applied.
EXIT_REFUSED = 1
TOKEN_ENV = "HASHMATCH_TOKEN"
SERVER_ENV = "HASHMATCH_SERVER"
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


LIST_FILE_FORMATS = """\
list files:
  The format is detected from the file; --format names it (the names below).
  csv          rows of algorithm,hash_hex,reference_id[,quality]; a header row is allowed.
               algorithm: md5, sha1, sha256 or pdq; quality (0-100) is for PDQ only.
               A header naming the columns (algorithm, hash, reference_id, quality) may
               put them in any order; or one column per algorithm (md5, sha1, sha256,
               pdq, plus id/reference_id, optional quality for the PDQ cell): each filled
               hash cell is one entry of the row's reference. Columns named category,
               age_band, classification, baseline or source are labels; others ignored.
  tsv          the same, tab-separated (a .tsv file, or a tab in the first line).
               A UTF-8 BOM and CRLF line ends are accepted everywhere.
  jsonl        a .jsonl or .ndjson file, one object per line:
               {"algorithm": "pdq", "hash": "<hex>", "reference_id": "...", "quality": 90,
               "labels": {"category": "A"}, "retire": false} (the last three optional).
  threatexchange-csv      `threatexchange dataset -P --csv`: signal_type, signal_str,
               collab (the reference ID and source label), category, tags.
  threatexchange-signals  lines `<signal_type> <signal_str>` (pdq, video_md5,
               photo_md5, md5, video_sha256, sha256); reference ID: the file's name.
  ncmec-xml    NCMEC hash-sharing XML: each image/video entry's id is the reference ID,
               its fingerprints md5/sha1/sha256/pdq are entries, its classification a
               label; deletedImage/deletedVideo fingerprints are retired. No DOCTYPE.
  stopncii-json  StopNCII hash records (signalType ImagePDQ or VideoMD5, hashValue;
               hashStatus Withdrawn/Deleted retires); reference ID: stopncii.
  Before anything is sent, every row is checked as the server would check it (format,
  degenerate PDQ, PDQ quality below the list's minimum, a hash repeated in the file, one
  reference with different labels); a bad row refuses the whole file, naming each bad
  line (the first 20, and a count).
"""

MATCH_EPILOG = """\
Each hash is given as hex: MD5 32 digits, SHA-1 40, SHA-256 64, PDQ 64. Give --pdq once
per variant (e.g. the 8 dihedral variants of an image); --pdq-quality applies to all.

example:
  hashmatch-client match --md5 d35c785545392755e7e4164457657269 --item-id upload-123

output: NO_MATCH, or MATCH and one line per matched reference
  (list=... reference_id=... list_version=...).

exit codes:
  0  no match
  1  match
  2  error (bad arguments, bad hex, server unreachable, refused)
"""

PUSH_EPILOG = f"""\
{LIST_FILE_FORMATS}
The file is applied whole or not at all: the server checks and stages every batch and
publishes them in one commit once the file has arrived; a refused row anywhere, or a
connection that drops, leaves the list exactly as it was (a dropped push is sent again
from the start, by itself or by running it again). Batches are named <upload-id>:<n>, so
pushing a file that was applied already changes nothing.

  push           upserts every row (a row marked retire, e.g. an NCMEC deletion, is
                 retired); the list keeps its other entries. Says whether the list now
                 holds exactly this file (its digest against the file's).
  push --delta   the file is a set of changes (upserts, and rows marked retire): the same
                 unit, without the comparison with the whole list.
  push --replace the list becomes equal to the file: entries it does not list are
                 retired in the same unit (a full export, e.g. NCMEC's).
  push --retire  retires every hash of the file.

exit codes:
  0  applied (or applied before: nothing changed)
  1  refused: nothing was applied (bad rows, each named by its file line)
  2  could not run (bad arguments, unreadable file, server unreachable, no access)
"""

APPLY_EPILOG = f"""\
{LIST_FILE_FORMATS}
The file is sent as one atomic batch. Re-sending a --batch-id changes nothing.

exit codes:
  0  applied (or already applied)
  1  refused: nothing was applied (bad rows, each named by its line; a version conflict)
  2  could not run (bad arguments, unreadable file, server unreachable, no access)
"""

SCAN_EPILOG = """\
Files are hashed here (MD5, SHA-1, SHA-256, and PDQ for images with the [pdq] extra);
only the hashes are sent.

output: a MATCH<TAB>path<TAB>list:reference;... line per matched file on stdout; files
that could not be checked and a summary on stderr.

report (--report): FILE.jsonl (one JSON object per file) or FILE.csv (one row per file).

exit codes:
  0  nothing matched
  1  something matched
  2  a file could not be checked (and nothing matched), or an error
"""

HASH_EPILOG = """\
Prints the rows of a list file, as push and apply read them (algorithm,hash_hex,
reference_id[,quality]): for every file its MD5, SHA-1 and SHA-256 and, for images, its
PDQ with quality; a photo with an EXIF orientation other than 1 gets two PDQ rows, the
upright picture and the pixels as stored (what Meta's tools hash), so platforms match it
whichever way they hash; a video (with the [video] extra) gets one vpdq row per distinct
frame of the whole video. Nothing is sent anywhere.

The reference ID is the file's name, or for a file found in a folder given, its path
inside that folder; --reference-id gives every file the same one. A hash already printed
for an earlier file is left out (a list holds each hash once), with a note on stderr.

example:
  hashmatch-client hash vetted/ > list.csv && hashmatch-client push my-list list.csv

exit codes:
  0  every file hashed
  2  a file could not be read or has no usable reference ID (the others are printed)
"""

GENERAL_EPILOG = """\
The server is --server or $HASHMATCH_SERVER (default 127.0.0.1:50051); the token is --token
or $HASHMATCH_TOKEN. Listing commands take --json to print one JSON document.

exit codes: 0 success / no match; 1 match (match, scan), refused (push, apply); 2 error.
"""


def _version() -> str:
    try:
        return importlib.metadata.version("hashmatch-client")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document")


def _add_format(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--format",
        choices=sorted(FORMATS),
        help="the list file's format (default: detected from the file)",
    )


def _parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="hashmatch-client", description=__doc__, epilog=GENERAL_EPILOG, formatter_class=raw
    )
    parser.add_argument("--version", action="version", version=f"hashmatch-client {_version()}")
    parser.add_argument("--server", help="HOST:PORT (default: $HASHMATCH_SERVER)")
    parser.add_argument("--token", help="bearer token (default: $HASHMATCH_TOKEN)")
    parser.add_argument("--ca-file", type=Path, help="CA certificate to verify the server (TLS)")
    parser.add_argument("--cert-file", type=Path, help="client certificate (mTLS)")
    parser.add_argument("--key-file", type=Path, help="client private key (mTLS)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per call")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser(
        "match",
        help="match the hashes of one upload, given as hex",
        description="Match the hashes of one upload, given as hex. Give at least one hash.",
        epilog=MATCH_EPILOG,
        formatter_class=raw,
    )
    p.add_argument("--md5", metavar="HEX", help="MD5 of the upload (32 hex digits)")
    p.add_argument("--sha1", metavar="HEX", help="SHA-1 of the upload (40 hex digits)")
    p.add_argument("--sha256", metavar="HEX", help="SHA-256 of the upload (64 hex digits)")
    p.add_argument(
        "--pdq",
        metavar="HEX",
        action="append",
        default=[],
        help="PDQ hash (64 hex digits); repeatable (dihedral variants)",
    )
    p.add_argument("--pdq-quality", type=int, help="quality of the PDQ hash(es), 0-100")
    p.add_argument("--item-id", default="", help="your correlation ID, echoed back")
    p.set_defaults(run=_match)

    p = sub.add_parser(
        "scan",
        help="hash files and folders here and match them; only hashes are sent",
        description="Hash files and folders locally (MD5, SHA-1, SHA-256, PDQ for images, "
        "vPDQ frames for videos) and match them in batches.",
        epilog=SCAN_EPILOG,
        formatter_class=raw,
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
    p.add_argument(
        "--video-fps",
        type=float,
        default=1.0,
        help="frames a second a video is hashed at, vPDQ, with the [video] extra (default 1)",
    )
    p.set_defaults(run=_scan)

    p = sub.add_parser(
        "hash",
        help="print the list-file rows (MD5, SHA-1, SHA-256, PDQ) of files, for push",
        description="Hash files here and print the rows push accepts; nothing is sent.",
        epilog=HASH_EPILOG,
        formatter_class=raw,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files and folders (recursive)")
    p.add_argument("--reference-id", help="the reference ID of every file (default: its name)")
    p.add_argument(
        "--pdq-min-quality",
        type=int,
        default=50,
        help="print no PDQ for images below this quality (default 50)",
    )
    p.add_argument("--no-pdq", action="store_true", help="digests only (no [pdq] extra needed)")
    p.add_argument(
        "--full-decode",
        action="store_true",
        help="decode large JPEGs at full size (slower; the hash moves at most 6 bits)",
    )
    p.set_defaults(run=_hash)

    p = sub.add_parser(
        "apply",
        help="apply a list file (CSV or JSON lines) as one atomic batch",
        description="Apply a list file (CSV or JSON lines) to LIST as one atomic batch.",
        epilog=APPLY_EPILOG,
        formatter_class=raw,
    )
    p.add_argument("list", metavar="LIST", help="the list (yours)")
    p.add_argument("file", type=Path, metavar="FILE", help="CSV, or JSON lines (.jsonl/.ndjson)")
    p.add_argument("--batch-id", required=True, help="ID of the batch; re-running is a no-op")
    p.add_argument("--retire", action="store_true", help="retire the file's hashes instead")
    p.add_argument("--expected-version", type=int)
    _add_format(p)
    p.set_defaults(run=_apply)

    p = sub.add_parser(
        "push",
        help="apply a list file as one unit, streamed in batches (--delta, --replace)",
        description="Apply a list file to LIST whole or not at all, streamed in batches "
        "(UploadChanges); says whether the list then holds exactly the file.",
        epilog=PUSH_EPILOG,
        formatter_class=raw,
    )
    p.add_argument("list", metavar="LIST", help="the list (yours)")
    p.add_argument("file", type=Path, metavar="FILE", help="CSV, or JSON lines (.jsonl/.ndjson)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"rows per batch, 1-{MAX_PUSH_BATCH:,} (default {DEFAULT_BATCH_SIZE:,})",
    )
    p.add_argument(
        "--upload-id",
        help="names the batches (<id>:<n>); default: derived from the file, so a re-run resumes",
    )
    how = p.add_mutually_exclusive_group()
    how.add_argument("--retire", action="store_true", help="retire the file's hashes instead")
    how.add_argument(
        "--delta", action="store_true", help="the file is a set of changes (upserts, retirements)"
    )
    how.add_argument(
        "--replace",
        action="store_true",
        help="make the list equal to the file: retire the entries it does not list",
    )
    _add_format(p)
    p.set_defaults(run=_push)

    p = sub.add_parser("digest", help="compute a list file's digest, to compare with get-list")
    p.add_argument("file", type=Path)
    _add_format(p)
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
    _add_json(p)
    p.set_defaults(run=_allow)

    p = sub.add_parser("subscriptions", help="show which lists apply to this platform")
    _add_json(p)
    p.set_defaults(run=_subscriptions)

    p = sub.add_parser("feedback", help="false-positive reports against your list")
    p.add_argument("list")
    p.add_argument("--limit", type=int, default=100, help="most reported first (default 100)")
    _add_json(p)
    p.set_defaults(run=_feedback)

    p = sub.add_parser("quarantine", help="references of your list quarantined for flooding")
    p.add_argument("list")
    _add_json(p)
    p.set_defaults(run=_quarantine)

    p = sub.add_parser(
        "stats",
        help="per-reference match statistics of your list, most matched first",
        description="Per-reference match statistics of LIST: reference, matches, and when it "
        "last matched (ISO-8601, UTC). Most matched first.",
    )
    p.add_argument("list", metavar="LIST")
    p.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    _add_json(p)
    p.set_defaults(run=_stats)

    p = sub.add_parser(
        "flood-policy",
        help="show or set your list's flood-quarantine policy",
        description="Without options, show LIST's flood-quarantine policy. With any option, "
        "set it (unset options keep their current value). A reference is quarantined when "
        "its matches in one window reach --min-matches and exceed --factor times its "
        "baseline; --factor 0 turns quarantine off.",
    )
    p.add_argument("list", metavar="LIST")
    p.add_argument("--factor", type=int, help="times the baseline; 0 turns quarantine off")
    p.add_argument("--min-matches", type=int, help="matches in one window needed to trip it")
    p.add_argument("--window-seconds", type=int, help="length of the window")
    _add_json(p)
    p.set_defaults(run=_flood_policy)

    p = sub.add_parser("release", help="let quarantined references match again")
    p.add_argument("list")
    p.add_argument("reference_ids", nargs="+", metavar="REFERENCE_ID")
    p.set_defaults(run=_release)

    p = sub.add_parser("create-list", help="create a list owned by the calling hotline")
    p.add_argument("name")
    p.add_argument("--pdq-threshold", type=int)
    p.add_argument("--pdq-min-quality", type=int)
    p.add_argument(
        "--expose-labels",
        metavar="KEYS",
        default="",
        help=f"comma-separated label keys platforms see in verdicts (default none): "
        f"{', '.join(LABEL_KEYS)}",
    )
    _add_json(p)
    p.set_defaults(run=_create)

    p = sub.add_parser(
        "expose-labels",
        help="show or set which label keys platforms see in your list's verdicts",
        description="Without keys, show which label keys of LIST's entries platforms see in "
        "a verdict. With keys, show exactly those from now on; --none shows none (the "
        f"default). Keys: {', '.join(LABEL_KEYS)}.",
    )
    p.add_argument("list", metavar="LIST")
    p.add_argument("keys", nargs="*", metavar="KEY")
    p.add_argument("--none", action="store_true", help="show no labels")
    _add_json(p)
    p.set_defaults(run=_expose_labels)

    p = sub.add_parser("get-list", help="show a list's version, counts and digest")
    p.add_argument("name")
    _add_json(p)
    p.set_defaults(run=_get)

    p = sub.add_parser("lists", help="show the lists the caller may see")
    _add_json(p)
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
    _add_json(p)
    p.set_defaults(run=_grants)

    p = sub.add_parser(
        "audit",
        help="the audit log of your list: who changed it, and when",
        description="The audit records of LIST (owner only), oldest first: one line each of "
        "time (ISO-8601, UTC), actor, action and details (JSON).",
    )
    p.add_argument("list", metavar="LIST")
    p.add_argument("--since", metavar="ISO", help="only records at or after this time")
    p.add_argument("--until", metavar="ISO", help="only records at or before this time")
    p.add_argument(
        "--action",
        action="append",
        default=[],
        metavar="ACTION",
        help="only this action (e.g. apply-changes); repeatable",
    )
    p.add_argument("--limit", type=int, default=100, help="the newest this many (default 100)")
    _add_json(p)
    p.set_defaults(run=_audit)
    return parser


def connection(args: argparse.Namespace) -> Connection:
    tls = None
    if args.ca_file or args.cert_file:
        tls = TlsConfig(args.ca_file, args.cert_file, args.key_file)
    if not (args.server or os.environ.get(SERVER_ENV)):
        print(
            f"hashmatch-client: no --server or {SERVER_ENV}; using {DEFAULT_SERVER}",
            file=sys.stderr,
        )
    return Connection.from_env(args.server, args.token, tls=tls, timeout=args.timeout)


def _print_json(doc: object) -> None:
    print(json.dumps(doc, indent=2))


def _iso(ts: timestamp_pb2.Timestamp) -> str | None:
    """ISO-8601 UTC, or None for an unset timestamp."""
    if not ts.seconds and not ts.nanos:
        return None
    return ts.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds")


def _list_doc(info: ListInfo) -> dict[str, Any]:
    def iso(d: datetime) -> str:
        return d.replace(tzinfo=UTC).isoformat(timespec="seconds")

    return {
        "name": info.name,
        "owner": info.owner,
        "version": info.version,
        "counts": info.counts,
        "pdq_threshold": info.pdq_threshold,
        "pdq_min_quality": info.pdq_min_quality,
        "digest": info.digest,
        "created_at": iso(info.created_at),
        "updated_at": iso(info.updated_at),
        "last_batch_id": info.last_batch_id,
        "exposed_label_keys": list(info.exposed_label_keys),
    }


def _reason_name(reason: int) -> str:
    return lists_pb2.FeedbackReason.Name(reason).removeprefix("FEEDBACK_REASON_").lower()


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
        labels = "".join(f" {k}={v}" for k, v in ref.labels.items())
        print(
            f"  list={ref.list} reference_id={ref.reference_id} "
            f"list_version={ref.list_version}{labels}"
        )
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
        video_fps=args.video_fps,
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


def _hash(args: argparse.Namespace) -> int:
    # Imported here: hashing and the folder walk are not needed by the other commands.
    from hashmatch.client.file_rows import (
        FileRows,
        file_rows,
        named_files,
        without_repeats,
    )
    from hashmatch.client.hashing import PdqNotInstalled, UnreadableFile, pdq_available
    from hashmatch.client.listformats.rows import reference_problem

    if not args.no_pdq and not pdq_available():
        raise PdqNotInstalled(
            "hash makes PDQ rows, which need the optional extra: pip install "
            "'hashmatch-client[pdq]' (or --no-pdq for digests only)"
        )
    failed = 0

    def hashed() -> Iterator[FileRows]:
        nonlocal failed
        for found, reference_id in named_files(args.paths, args.reference_id):
            problem = found.problem or reference_problem(reference_id)
            if problem is None:
                try:
                    yield file_rows(
                        found.path,
                        reference_id,
                        pdq=not args.no_pdq,
                        min_quality=args.pdq_min_quality,
                        full_decode=args.full_decode,
                    )
                    continue
                except UnreadableFile as exc:
                    problem = exc.strerror
            elif found.problem is None:
                problem = f"reference ID {reference_id!r} {problem} (use --reference-id)"
            print(f"hashmatch-client: {found.path}: {problem}", file=sys.stderr)
            failed += 1

    for f in without_repeats(hashed()):
        sys.stdout.write("".join(row.csv_line() for row in f.rows))
        for note in f.notes:
            print(f"hashmatch-client: {f.path}: {note}", file=sys.stderr)
    return EXIT_ERROR if failed else EXIT_CLEAN


def _apply(args: argparse.Namespace) -> int:
    with ListClient(connection(args)) as client:
        min_quality = client.get_list(args.list).pdq_min_quality
        rows: list[Row] = []
        bad: list[BadRow] = []
        checked = check_rows(
            read_rows(args.file, args.format), retire=args.retire, pdq_min_quality=min_quality
        )
        for row in checked:
            (bad if isinstance(row, BadRow) else rows).append(row)  # type: ignore[arg-type]
        if bad:
            _report_bad_rows(args.file, bad[:MAX_REPORTED_BAD], len(bad))
            return EXIT_REFUSED
        changes = [
            Change(make_hash(r.algorithm, r.value, r.quality), None, {})
            if args.retire or r.retire
            else Change(make_hash(r.algorithm, r.value, r.quality), r.reference_id, r.labels)
            for r in rows
        ]
        try:
            result = client.apply_changes(
                args.list, args.batch_id, changes, expected_version=args.expected_version
            )
        except (InvalidArgument, FailedPrecondition) as exc:
            print(f"hashmatch-client: {exc}", file=sys.stderr)
            print("hashmatch-client: the file was refused; nothing was applied", file=sys.stderr)
            return EXIT_REFUSED
    state = "already applied; nothing changed" if result.already_applied else "applied"
    print(
        f"batch {args.batch_id} {state}: version={result.version} upserted={result.upserted} "
        f"retired={result.retired} digest={result.digest}"
    )
    return EXIT_CLEAN


def _push(args: argparse.Namespace) -> int:
    if not 1 <= args.batch_size <= MAX_PUSH_BATCH:
        raise ValueError(f"--batch-size must be 1-{MAX_PUSH_BATCH}")
    with ListClient(connection(args)) as client:
        summary = _checked_file(args, client)
        if summary.bad:
            return EXIT_REFUSED
        if args.replace and not summary.rows:
            print(
                f"hashmatch-client: {args.file} holds no entries: an empty file does not "
                "replace a list; nothing was sent",
                file=sys.stderr,
            )
            return EXIT_REFUSED
        upload_id = args.upload_id or upload_id_for(
            args.file, retire=args.retire, batch_size=args.batch_size
        )
        bar = Progress(summary.rows, 0, unit="rows")
        try:
            result = push(
                client,
                args.file,
                args.list,
                summary=summary,
                upload_id=upload_id,
                batch_size=args.batch_size,
                retire=args.retire,
                replace=args.replace,
                fmt=summary.format,
                # push reports rows sent so far; sent again after a dropped connection.
                progress=lambda sent: bar.advance(sent - bar.files),
            )
        except FileRefused as refused:
            bar.close()
            _report_refusal(args.file, refused)
            return EXIT_REFUSED
    bar.close()
    resumed = f", resumed after {result.skipped_batches}" if result.skipped_batches else ""
    before = " (applied before: nothing changed)" if result.already_applied else ""
    print(
        f"pushed {result.rows} rows in {result.batches} batch(es){resumed}{before}: "
        f"list version {result.version}"
    )
    if args.replace:
        print(f"retired {result.replaced} entries the file does not list")
    if args.retire or args.delta:
        return EXIT_CLEAN
    if result.digest_matches:
        print(f"digest {result.list_digest}: the list holds exactly this file")
    elif not args.replace:
        print(
            f"digest {result.list_digest}: the list also holds entries this file does not "
            f"list (file digest {result.file_digest}); --replace makes it equal to the file"
        )
    else:  # another writer changed the list right after the replacement
        print(
            f"digest {result.list_digest} differs from the file's {result.file_digest}: the "
            "list changed after the replacement",
            file=sys.stderr,
        )
    return EXIT_CLEAN


def _report_refusal(path: Path, refused: FileRefused) -> None:
    for line, problem in refused.lines[:MAX_REPORTED_BAD]:
        print(f"{path}:{line}: {problem}" if line else f"{path}: {problem}", file=sys.stderr)
    print(f"hashmatch-client: {refused.error}", file=sys.stderr)
    print("hashmatch-client: the file was refused; nothing of it was applied", file=sys.stderr)


def _checked_file(args: argparse.Namespace, client: ListClient) -> FileSummary:
    """The file read and checked against the list's settings; its bad rows are reported."""
    summary = summarize(
        args.file,
        retire=args.retire,
        fmt=args.format,
        pdq_min_quality=client.get_list(args.list).pdq_min_quality,
    )
    if summary.bad:
        _report_bad_rows(args.file, summary.bad, summary.bad_count)
    return summary


def _digest(args: argparse.Namespace) -> int:
    summary = summarize(args.file, retire=False, fmt=args.format)
    if summary.bad:
        _report_bad_rows(args.file, summary.bad, summary.bad_count)
        return EXIT_ERROR
    print(summary.digest)
    return EXIT_CLEAN


def _report_bad_rows(path: Path, bad: list[BadRow], count: int) -> None:
    for b in bad:
        print(f"{path}:{b.line}: {b.problem}", file=sys.stderr)
    shown = f" (the first {len(bad)} shown)" if count > len(bad) else ""
    print(f"hashmatch-client: {count} bad row(s){shown}; nothing was sent", file=sys.stderr)


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
            hashes = client.allow_list()
            if args.json:
                doc = [{"algorithm": NAMES[h.algorithm], "hash": h.value.hex()} for h in hashes]
                _print_json({"hashes": doc})
                return EXIT_CLEAN
            if not hashes:
                print("the allow-list is empty")
            for h in hashes:
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


def _subscriptions(args: argparse.Namespace) -> int:
    with PlatformClient(connection(args)) as client:
        subs = client.subscriptions()
    if args.json:
        _print_json(
            {
                "all_lists": subs.all_lists,
                "lists": list(subs.lists),
                "available": list(subs.available),
            }
        )
        return EXIT_CLEAN
    chosen = "every list" if subs.all_lists else ", ".join(subs.lists) or "no list"
    available = ", ".join(subs.available) or "none"
    print(f"subscribed to {chosen} (available: {available})")
    return EXIT_CLEAN


def _feedback(args: argparse.Namespace) -> int:
    with ListClient(connection(args)) as client:
        refs = client.feedback(args.list, limit=args.limit)
    if args.json:
        _print_json(
            {
                "list": args.list,
                "references": [
                    {
                        "reference_id": ref.reference_id,
                        "total": ref.total,
                        "reasons": {_reason_name(c.reason): c.count for c in ref.counts},
                        "notes": list(ref.notes),
                        "last_reported_at": _iso(ref.last_reported_at),
                    }
                    for ref in refs
                ],
            }
        )
        return EXIT_CLEAN
    if not refs:
        print(f"no feedback for {args.list}")
    for ref in refs:
        reasons = " ".join(f"{_reason_name(c.reason)}={c.count}" for c in ref.counts)
        print(f"{ref.reference_id}\t{ref.total} report(s)\t{reasons}")
        for note in ref.notes:
            print(f"\tnote: {note}")
    return EXIT_CLEAN


def _quarantine(args: argparse.Namespace) -> int:
    with ListClient(connection(args)) as client:
        refs = client.quarantine(args.list)
    if args.json:
        _print_json(
            {
                "list": args.list,
                "references": [
                    {
                        "reference_id": q.reference_id,
                        "since": _iso(q.since),
                        "window_matches": q.window_matches,
                        "baseline": q.baseline,
                    }
                    for q in refs
                ],
            }
        )
        return EXIT_CLEAN
    if not refs:
        print(f"nothing quarantined in {args.list}")
    for q in refs:
        print(
            f"{q.reference_id}\tsince {_iso(q.since)}"
            f"\t{q.window_matches} matches in a window (baseline {q.baseline:.1f})"
        )
    return EXIT_CLEAN


def _stats(args: argparse.Namespace) -> int:
    with ListClient(connection(args)) as client:
        refs = client.reference_stats_detail(args.list, limit=args.limit)
    if args.json:
        _print_json(
            {
                "list": args.list,
                "references": [
                    {
                        "reference_id": r.reference_id,
                        "matches": r.matches,
                        "last_matched_at": _iso(r.last_matched_at),
                    }
                    for r in refs
                ],
            }
        )
        return EXIT_CLEAN
    if not refs:
        print(f"no matches recorded for {args.list}")
    for r in refs:
        print(f"{r.reference_id}\t{r.matches} match(es)\tlast {_iso(r.last_matched_at) or '-'}")
    return EXIT_CLEAN


def _flood_policy(args: argparse.Namespace) -> int:
    options = (args.factor, args.min_matches, args.window_seconds)
    with ListClient(connection(args)) as client:
        policy = client.flood_policy(args.list)
        if any(o is not None for o in options):
            client.set_flood_policy(
                args.list,
                factor=policy.factor if args.factor is None else args.factor,
                min_matches=policy.min_matches if args.min_matches is None else args.min_matches,
                window_seconds=(
                    policy.window_seconds if args.window_seconds is None else args.window_seconds
                ),
            )
            policy = client.flood_policy(args.list)
    if args.json:
        _print_json(
            {
                "list": args.list,
                "factor": policy.factor,
                "min_matches": policy.min_matches,
                "window_seconds": policy.window_seconds,
                "enabled": policy.factor > 0,
            }
        )
        return EXIT_CLEAN
    if not policy.factor:  # off: the other fields mean nothing then
        print(f"{args.list}\tflood quarantine off\tfactor=0")
        return EXIT_CLEAN
    print(
        f"{args.list}\tflood quarantine on\tfactor={policy.factor}\t"
        f"min_matches={policy.min_matches}\twindow_seconds={policy.window_seconds}"
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
            args.name,
            pdq_threshold=args.pdq_threshold,
            pdq_min_quality=args.pdq_min_quality,
            exposed_label_keys=[k.strip() for k in args.expose_labels.split(",") if k.strip()],
        )
    _show_list(info, as_json=args.json)
    return EXIT_CLEAN


def _expose_labels(args: argparse.Namespace) -> int:
    if args.none and args.keys:
        raise ValueError("give label keys or --none, not both")
    with ListClient(connection(args)) as client:
        if args.none or args.keys:
            info = client.set_exposed_labels(args.list, args.keys)
        else:
            info = client.get_list(args.list)
    if args.json:
        _print_json({"list": info.name, "exposed_label_keys": list(info.exposed_label_keys)})
    else:
        print(f"{info.name}\texposed_labels={','.join(info.exposed_label_keys) or '-'}")
    return EXIT_CLEAN


def _get(args: argparse.Namespace) -> int:
    with ListClient(connection(args)) as client:
        info = client.get_list(args.name)
    _show_list(info, as_json=args.json)
    return EXIT_CLEAN


def _lists(args: argparse.Namespace) -> int:
    with ListClient(connection(args)) as client:
        infos = client.list_lists()
    if args.json:
        _print_json({"lists": [_list_doc(i) for i in infos]})
        return EXIT_CLEAN
    if not infos:
        print("no lists visible to this tenant")
    for info in infos:
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
        grants = client.list_grants(args.list)
    if args.json:
        _print_json(
            {
                "list": args.list,
                "grants": [
                    {
                        "tenant": g.tenant,
                        "granted_at": _iso(g.granted_at),
                        "granted_by": g.granted_by,
                    }
                    for g in grants
                ],
            }
        )
        return EXIT_CLEAN
    if not grants:
        print(f"{args.list} is granted to no tenant")
    for g in grants:
        print(f"{g.tenant}\tsince {_iso(g.granted_at)}\tby {g.granted_by}")
    return EXIT_CLEAN


def _parse_iso(text: str | None, option: str) -> datetime | None:
    """An ISO-8601 time ("Z" allowed); without a zone it is UTC."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{option} must be an ISO-8601 time, got {text!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _iso_ms(ts: timestamp_pb2.Timestamp) -> str:
    """ISO-8601 UTC to the millisecond, e.g. 2026-11-30T03:14:00.123Z."""
    moment = ts.ToDatetime(tzinfo=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _audit(args: argparse.Namespace) -> int:
    since = _parse_iso(args.since, "--since")
    until = _parse_iso(args.until, "--until")
    with ListClient(connection(args)) as client:
        records = client.audit_log(
            args.list, since=since, until=until, actions=args.action, limit=args.limit
        )
    if args.json:
        _print_json(
            {
                "list": args.list,
                "records": [
                    {
                        "at": _iso_ms(r.at),
                        "actor": r.actor,
                        "action": r.action,
                        "details": json.loads(r.details or "{}"),
                    }
                    for r in records
                ],
            }
        )
        return EXIT_CLEAN
    if not records:
        print(f"no audit records for {args.list}")
    for r in records:
        print(f"{_iso_ms(r.at)}\t{r.actor}\t{r.action}\t{r.details}")
    return EXIT_CLEAN


def _show_list(info: ListInfo, *, as_json: bool) -> None:
    if as_json:
        _print_json(_list_doc(info))
    else:
        _print_list(info)


def _print_list(info: ListInfo) -> None:
    counts = " ".join(f"{k}={v}" for k, v in info.counts.items())
    exposed = info.exposed_label_keys
    print(
        f"{info.name}\towner={info.owner}\tversion={info.version}\t{counts}\t"
        f"pdq_threshold={info.pdq_threshold}\tpdq_min_quality={info.pdq_min_quality}\t"
        f"digest={info.digest}" + (f"\texposed_labels={','.join(exposed)}" if exposed else "")
    )

"""Meta ThreatExchange exports: the CSV of `threatexchange dataset -P --csv` (a header
naming collab, signal_type, signal_str, category and tags, in any order) and signal lines
`<signal_type> <signal_str>` (`threatexchange dataset -P -S`).

Signal types hashmatch holds: pdq; video_md5, photo_md5 and md5; video_sha256 and sha256.
Any other type (vpdq, video_tmk_pdqf, url, raw_text…) is reported on its line. ThreatExchange
has no per-signal ID, so the reference ID is the collaboration (CSV) or, for signal lines,
the file's name without its extension; the CSV's collab also becomes the `source` label.
Its category is an opinion (TRUE_POSITIVE, WORTH_INVESTIGATING), not a content category,
and differs between the signals of one collaboration, so it is no label; a row whose
category is FALSE_POSITIVE (the collaboration says the signal does not fit) is refused,
never listed. Tags are not read.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from hashmatch.client.algorithms import MD5, NAMES, PDQ, SHA256
from hashmatch.client.listformats.delimited import column_name
from hashmatch.client.listformats.rows import BadRow, Row, parse_row

SIGNAL_TYPES: dict[str, int] = {
    "pdq": PDQ,
    "video_md5": MD5,
    "photo_md5": MD5,
    "md5": MD5,
    "video_sha256": SHA256,
    "sha256": SHA256,
}
_COLUMNS = ("signal_type", "signal_str", "collab", "category", "tags")
_NOT_LISTED = "FALSE_POSITIVE"


def is_csv_header(text: str) -> bool:
    names = {column_name(c) for c in text.split(",")}
    return {"signal_type", "signal_str"} <= names


def is_signal_line(text: str) -> bool:
    parts = text.split()
    return len(parts) == 2 and parts[0].lower() in SIGNAL_TYPES


def _signal(
    line: int, signal_type: str, signal_str: str, reference_id: str, labels: dict[str, str]
) -> Row | BadRow:
    algorithm = SIGNAL_TYPES.get(signal_type.strip().lower())
    if algorithm is None:
        known = ", ".join(SIGNAL_TYPES)
        return BadRow(
            line, f"signal type {signal_type.strip()!r} is not one hashmatch holds ({known})"
        )
    return parse_row(line, NAMES[algorithm], signal_str, reference_id, "", labels=labels)


def read_threatexchange_csv(path: Path) -> Iterator[Row | BadRow]:
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        lines = (
            (line, fields)
            for line, fields in enumerate(csv.reader(f), start=1)
            if any(cell.strip() for cell in fields)
        )
        header = next(lines, None)
        if header is None:
            return
        names = [column_name(c) for c in header[1]]
        columns = {n: names.index(n) for n in _COLUMNS if n in names}
        missing = [n for n in ("signal_type", "signal_str", "collab") if n not in columns]
        if missing:
            yield BadRow(header[0], f"header names no {', '.join(missing)} column")
            return
        for line, fields in lines:
            if len(fields) != len(names):
                yield BadRow(
                    line, f"expected {len(names)} fields as the header names, got {len(fields)}"
                )
                continue
            collab = fields[columns["collab"]].strip()
            category = fields[columns["category"]].strip() if "category" in columns else ""
            if category.upper() == _NOT_LISTED:
                yield BadRow(
                    line,
                    f"category {category}: the collaboration says it does not fit; leave it out",
                )
                continue
            if not collab:
                yield BadRow(line, "collab is empty (it is the reference ID)")
                continue
            signal_type, signal_str = (fields[columns[n]] for n in ("signal_type", "signal_str"))
            yield _signal(line, signal_type, signal_str, collab, {"source": collab})


def read_signal_lines(path: Path) -> Iterator[Row | BadRow]:
    reference_id = path.stem
    with path.open(encoding="utf-8-sig", errors="surrogateescape") as f:
        for line, text in enumerate(f, start=1):
            parts = text.split()
            if not parts:
                continue
            if len(parts) != 2:
                yield BadRow(
                    line, f"expected '<signal_type> <signal_str>', got {len(parts)} fields"
                )
                continue
            yield _signal(line, parts[0], parts[1], reference_id, {})

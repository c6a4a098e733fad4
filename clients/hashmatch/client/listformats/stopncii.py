"""StopNCII.org hash records as JSON: a FetchHashes response (an object whose `hashRecords`
array holds the records), a bare array of records, or one record per line. A record's
`signalType` ImagePDQ or VideoMD5 and `hashValue` make an entry; `hashStatus` Withdrawn or
Deleted makes it a retirement. Any other signal type is reported on its line. Records carry
no ID a platform should see (case numbers stay out), so the reference ID is `stopncii`.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

from hashmatch.client.listformats.rows import BadRow, Row, parse_row

REFERENCE_ID = "stopncii"
SIGNAL_TYPES = {"ImagePDQ": "pdq", "VideoMD5": "md5"}
_RETIRED = {"Withdrawn", "Deleted"}
_LISTED = {"", "Received", "Active"}


def read_stopncii(path: Path) -> Iterator[Row | BadRow]:
    with path.open(encoding="utf-8-sig", errors="surrogateescape") as f:
        text = f.read()
    start = _skip_space(text, 0)
    if _is_record_line(text):
        yield from _record_lines(text)
        return
    try:
        for line, record in _records(text, start):
            yield _row(line, record)
    except ValueError as exc:
        yield BadRow(_line_at(text, getattr(exc, "pos", len(text))), f"not valid JSON: {exc}")


def _is_record_line(text: str) -> bool:
    """Whether the file is one JSON record per line (else it is one JSON document)."""
    first = text.strip().split("\n", 1)[0]
    try:
        record = json.loads(first)
    except ValueError:
        return False
    return isinstance(record, dict) and "signalType" in record


def _record_lines(text: str) -> Iterator[Row | BadRow]:
    for line, body in enumerate(text.split("\n"), start=1):
        if not body.strip():
            continue
        try:
            record = json.loads(body)
        except ValueError as exc:
            yield BadRow(line, f"not valid JSON: {exc}")
            continue
        yield _row(line, record)


_DECODER = json.JSONDecoder()


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _line_at(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _records(text: str, pos: int) -> Iterator[tuple[int, Any]]:
    """(line, record) for each record of the document: its top-level array, or the
    `hashRecords` array of its top-level object. Each record is decoded where it starts,
    so its line is known without holding the whole document as objects."""
    if text.startswith("[", pos):
        yield from _array(text, pos)
        return
    if not text.startswith("{", pos):
        raise json.JSONDecodeError("expected an object or an array", text, pos)
    pos = _skip_space(text, pos + 1)
    found = False
    while not text.startswith("}", pos):
        key, pos = _DECODER.raw_decode(text, pos)
        pos = _skip_space(text, pos)
        if not text.startswith(":", pos):
            raise json.JSONDecodeError("expected ':'", text, pos)
        pos = _skip_space(text, pos + 1)
        if key == "hashRecords":
            found = True
            pos = yield from _array(text, pos)
        else:
            _, pos = _DECODER.raw_decode(text, pos)
        pos = _skip_space(text, pos)
        if text.startswith(",", pos):
            pos = _skip_space(text, pos + 1)
    if not found:
        raise json.JSONDecodeError("the object has no hashRecords array", text, pos)


def _array(text: str, pos: int) -> Generator[tuple[int, Any], None, int]:
    """Each element of the array at `pos` with its line; returns the position after it."""
    if not text.startswith("[", pos):
        raise json.JSONDecodeError("expected an array", text, pos)
    pos = _skip_space(text, pos + 1)
    line, counted = 1, 0
    while not text.startswith("]", pos):
        line += text.count("\n", counted, pos)
        counted = pos
        record, pos = _DECODER.raw_decode(text, pos)
        yield line, record
        pos = _skip_space(text, pos)
        if text.startswith(",", pos):
            pos = _skip_space(text, pos + 1)
        elif not text.startswith("]", pos):
            raise json.JSONDecodeError("expected ',' or ']'", text, pos)
    return pos + 1


def _row(line: int, record: Any) -> Row | BadRow:
    if not isinstance(record, dict):
        return BadRow(line, "a hash record must be a JSON object")
    signal_type = record.get("signalType")
    algorithm = SIGNAL_TYPES.get(signal_type) if isinstance(signal_type, str) else None
    if algorithm is None:
        known = ", ".join(SIGNAL_TYPES)
        return BadRow(line, f"signalType {signal_type!r} is not one hashmatch holds ({known})")
    status = record.get("hashStatus", "")
    if not isinstance(status, str) or status not in _RETIRED | _LISTED:
        known = ", ".join(sorted(_RETIRED | _LISTED - {""}))
        return BadRow(line, f"hashStatus {status!r} is not known ({known})")
    value = record.get("hashValue")
    if not isinstance(value, str):
        return BadRow(line, "hashValue is missing or not text")
    retire = status in _RETIRED
    labels = {} if retire else {"source": REFERENCE_ID}
    return parse_row(line, algorithm, value, REFERENCE_ID, "", retire=retire, labels=labels)

"""CSV and TSV list files, in one of three layouts:

- positional rows of `algorithm,hash_hex,reference_id[,quality]` (a header row is allowed);
- a header row naming `algorithm`, `hash` and `reference_id` (and optionally `quality`) in
  any order;
- a header row with one column per algorithm (`md5`, `sha1`, `sha256`, `pdq`) and a reference
  column: each non-empty hash cell is an entry with the row's reference ID; an optional
  `pdq_quality`/`quality` column goes with the PDQ cell.

In both header-named layouts, columns named after a label key (category, age_band,
classification, baseline, source) give each entry of the row that label; other columns are
ignored. Header names are case-insensitive; spaces and hyphens count as underscores.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hashmatch.client.labels import LABEL_KEYS
from hashmatch.client.listformats.rows import BadRow, Row, parse_row

_REFERENCE_NAMES = {"reference_id", "reference", "ref", "ref_id", "id"}
_HASH_NAMES = {"hash", "hash_hex", "hex"}
_QUALITY_NAMES = {"quality", "pdq_quality"}
_ALGORITHM_COLUMNS = {
    "md5": "md5",
    "sha1": "sha1",
    "sha_1": "sha1",
    "sha256": "sha256",
    "sha_256": "sha256",
    "pdq": "pdq",
}
_KNOWN_NAMES = (
    _REFERENCE_NAMES
    | _HASH_NAMES
    | _QUALITY_NAMES
    | set(_ALGORITHM_COLUMNS)
    | {"algorithm"}
    | set(LABEL_KEYS)
)
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def column_name(cell: str) -> str:
    return "_".join(cell.strip().lower().replace("-", " ").replace("_", " ").split())


def _looks_like_digest(cell: str) -> bool:
    text = cell.strip()
    return len(text) in (32, 40, 64) and set(text) <= _HEX_DIGITS


def _is_header(fields: list[str]) -> bool:
    names = [column_name(f) for f in fields]
    if names[0] == "algorithm":
        return True
    if any(_looks_like_digest(f) for f in fields):
        return False
    if sum(n in _KNOWN_NAMES for n in names) < 2:
        return False
    # A positional data row starts with an algorithm name followed by its hash.
    return not (names[0] in _ALGORITHM_COLUMNS and (len(names) < 2 or names[1] not in _KNOWN_NAMES))


@dataclass(frozen=True)
class _Layout:
    """Column indexes of a header-named file: `algorithm` set for the named layout,
    `per_algorithm` (algorithm name, index) for one column per algorithm."""

    width: int
    reference: int
    quality: int | None
    algorithm: int | None = None
    hash: int | None = None
    per_algorithm: tuple[tuple[str, int], ...] = ()
    labels: tuple[tuple[str, int], ...] = ()

    @property
    def last_required(self) -> int:
        required = [self.reference, *(i for _, i in self.per_algorithm)]
        required += [i for i in (self.algorithm, self.hash) if i is not None]
        return max(required)


def _layout(fields: list[str]) -> _Layout | str:
    """The layout a header row names, or what is wrong with it."""
    names = [column_name(f) for f in fields]
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name not in _KNOWN_NAMES:
            continue
        key = _ALGORITHM_COLUMNS.get(name, name)
        for group, canonical in (
            (_REFERENCE_NAMES, "reference_id"),
            (_HASH_NAMES, "hash"),
            (_QUALITY_NAMES, "quality"),
        ):
            if name in group:
                key = canonical
        if key in seen:
            return f"header names the {key} column twice ({fields[seen[key]]!r}, {fields[i]!r})"
        seen[key] = i
    reference = seen.get("reference_id")
    quality = seen.get("quality")
    hash_col = seen.get("hash")
    per_algorithm = tuple((n, i) for n, i in seen.items() if n in _ALGORITHM_COLUMNS.values())
    labels = tuple((n, i) for n, i in seen.items() if n in LABEL_KEYS)
    if reference is None:
        return "header names no reference column (reference_id, ref or id)"
    if "algorithm" in seen:
        if hash_col is None:
            return "header names an algorithm column but no hash column (hash or hash_hex)"
        if per_algorithm:
            return "header names both an algorithm column and per-algorithm hash columns"
        return _Layout(len(fields), reference, quality, seen["algorithm"], hash_col, labels=labels)
    if not per_algorithm:
        return "header names no hash columns (algorithm and hash, or md5, sha1, sha256, pdq)"
    if hash_col is not None:
        return "header names a hash column without an algorithm column"
    return _Layout(len(fields), reference, quality, per_algorithm=per_algorithm, labels=labels)


def first_line(path: Path) -> str:
    """The first line of the file that is not blank, without a BOM ("" for none)."""
    with path.open(encoding="utf-8-sig", errors="replace") as f:
        for text in f:
            if text.strip():
                return text
    return ""


def read_delimited(path: Path, delimiter: str) -> Iterator[Row | BadRow]:
    layout: _Layout | None = None
    first = True
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        for line, fields in enumerate(csv.reader(f, delimiter=delimiter), start=1):
            if not fields or all(not cell.strip() for cell in fields):
                continue
            if first:
                first = False
                if _is_header(fields):
                    found = _layout(fields)
                    if isinstance(found, _Layout):
                        layout = found
                    elif column_name(fields[0]) != "algorithm":
                        # An older header starting with "algorithm" keeps the positional layout.
                        yield BadRow(line, found)
                        return
                    continue
            if layout is not None:
                yield from _named_row(line, fields, layout)
                continue
            if len(fields) not in (3, 4):
                yield BadRow(
                    line,
                    "expected 3 or 4 fields (algorithm,hash_hex,reference_id[,quality]), "
                    f"got {len(fields)}",
                )
                continue
            yield parse_row(
                line, fields[0], fields[1], fields[2], fields[3] if len(fields) == 4 else ""
            )


def _named_row(line: int, fields: list[str], layout: _Layout) -> Iterator[Row | BadRow]:
    # Trailing cells may be left off only where they are optional (quality, labels, others).
    if len(fields) <= layout.last_required or any(c.strip() for c in fields[layout.width :]):
        yield BadRow(line, f"expected {layout.width} fields as the header names, got {len(fields)}")
        return
    fields = fields + [""] * (layout.width - len(fields))
    reference_id = fields[layout.reference]
    quality = "" if layout.quality is None else fields[layout.quality]
    labels = {key: fields[i] for key, i in layout.labels}
    if layout.algorithm is not None and layout.hash is not None:
        yield parse_row(
            line,
            fields[layout.algorithm],
            fields[layout.hash],
            reference_id,
            quality,
            labels=labels,
        )
        return
    if not reference_id.strip():
        yield BadRow(line, "reference_id is empty")
        return
    cells = [(name, fields[i]) for name, i in layout.per_algorithm if fields[i].strip()]
    if not cells:
        yield BadRow(line, "no hash on this row")
        return
    if quality.strip() and not any(name == "pdq" for name, _ in cells):
        yield BadRow(line, "quality is given but the row has no PDQ hash")
        return
    for name, cell in cells:
        yield parse_row(
            line, name, cell, reference_id, quality if name == "pdq" else "", labels=labels
        )

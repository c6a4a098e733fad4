"""What every list-file reader yields: a row that can be sent, or what is wrong with one."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hashmatch.client.algorithms import PDQ, VPDQ, parse_algorithm, parse_hex_digest
from hashmatch.client.labels import LABEL_KEYS, label_problems

MAX_REFERENCE_BYTES = 128
# The server refuses ASCII control characters in a reference ID.
_ASCII_CONTROL = re.compile("[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Row:
    """One entry of a list file. `retire` marks a deletion (the hash is to be retired);
    `labels` maps label keys (hashmatch.client.labels) to their values (empty when the file
    has none)."""

    line: int
    algorithm: int
    value: bytes
    reference_id: str
    quality: int | None = None
    retire: bool = False
    labels: dict[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class BadRow:
    line: int
    problem: str


def reference_problem(reference_id: str) -> str | None:
    """What the server would refuse in this reference ID, if anything (a phrase to follow
    the field's name)."""
    if not reference_id:
        return "is empty"
    try:
        size = len(reference_id.encode("utf-8"))
    except UnicodeEncodeError:
        # Files are read with surrogateescape, so bytes that are not UTF-8 surface here.
        return "is not valid UTF-8"
    if size > MAX_REFERENCE_BYTES:
        return f"is longer than {MAX_REFERENCE_BYTES} bytes"
    if _ASCII_CONTROL.search(reference_id):
        return "contains control characters"
    return None


def label_problem(key: str, value: str) -> str | None:
    """What the server would refuse in this label, if anything."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # Files are read with surrogateescape, so bytes that are not UTF-8 surface here.
        return f"label {key} is not valid UTF-8"
    problems = label_problems({key: value})
    return f"label {key}: {problems[0][1]}" if problems else None


def parse_row(
    line: int,
    algorithm: str,
    hash_hex: str,
    reference_id: str,
    quality: str,
    *,
    retire: bool = False,
    labels: dict[str, str] | None = None,
) -> Row | BadRow:
    """A row from its text fields, or the first thing wrong with them."""
    try:
        alg = parse_algorithm(algorithm)
        value = parse_hex_digest(alg, hash_hex)
    except ValueError as exc:
        return BadRow(line, str(exc))
    reference_id = reference_id.strip()
    # A retirement names only its hash; a reference given with it is still checked.
    problem = None if retire and not reference_id else reference_problem(reference_id)
    if problem is not None:
        return BadRow(line, f"reference_id {problem}")
    q: int | None = None
    if quality.strip():
        if alg not in (PDQ, VPDQ):
            return BadRow(line, "only PDQ and VPDQ rows carry a quality")
        try:
            q = int(quality)
        except ValueError:
            return BadRow(line, "quality is not a whole number")
        if not 0 <= q <= 100:
            return BadRow(line, "quality must be 0-100")
    # An empty label cell means the entry has no such label.
    kept = {k: v.strip() for k, v in (labels or {}).items() if v.strip() or k not in LABEL_KEYS}
    for key, text in kept.items():
        problem = label_problem(key, text)
        if problem is not None:
            return BadRow(line, problem)
    return Row(line, alg, value, reference_id, q, retire, kept)

"""Reads hotline list files: CSV rows of `algorithm,hash_hex,reference_id`."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hashmatch.client.algorithms import parse_algorithm, parse_hex_digest


@dataclass(frozen=True)
class Row:
    line: int
    algorithm: int
    value: bytes
    reference_id: str


@dataclass(frozen=True)
class BadRow:
    line: int
    problem: str


def read_rows(path: Path) -> Iterator[Row | BadRow]:
    """Yields each data row, or what is wrong with it; a header line is skipped."""
    with path.open(newline="", encoding="utf-8") as f:
        for line, fields in enumerate(csv.reader(f), start=1):
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if line == 1 and fields[0].strip().lower() == "algorithm":
                continue
            yield parse_row(line, fields)


def parse_row(line: int, fields: list[str]) -> Row | BadRow:
    if len(fields) != 3:
        return BadRow(
            line, f"expected 3 fields (algorithm,hash_hex,reference_id), got {len(fields)}"
        )
    try:
        algorithm = parse_algorithm(fields[0])
        value = parse_hex_digest(algorithm, fields[1])
    except ValueError as exc:
        return BadRow(line, str(exc))
    reference_id = fields[2].strip()
    if not reference_id:
        return BadRow(line, "reference_id is empty")
    return Row(line, algorithm, value, reference_id)

"""Reads hotline list files.

CSV: rows of `algorithm,hash_hex,reference_id[,quality]` (a header row is allowed).
JSON lines (`.jsonl`/`.ndjson`): {"algorithm": "pdq", "hash": "<hex>", "reference_id": "...",
"quality": 90} per line, quality optional.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hashmatch.client.algorithms import PDQ, parse_algorithm, parse_hex_digest


@dataclass(frozen=True)
class Row:
    line: int
    algorithm: int
    value: bytes
    reference_id: str
    quality: int | None = None


@dataclass(frozen=True)
class BadRow:
    line: int
    problem: str


def read_rows(path: Path) -> Iterator[Row | BadRow]:
    """Yields each data row, or what is wrong with it, streaming the file."""
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        yield from _read_jsonl(path)
    else:
        yield from _read_csv(path)


def _read_csv(path: Path) -> Iterator[Row | BadRow]:
    with path.open(newline="", encoding="utf-8") as f:
        for line, fields in enumerate(csv.reader(f), start=1):
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if line == 1 and fields[0].strip().lower() == "algorithm":
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


def _read_jsonl(path: Path) -> Iterator[Row | BadRow]:
    with path.open(encoding="utf-8") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
                if not isinstance(obj, dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                yield BadRow(line, f"not a JSON object: {exc}")
                continue
            quality = obj.get("quality")
            yield parse_row(
                line,
                str(obj.get("algorithm", "")),
                str(obj.get("hash", "")),
                str(obj.get("reference_id", "")),
                "" if quality is None else str(quality),
            )


def parse_row(
    line: int, algorithm: str, hash_hex: str, reference_id: str, quality: str
) -> Row | BadRow:
    try:
        alg = parse_algorithm(algorithm)
        value = parse_hex_digest(alg, hash_hex)
    except ValueError as exc:
        return BadRow(line, str(exc))
    reference_id = reference_id.strip()
    if not reference_id:
        return BadRow(line, "reference_id is empty")
    if len(reference_id.encode("utf-8")) > 128:
        return BadRow(line, "reference_id is longer than 128 bytes")
    q: int | None = None
    if quality.strip():
        if alg != PDQ:
            return BadRow(line, "only PDQ rows carry a quality")
        try:
            q = int(quality)
        except ValueError:
            return BadRow(line, "quality is not a whole number")
        if not 0 <= q <= 100:
            return BadRow(line, "quality must be 0-100")
    return Row(line, alg, value, reference_id, q)

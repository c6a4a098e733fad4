"""Reads hotline list files, in the format named (`--format`) or the one detected.

Every reader yields a `Row` per entry or a `BadRow` naming the file line and what is wrong
there, reading the file as a stream (a StopNCII JSON document is read whole, then decoded
one record at a time); the formats and what each accepts are in
`hashmatch.client.listformats` (one module per format) and the README.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from hashmatch.client.listformats.delimited import read_delimited
from hashmatch.client.listformats.detect import FORMATS, detect_format
from hashmatch.client.listformats.jsonlines import read_jsonl
from hashmatch.client.listformats.ncmec import read_ncmec_xml
from hashmatch.client.listformats.rows import BadRow, Row, parse_row
from hashmatch.client.listformats.stopncii import read_stopncii
from hashmatch.client.listformats.threatexchange import (
    read_signal_lines,
    read_threatexchange_csv,
)

__all__ = ["FORMATS", "BadRow", "Row", "detect_format", "parse_row", "read_rows"]

_READERS: dict[str, Callable[[Path], Iterator[Row | BadRow]]] = {
    "csv": lambda path: read_delimited(path, ","),
    "tsv": lambda path: read_delimited(path, "\t"),
    "jsonl": read_jsonl,
    "threatexchange-csv": read_threatexchange_csv,
    "threatexchange-signals": read_signal_lines,
    "ncmec-xml": read_ncmec_xml,
    "stopncii-json": read_stopncii,
}


def read_rows(path: Path, fmt: str | None = None) -> Iterator[Row | BadRow]:
    """Yields each entry of the file, or what is wrong with it, streaming the file.
    `fmt` is one of FORMATS; None detects it from the file."""
    if fmt is None:
        fmt = detect_format(path)
    elif fmt not in _READERS:
        raise ValueError(f"unknown list format {fmt!r} (known: {', '.join(FORMATS)})")
    return _READERS[fmt](path)

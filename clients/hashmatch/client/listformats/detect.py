"""Which format a list file is in: named by the user, or told from its name and first line."""

from __future__ import annotations

import json
from pathlib import Path

from hashmatch.client.listformats import threatexchange
from hashmatch.client.listformats.delimited import first_line

# Names for --format, with what each reads.
FORMATS: dict[str, str] = {
    "csv": "hashmatch CSV (positional, header-named, or one column per algorithm)",
    "tsv": "the same, tab-separated",
    "jsonl": "hashmatch JSON lines",
    "threatexchange-csv": "Meta ThreatExchange CSV export (signal_type, signal_str, collab, …)",
    "threatexchange-signals": "ThreatExchange signal lines: <signal_type> <signal_str>",
    "ncmec-xml": "NCMEC hash-sharing XML (entries with id, classification, fingerprints)",
    "stopncii-json": "StopNCII.org hash records (signalType, hashValue) as JSON",
}


def detect_format(path: Path) -> str:
    """The format of the file, told from its first line that is not blank (and its name
    for the ambiguous cases). A file of one format is never taken for another: each
    format's first line has a mark the others lack."""
    text = first_line(path).strip()
    suffix = path.suffix.lower()
    if text.startswith("<"):
        return "ncmec-xml"
    if text.startswith("["):
        return "stopncii-json"
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            # Not an object on one line: a JSON document spread over lines.
            return "jsonl" if suffix in (".jsonl", ".ndjson") else "stopncii-json"
        if isinstance(obj, dict) and ("signalType" in obj or "hashRecords" in obj):
            return "stopncii-json"
        return "jsonl"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if threatexchange.is_csv_header(text):
        return "threatexchange-csv"
    if threatexchange.is_signal_line(text):
        return "threatexchange-signals"
    if suffix == ".tsv" or "\t" in text:
        return "tsv"
    return "csv"

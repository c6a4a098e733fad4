"""Scan reports: one record per file, as JSON lines (``.jsonl``) or CSV (``.csv``).

Every record has ``path``, ``verdict`` (MATCH, NO_MATCH, SKIPPED, ERROR), ``references`` and
``reason``. In JSON lines ``references`` is a list of ``{"list", "reference_id",
"list_version", "labels"}`` objects (``list_version``: the list's version that gave the
match; ``labels``: the entry's labels its list's owner shows, ``{}`` when none) and
``reason`` is null when there is none. In CSV ``references`` is ``list:reference_id`` pairs
joined by ``;`` (a ``%`` or ``;`` inside a reference ID is written ``%25`` / ``%3B``; list names
never contain them), ``list_versions`` the version of each reference's list in the same order
joined by ``;``, ``labels`` each reference's labels in the same order joined by ``;``, each
as ``key=value`` pairs joined by ``,`` (a ``%``, ``;`` or ``,`` in a value is written ``%25``,
``%3B``, ``%2C``; empty for a reference without labels), and an empty ``reason`` means
none.

Paths that are not valid UTF-8 keep their undecodable bytes as ``\\udcXX`` escapes, so the
report is always valid UTF-8 (and, for JSON lines, decodes back to Python's path string).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import IO, Protocol

from hashmatch.client.results import FileResult

CSV_COLUMNS = ("path", "verdict", "references", "reason", "list_versions", "labels")


class ReportWriter(Protocol):
    path: Path

    def write(self, result: FileResult) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def _open_text(path: Path) -> IO[str]:
    # backslashreplace: a lone surrogate from an undecodable file name becomes "\udcXX".
    return path.open("w", encoding="utf-8", errors="backslashreplace", newline="")


class JsonLinesReport:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._out = _open_text(path)

    def write(self, result: FileResult) -> None:
        self._out.write(json.dumps(result.to_record(), ensure_ascii=False) + "\n")

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        self._out.close()


def _escape_ref(text: str) -> str:
    return text.replace("%", "%25").replace(";", "%3B")


def _labels_cell(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={_escape_ref(v).replace(',', '%2C')}" for k, v in labels.items())


class CsvReport:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._out = _open_text(path)
        self._csv = csv.writer(self._out, lineterminator="\n")
        self._csv.writerow(CSV_COLUMNS)

    def write(self, result: FileResult) -> None:
        refs = ";".join(f"{r.list}:{_escape_ref(r.reference_id)}" for r in result.references)
        versions = ";".join(str(r.list_version) for r in result.references)
        labels = ";".join(_labels_cell(r.labels) for r in result.references)
        self._csv.writerow(
            [result.path, result.verdict.value, refs, result.reason or "", versions, labels]
        )

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        self._out.close()


def open_report(path: str | os.PathLike[str]) -> ReportWriter:
    """A writer chosen by the file's suffix: ``.jsonl`` or ``.csv``; anything else is refused."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        return JsonLinesReport(p)
    if suffix == ".csv":
        return CsvReport(p)
    raise ValueError(f"report file must end in .jsonl or .csv: {p}")


class NullReport:
    """No report file: records are dropped (the CLI still prints matches)."""

    path = Path(os.devnull)

    def write(self, result: FileResult) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

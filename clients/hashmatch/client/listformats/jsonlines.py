"""hashmatch's own JSON lines list files (`.jsonl`/`.ndjson`), one object per line:
{"algorithm": "pdq", "hash": "<hex>", "reference_id": "...", "quality": 90,
"labels": {"category": "A"}, "retire": false} — quality, labels and retire optional."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hashmatch.client.listformats.rows import BadRow, Row, parse_row


def read_jsonl(path: Path) -> Iterator[Row | BadRow]:
    with path.open(encoding="utf-8-sig", errors="surrogateescape") as f:
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
            yield _row(line, obj)


def _row(line: int, obj: dict[str, Any]) -> Row | BadRow:
    quality = obj.get("quality")
    labels = obj.get("labels", {})
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        return BadRow(line, "labels must be an object of text values")
    retire = obj.get("retire", False)
    if not isinstance(retire, bool):
        return BadRow(line, "retire must be true or false")
    return parse_row(
        line,
        str(obj.get("algorithm", "")),
        str(obj.get("hash", "")),
        str(obj.get("reference_id", "")),
        "" if quality is None else str(quality),
        retire=retire,
        labels=labels,
    )

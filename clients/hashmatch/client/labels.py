"""Labels on list entries: the documented keys, their rules, and their digest form.

A hotline may say of each entry what platforms decide by: its ``category`` (IWF's A/B/C,
C3P's csam or harmful-abusive, Thorn's CSAM or SE), ``age_band``, ``classification``
(NCMEC's e.g. ``A1``), ``baseline`` (the INTERPOL Baseline flag) and ``source``. Values
are free text: UTF-8, 1-64 bytes, no control characters. A platform sees in a verdict only
the keys the list's owner exposes (none unless it chooses some).

The list digest covers labels: an entry's term hashes its reference ID followed, for each
label in key order, by a zero byte, the key, ``=`` and the value, so an entry without
labels adds exactly what it added before labels existed. The server's core keeps the same
rules (a test holds the two to each other).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping

# In the order the digest takes them (sorted).
LABEL_KEYS = ("age_band", "baseline", "category", "classification", "source")
MAX_LABEL_BYTES = 64


def label_problems(labels: Mapping[str, str]) -> list[tuple[str, str]]:
    """(key, what is wrong) for each label the service would refuse."""
    out: list[tuple[str, str]] = []
    for key, value in labels.items():
        if key not in LABEL_KEYS:
            out.append((key, f"unknown label key {key!r}; the keys are {', '.join(LABEL_KEYS)}"))
            continue
        size = len(value.encode("utf-8", "surrogatepass"))
        if not 1 <= size <= MAX_LABEL_BYTES:
            out.append((key, f"must be 1-{MAX_LABEL_BYTES} bytes of UTF-8, got {size}"))
        elif any(unicodedata.category(c) == "Cc" for c in value):
            out.append((key, "must not contain control characters"))
    return out


def unknown_keys(keys: list[str] | tuple[str, ...]) -> list[str]:
    """The keys of `keys` that are not label keys."""
    return [k for k in keys if k not in LABEL_KEYS]


def stored_labels(labels: Mapping[str, str]) -> bytes:
    """What labels add to an entry's digest term (b"" for none)."""
    return b"".join(
        b"\0" + key.encode() + b"=" + labels[key].encode("utf-8")
        for key in LABEL_KEYS
        if key in labels
    )

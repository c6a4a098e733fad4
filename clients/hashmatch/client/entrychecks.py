"""The checks the server makes on each entry of a batch, made on the client first, so a
file the server would refuse is refused before anything is sent, by file line.

They must agree with the server's (hashcore/src/changes.rs; tests/test_entry_checks.py
holds them to a real server): a PDQ upsert is refused when it is degenerate, else when its
quality is below the list's minimum; a hash may appear once (upserts and retirements
alike); the upserts of one reference ID carry the same labels. Retirements are not held to
quality, degeneracy or labels: any listed hash can be retired. The server checks labels
within a batch; the client within the whole file, so that no batch boundary decides which
labels a reference gets.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from hashmatch.client.algorithms import NAMES, PDQ, VPDQ
from hashmatch.client.listformats.rows import BadRow, Row

# A PDQ hash with fewer or more set bits than these is that of a flat or blank image,
# which would match other such images.
PDQ_MIN_BITS = 16
PDQ_MAX_BITS = 240


def is_degenerate_pdq(value: bytes) -> bool:
    ones = int.from_bytes(value, "big").bit_count()
    return not PDQ_MIN_BITS <= ones <= PDQ_MAX_BITS


def entry_problem(row: Row, *, retire: bool, pdq_min_quality: int | None) -> str | None:
    """Why the server would refuse this row's entry on its own, if it would."""
    # A VPDQ entry is one frame of a video: a PDQ hash under PDQ's rules.
    if retire or row.retire or row.algorithm not in (PDQ, VPDQ):
        return None
    if is_degenerate_pdq(row.value):
        return (
            f"degenerate PDQ hash (a flat or blank image: fewer than {PDQ_MIN_BITS} or more "
            f"than {PDQ_MAX_BITS} of 256 bits set)"
        )
    if pdq_min_quality is not None and row.quality is not None and row.quality < pdq_min_quality:
        return f"PDQ quality {row.quality} is below the list's minimum {pdq_min_quality}"
    return None


def check_rows(
    rows: Iterable[Row | BadRow], *, retire: bool = False, pdq_min_quality: int | None = None
) -> Iterator[Row | BadRow]:
    """The rows, each bad one replaced by what is wrong with it: a refused entry, or a hash
    already on an earlier line (both lines named). `retire` makes every row a retirement;
    `pdq_min_quality` is the list's (None: not checked, e.g. no list at hand)."""
    first_line: dict[bytes, int] = {}
    # Per reference ID: the first line that upserts it, and its labels.
    labelled: dict[str, tuple[int, tuple[tuple[str, str], ...]]] = {}
    for row in rows:
        if isinstance(row, BadRow):
            yield row
            continue
        key = bytes((row.algorithm,)) + row.value
        earlier = first_line.get(key)
        if earlier is not None:
            yield BadRow(row.line, f"repeats the {NAMES[row.algorithm]} hash of line {earlier}")
            continue
        first_line[key] = row.line
        problem = entry_problem(row, retire=retire, pdq_min_quality=pdq_min_quality)
        if problem is None and not (retire or row.retire):
            labels = tuple(sorted(row.labels.items()))
            line, first = labelled.setdefault(row.reference_id, (row.line, labels))
            if first != labels:
                problem = (
                    f"labels differ from those of line {line}, which has the same reference ID"
                )
        yield row if problem is None else BadRow(row.line, problem)

"""Shared settings and the summary table of the hashcore benchmarks.

Sizes and query counts come from the environment so the default run stays short:

- ``HASHCORE_BENCH_SIZES``   comma-separated corpus sizes (default ``1000000``;
  the full sign-off run uses ``1000000,10000000``)
- ``HASHCORE_BENCH_QUERIES`` queries per measurement (default 2000)
- ``HASHCORE_BENCH_PEERS``   ``1`` (default) to also measure FAISS / threatexchange when
  installed, ``0`` to skip them
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

SIZES = [int(s) for s in os.environ.get("HASHCORE_BENCH_SIZES", "1000000").split(",") if s]
QUERIES = int(os.environ.get("HASHCORE_BENCH_QUERIES", "2000"))
PEERS = os.environ.get("HASHCORE_BENCH_PEERS", "1") != "0"

_ROWS: list[dict[str, object]] = []


@pytest.fixture(scope="session")
def report() -> Iterator[list[dict[str, object]]]:
    yield _ROWS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _ROWS:
        return
    tr = terminalreporter
    tr.section("hashcore benchmark summary")
    keys: list[str] = []
    for row in _ROWS:
        keys += [k for k in row if k not in keys]
    widths = {k: max(len(k), *(len(_fmt(r.get(k))) for r in _ROWS)) for k in keys}
    tr.write_line("  ".join(k.ljust(widths[k]) for k in keys))
    for row in _ROWS:
        tr.write_line("  ".join(_fmt(row.get(k)).ljust(widths[k]) for k in keys))


def _fmt(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)

"""The progress line: sized to the terminal it is drawn on, one measure for %, rate and ETA."""

from __future__ import annotations

import io
import os
import re

import pytest

from hashmatch.client import progress as progress_module
from hashmatch.client.progress import Progress, format_bytes


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    """A stream that says it is a terminal (fd 99); its size comes from the patched function."""

    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        return 99


@pytest.fixture
def columns(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Forces the size of fd 99; any other fd (stdout's) would be a wide terminal."""
    width = [60]

    def get_terminal_size(fd: int = 1) -> os.terminal_size:
        return os.terminal_size((width[0] if fd == 99 else 500, 24))

    monkeypatch.setattr(progress_module.os, "get_terminal_size", get_terminal_size)
    monkeypatch.delenv("COLUMNS", raising=False)
    return width


def drawn_lines(stream: io.StringIO) -> list[str]:
    return [part.rstrip(" ") for part in stream.getvalue().split("\r") if part.strip()]


def test_lines_follow_the_width_of_the_progress_stream(columns: list[int]) -> None:
    clock = FakeClock()
    stream = Terminal()
    bar = Progress(2900, 2_900_000_000, stream=stream, clock=clock)
    assert bar.enabled  # a terminal: drawn
    for width in (120, 80, 60, 40, 20, 8):
        columns[0] = width
        for _ in range(50):
            clock.now += 0.5
            bar.advance(1, 1_000_000, matched=1)
        for part in stream.getvalue().split("\r"):
            assert len(part) <= width - 1, (width, part)
        stream.seek(0)
        stream.truncate()
    columns[0] = 200
    clock.now += 0.5
    bar.advance(1, 1_000_000)
    wide = drawn_lines(stream)[-1]
    assert "matched" in wide and "files" in wide  # nothing left out when there is room
    assert len(wide) > 79  # not cut to 79 columns: the terminal is wider


def test_narrow_terminal_drops_whole_fields_not_half_words(columns: list[int]) -> None:
    clock = FakeClock()
    stream = Terminal()
    columns[0] = 40
    bar = Progress(100, 100_000_000, stream=stream, clock=clock)
    clock.now += 10
    bar.advance(10, 10_000_000)
    line = drawn_lines(stream)[-1]
    assert len(line) <= 39
    assert re.search(r"\b10%", line) and "ETA 1:30" in line  # the essentials stay


def test_percentage_rate_and_eta_all_follow_bytes(columns: list[int]) -> None:
    columns[0] = 200
    clock = FakeClock()
    bar = Progress(4, 4_000_000_000, stream=Terminal(), clock=clock)
    # One big file first: 1 file of 4 (25%) but 3 GB of 4 GB (75%).
    clock.now += 30
    bar.advance(1, 3_000_000_000)
    line = bar.line()
    assert "75%" in line and "25%" not in line
    assert "3.0/4.0 GB" in line
    assert "100.0 MB/s" in line  # 3 GB in 30 s
    assert "ETA 0:10" in line  # 1 GB left at 100 MB/s: agrees with 75% after 30 s
    assert "1/4 files" in line  # the count is shown, labelled, but drives nothing
    percent = int(re.search(r"(\d+)%", line).group(1))  # type: ignore[union-attr]
    eta = 10
    assert percent / 100 == pytest.approx(30 / (30 + eta))


def test_items_are_the_measure_when_sizes_are_unknown(columns: list[int]) -> None:
    columns[0] = 200
    clock = FakeClock()
    bar = Progress(1000, 0, stream=Terminal(), clock=clock, unit="rows")
    clock.now += 20
    bar.advance(250)
    line = bar.line()
    assert "25%" in line and "250/1,000 rows" in line and "12.5 rows/s" in line
    assert "ETA 1:00" in line and "B/s" not in line


def test_nothing_is_drawn_to_a_stream_that_is_not_a_terminal(columns: list[int]) -> None:
    clock = FakeClock()
    stream = io.StringIO()  # no fileno, not a TTY; stdout may be a terminal: irrelevant
    bar = Progress(10, 10_000_000, stream=stream, clock=clock)
    assert not bar.enabled
    for _ in range(10):
        clock.now += 1
        bar.advance(1, 1_000_000, matched=1)
    bar.close()
    assert stream.getvalue() == ""


def test_width_falls_back_when_the_stream_has_no_size(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_size(fd: int = 1) -> os.terminal_size:
        raise OSError("not a terminal")

    monkeypatch.setattr(progress_module.os, "get_terminal_size", no_size)
    monkeypatch.setenv("COLUMNS", "50")
    assert progress_module.terminal_columns(Terminal()) == 50
    monkeypatch.delenv("COLUMNS")
    assert progress_module.terminal_columns(io.StringIO()) == 80


def test_close_erases_the_line(columns: list[int]) -> None:
    clock = FakeClock()
    stream = Terminal()
    bar = Progress(2, 2000, stream=stream, clock=clock)
    clock.now += 1
    bar.advance(2, 2000)
    bar.close()
    assert stream.getvalue().endswith("\r")
    last = stream.getvalue().split("\r")[-2]
    assert last.strip() == ""


def test_format_bytes() -> None:
    assert format_bytes(0) == "0 B"
    assert format_bytes(999) == "999 B"
    assert format_bytes(1_500) == "1.5 kB"
    assert format_bytes(2_900_000_000) == "2.9 GB"

"""A one-line progress bar on standard error, sized to that terminal. Silent off a TTY.

One measure drives the percentage, the rate and the ETA: bytes when the total size is known
(``scan`` hashes files, so bytes are the work), else items (``unit``: files, or list rows for
``push``). In byte mode the item count follows, labelled, after a ``|``. When the terminal is
narrow whole fields are left out (count, matched, bar, rate) rather than cutting words.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

MB = 1_000_000
_REDRAW_SECONDS = 0.1
_FALLBACK_COLUMNS = 80
_BAR_WIDTH = 20
_MIN_BAR_WIDTH = 5
_BYTE_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")
# Fields left out first when the line does not fit, in order; percentage and ETA always stay.
_DROP_ORDER = ("count", "matched", "bar", "rate", "amount")


def format_duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _byte_unit(value: float) -> int:
    """Index in _BYTE_UNITS of the largest unit that keeps ``value`` at 1 or more."""
    index = 0
    while index + 1 < len(_BYTE_UNITS) and value >= 1000 ** (index + 1):
        index += 1
    return index


def _in_unit(value: float, index: int) -> str:
    return f"{value:.0f}" if index == 0 else f"{value / 1000**index:.1f}"


def format_bytes(value: float) -> str:
    index = _byte_unit(value)
    return f"{_in_unit(value, index)} {_BYTE_UNITS[index]}"


def terminal_columns(stream: TextIO) -> int:
    """Width of the terminal ``stream`` is drawn on (not stdout's); else $COLUMNS, else 80."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        columns = 0
    if columns > 0:
        return columns
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    return columns if columns > 0 else _FALLBACK_COLUMNS


class Progress:
    """Redrawn in place at most every 0.1 s; ``enabled=None`` means "when stream is a TTY"."""

    def __init__(
        self,
        total_files: int,
        total_bytes: int,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        unit: str = "files",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total_files = total_files
        self.total_bytes = total_bytes
        self.files = 0
        self.bytes = 0
        self.matched = 0
        self.clock = clock
        self.started = clock()
        self._drawn = 0.0
        self._width = 0

    @property
    def by_bytes(self) -> bool:
        """True when bytes are the measure (the total size is known), else items."""
        return self.total_bytes > 0

    def advance(self, files: int = 1, size: int = 0, matched: int = 0) -> None:
        self.files += files
        self.bytes += size
        self.matched += matched
        now = self.clock()
        finished = self.files >= self.total_files and (
            not self.by_bytes or self.bytes >= self.total_bytes
        )
        if self.enabled and (now - self._drawn >= _REDRAW_SECONDS or finished):
            self._drawn = now
            self._draw(now)

    def _fields(self, now: float) -> tuple[float, dict[str, str]]:
        """The share done and the line's fields, all from the one measure."""
        elapsed = max(now - self.started, 1e-9)
        if self.by_bytes:
            done, total = self.bytes, self.total_bytes
            index = _byte_unit(total)
            amount = f"{_in_unit(done, index)}/{_in_unit(total, index)} {_BYTE_UNITS[index]}"
            speed = done / elapsed
            # The rate in the total's unit or a smaller one: never "0.0 GB/s".
            rate_index = min(_byte_unit(speed), index)
            rate = f"{_in_unit(speed, rate_index)} {_BYTE_UNITS[rate_index]}/s"
        else:
            done, total = self.files, self.total_files
            amount = f"{done:,}/{total:,} {self.unit}"
            speed = done / elapsed
            rate = f"{speed:.1f} {self.unit}/s"
        fraction = min(done / total, 1.0) if total else 1.0
        if total and done >= total:
            left: float | None = 0.0
        elif done:
            left = (total - done) / speed
        else:
            left = None
        fields = {
            "percent": f"{int(fraction * 100):3d}%",
            "amount": amount,
            "rate": rate,
            "eta": "ETA " + (format_duration(max(left, 0.0)) if left is not None else "?"),
        }
        if self.by_bytes:
            fields["count"] = (
                f"{self.files:,}/{self.total_files:,} {self.unit} "
                f"{self.files / elapsed:.1f} {self.unit}/s"
            )
        if self.matched:
            fields["matched"] = f"{self.matched:,} matched"
        return fraction, fields

    @staticmethod
    def _render(fraction: float, fields: dict[str, str], shown: set[str], bar_width: int) -> str:
        head = []
        if "bar" in shown:
            filled = int(fraction * bar_width)
            head.append("[" + "#" * filled + "." * (bar_width - filled) + "]")
        head.append(fields["percent"])
        if "amount" in shown:
            head.append(fields["amount"])
        main = [" ".join(head)]
        if "rate" in shown:
            main.append(fields["rate"])
        main.append(fields["eta"])
        parts = ["  ".join(main)]
        parts += [fields[key] for key in ("count", "matched") if key in shown and key in fields]
        return " | ".join(parts)

    def line(self, now: float | None = None, width: int | None = None) -> str:
        """The progress line; with ``width``, at most that many characters (fields left out)."""
        fraction, fields = self._fields(now if now is not None else self.clock())
        shown = {"bar", "amount", "rate", "count", "matched"}
        text = self._render(fraction, fields, shown, _BAR_WIDTH)
        if width is None:
            return text
        for key in _DROP_ORDER:
            if len(text) <= width:
                return text
            if key == "bar":
                narrower = _BAR_WIDTH - (len(text) - width)
                if narrower >= _MIN_BAR_WIDTH:
                    return self._render(fraction, fields, shown, narrower)
            shown.discard(key)
            text = self._render(fraction, fields, shown, _BAR_WIDTH)
        return text.strip()[:width]

    def _draw(self, now: float) -> None:
        # The last column is left free: writing there makes some terminals wrap.
        limit = max(terminal_columns(self.stream) - 1, 1)
        text = self.line(now, limit)
        pad = " " * max(min(self._width, limit) - len(text), 0)
        self._width = len(text)
        self.stream.write("\r" + text + pad)
        self.stream.flush()

    def close(self) -> None:
        """Erases the bar so the summary starts on a clean line."""
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

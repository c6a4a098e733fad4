"""A one-line progress bar on standard error: count, rate, MB/s and ETA. Silent off a TTY.

Counts files for `scan` and list rows for `push` (`unit`); MB/s shows when sizes are known.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

MB = 1_000_000
_REDRAW_SECONDS = 0.1


def format_duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


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
    ) -> None:
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total_files = total_files
        self.total_bytes = total_bytes
        self.files = 0
        self.bytes = 0
        self.matched = 0
        self.started = time.monotonic()
        self._drawn = 0.0
        self._width = 0

    def advance(self, files: int = 1, size: int = 0, matched: int = 0) -> None:
        self.files += files
        self.bytes += size
        self.matched += matched
        now = time.monotonic()
        if self.enabled and (
            now - self._drawn >= _REDRAW_SECONDS or self.files >= self.total_files
        ):
            self._drawn = now
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        elapsed = max((now if now is not None else time.monotonic()) - self.started, 1e-9)
        rate = self.files / elapsed
        mbps = self.bytes / MB / elapsed
        # ETA by bytes when sizes are known (files differ in size), else by count.
        if self.total_bytes and self.bytes:
            left = (self.total_bytes - self.bytes) / (self.bytes / elapsed)
        elif self.files:
            left = (self.total_files - self.files) / rate
        else:
            left = None
        done = self.files / self.total_files if self.total_files else 1.0
        bar_width = 20
        filled = int(done * bar_width)
        bar = "#" * filled + "." * (bar_width - filled)
        eta = format_duration(max(left, 0.0)) if left is not None else "?"
        matched = f", {self.matched} matched" if self.matched else ""
        volume = f"  {mbps:.1f} MB/s" if self.total_bytes else ""
        return (
            f"[{bar}] {done:4.0%} {self.files}/{self.total_files} {self.unit}{matched}  "
            f"{rate:.1f} {self.unit}/s{volume}  ETA {eta}"
        )

    def _draw(self, now: float) -> None:
        columns = shutil.get_terminal_size((80, 24)).columns
        text = self.line(now)[: max(columns - 1, 10)]
        pad = " " * max(self._width - len(text), 0)
        self._width = len(text)
        self.stream.write("\r" + text + pad)
        self.stream.flush()

    def close(self) -> None:
        """Erases the bar so the summary starts on a clean line."""
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

"""Structured logs: one JSON object per line (or plain text on a terminal).

The per-RPC line carries method, status code, duration, tenant, item count and peer — and
by construction nothing else: the RPC layer passes only those fields, never a request.
A query hash or an `item_id` therefore cannot reach the log.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import weakref
from typing import Any, TextIO

RPC_LOGGER = "hashmatch.rpc"
# Attributes every LogRecord has; anything else was passed with `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


# How long a log line may wait in the buffer before it is written (seconds).
FLUSH_INTERVAL = 0.1
MAX_PENDING = 512


# One encoder for every line (json.dumps with options builds a new one per call).
_ENCODE = json.JSONEncoder(default=str, separators=(",", ":")).encode


def json_line(
    created: float, level: str, logger: str, pid: int | None, msg: str, fields: dict[str, Any]
) -> str:
    """One JSON log line: the standard keys, then `fields` in their order."""
    out: dict[str, Any] = {
        "ts": _iso(created),
        "level": level,
        "logger": logger,
        "pid": pid,
        "msg": msg,
    }
    out.update(fields)
    return _ENCODE(out)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = {
            key: value
            for key, value in vars(record).items()
            if key not in _STANDARD and not key.startswith("_")
        }
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        return json_line(
            record.created,
            record.levelname.lower(),
            record.name,
            record.process,
            record.getMessage(),
            fields,
        )


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if extra:
            text += " " + " ".join(f"{k}={v}" for k, v in extra.items() if not k.startswith("_"))
        return text


_second: tuple[int, str] = (-1, "")


def _iso(created: float) -> str:
    global _second
    whole = int(created)
    second = _second
    if second[0] != whole:  # one strftime per second, not per line
        second = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{second[1]}.{int(created % 1 * 1000):03d}Z"


class BufferedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that collects lines and writes them together, at most
    FLUSH_INTERVAL seconds after the first (at once for warnings and errors, when
    MAX_PENDING lines wait, and on flush or close).

    One RPC log line per call would otherwise cost a write system call per call (stderr
    is line-buffered); on a busy serving process that is a GIL hand-off and a context
    switch (and, behind a pipe, a wake-up of the reader) per request.
    """

    def __init__(self, stream: TextIO | None = None, interval: float = FLUSH_INTERVAL) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._closed = threading.Event()
        # The flusher holds only a weak reference, so a dropped handler is collected.
        thread = threading.Thread(
            target=_flush_every,
            args=(weakref.ref(self), interval, self._closed),
            name="log-flush",
            daemon=True,
        )
        thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        # Called with the handler's lock held.
        try:
            self._pending.append(self.format(record))
            if record.levelno >= logging.WARNING or len(self._pending) >= MAX_PENDING:
                self._write_pending()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def add_line(self, line: str) -> None:
        """Queues a line formatted elsewhere (see `direct_json_handler`)."""
        self.acquire()
        try:
            self._pending.append(line)
            if len(self._pending) >= MAX_PENDING:
                self._write_pending()
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": "log line"}))
        finally:
            self.release()

    def _write_pending(self) -> None:
        if self._pending:
            lines, self._pending = self._pending, []
            lines.append("")
            self.stream.write(self.terminator.join(lines))
            self.stream.flush()

    def flush(self) -> None:
        self.acquire()
        try:
            self._write_pending()
        finally:
            self.release()

    def close(self) -> None:
        self._closed.set()
        try:
            self.flush()
        finally:
            super().close()


def direct_json_handler(logger: logging.Logger) -> BufferedStreamHandler | None:
    """The one handler an INFO record of `logger` would reach, when that handler is a plain
    BufferedStreamHandler with a JsonFormatter and nothing on the way filters records.

    Then a caller may build the JSON line itself (`json_line`) and hand it to
    `add_line`: the same line the logging machinery would write, without a LogRecord.
    In any other set-up (other handlers, filters, formatters) it returns None.
    """
    if logger.manager.disable >= logging.INFO:
        return None
    found: BufferedStreamHandler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters or current.disabled:
            return None
        for handler in current.handlers:
            if (
                found is not None
                or type(handler) is not BufferedStreamHandler
                or type(handler.formatter) is not JsonFormatter
                or handler.filters
                or handler.level > logging.INFO
            ):
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    return found


def _flush_every(
    ref: weakref.ReferenceType[BufferedStreamHandler], interval: float, closed: threading.Event
) -> None:
    while not closed.wait(interval):
        handler = ref()
        if handler is None:
            return
        try:
            if handler._pending:
                handler.flush()
        except Exception:  # a closed or broken stream: nothing left to flush to
            return
        del handler


def configure(log_format: str = "auto", level: str = "INFO", stream: TextIO | None = None) -> None:
    """Sets up the root logger of a serving process (the CLI calls this once)."""
    out = stream if stream is not None else sys.stderr
    use_json = log_format == "json" or (log_format == "auto" and not out.isatty())
    handler = BufferedStreamHandler(out)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())

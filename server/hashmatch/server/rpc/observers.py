"""What happens to a finished call: one log line, and the RPC metrics.

Both receive only the `Call` record (method, code, duration, tenant, item count, peer),
so neither can log or label a hash, an item ID or a reference ID.
"""

from __future__ import annotations

import logging
import os
import time

import grpc
from prometheus_client import Counter, Histogram

from hashmatch.server.logs import RPC_LOGGER, direct_json_handler, json_line
from hashmatch.server.metrics import Metrics
from hashmatch.server.rpc.pipeline import Call


class RpcLog:
    """One INFO line per RPC on the `hashmatch.rpc` logger."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger if logger is not None else logging.getLogger(RPC_LOGGER)

    def __call__(self, call: Call) -> None:
        log = self.log
        if call.quiet or not log.isEnabledFor(logging.INFO):
            return
        fields = {
            "method": call.method,
            "code": call.code.name,
            "duration_ms": round(call.duration * 1000, 3),
            "tenant": call.tenant or None,
            "items": call.items,
            "peer": call.peer,
        }
        handler = direct_json_handler(log)
        if handler is not None:
            # The serving set-up (logs.configure, JSON): the line the handler would write,
            # built directly; a LogRecord and its formatting cost more than the call itself.
            pid = os.getpid() if logging.logProcesses else None
            handler.add_line(json_line(time.time(), "info", log.name, pid, "rpc", fields))
            return
        # makeRecord + handle is what Logger.info does, minus the search of the caller's
        # frame (file and line of this function are constant and printed by no formatter).
        log.handle(
            log.makeRecord(log.name, logging.INFO, __file__, 0, "rpc", (), None, extra=fields)
        )


class RpcMetrics:
    """Counts by method and code, latency by method, match items by method."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        # Label lookups are cached: they cost more than the increment itself.
        self._counts: dict[tuple[str, grpc.StatusCode], Counter] = {}
        self._latency: dict[str, Histogram] = {}
        self._items: dict[str, Counter] = {}

    def __call__(self, call: Call) -> None:
        key = (call.method, call.code)
        count = self._counts.get(key)
        if count is None:
            count = self._counts[key] = self.metrics.rpcs.labels(call.method, call.code.name)
        count.inc()
        latency = self._latency.get(call.method)
        if latency is None:
            latency = self._latency[call.method] = self.metrics.latency.labels(call.method)
        latency.observe(call.duration)
        if call.items:
            items = self._items.get(call.method)
            if items is None:
                items = self._items[call.method] = self.metrics.items.labels(call.method)
            items.inc(call.items)

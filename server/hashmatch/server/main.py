"""`hashmatch serve`: one serving process, or N supervised workers; signals and the
orderly shutdown."""

from __future__ import annotations

import logging
import signal
import threading

from hashmatch.server.app import build
from hashmatch.server.settings import Settings
from hashmatch.server.workers import supervise

log = logging.getLogger(__name__)


def wait_for_signal() -> int:
    """Blocks until SIGTERM or SIGINT; returns the signal number."""
    stopping = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stopping.wait()
    return received[0]


def serve(settings: Settings) -> None:
    if settings.workers > 1:
        supervise(settings)
        return
    service = build(settings)
    host = settings.listen.rsplit(":", 1)[0]
    if service.metrics_port is not None:
        log.info(
            "metrics on port %d", service.metrics_port, extra={"metrics_port": service.metrics_port}
        )
    # Tests and scripts read this line to learn the port when it was chosen by the OS.
    print(f"hashmatch serving on {host}:{service.port}", flush=True)
    signum = wait_for_signal()
    log.info("received signal %d: draining", signum)
    service.stop()
    log.info("stopped")

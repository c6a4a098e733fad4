"""`hashmatch serve`: one serving process, or N supervised workers; signals and the
orderly shutdown.

Before anything maps the store, the data folder is looked at (store/checks.py): a store
that is truncated, emptied, garbled or unreadable is refused with StoreDamaged (one line
naming the file and what to do), never served, never taken for a new store.
"""

from __future__ import annotations

import faulthandler
import logging
import signal
import threading

from hashmatch.server.app import build
from hashmatch.server.settings import Settings
from hashmatch.server.store import checks
from hashmatch.server.workers import supervise

log = logging.getLogger(__name__)


class Signals:
    """SIGTERM and SIGINT, caught from the moment this is made: a signal that arrives while
    the service is still starting is kept, and the service then stops in order at once."""

    def __init__(self) -> None:
        self._received = threading.Event()
        self.signum = 0
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.signum = signum
        self._received.set()

    def wait(self) -> int:
        """Blocks until a signal came (or returns at once if one already did)."""
        self._received.wait()
        return self.signum


def serve(settings: Settings) -> None:
    # A fatal signal the checks did not foresee still leaves a trace on stderr.
    faulthandler.enable()
    state = checks.require(settings.data_dir, create=True)
    if state is checks.State.ABSENT:
        log.info("creating a new store in %s", settings.data_dir)
    if settings.workers > 1:
        supervise(settings)
        return
    signals = Signals()
    with checks.damage_named(settings.data_dir, opening=True):
        service = build(settings)
    checks.mark_created(settings.data_dir)
    host = settings.listen.rsplit(":", 1)[0]
    if service.metrics_port is not None:
        log.info(
            "metrics on port %d", service.metrics_port, extra={"metrics_port": service.metrics_port}
        )
    # Tests and scripts read this line to learn the port when it was chosen by the OS.
    print(f"hashmatch serving on {host}:{service.port}", flush=True)
    signum = signals.wait()
    log.info("received signal %d: draining", signum)
    service.stop()
    log.info("stopped")

"""`hashmatch serve --workers N`: N serving processes on one port and one LMDB folder.

The parent never opens LMDB while workers run: it claims the port, spawns the workers
(the `spawn` start method, so each opens LMDB and builds its own indexes from scratch),
waits until every one serves, then supervises — a worker that dies is started again, and
SIGTERM/SIGINT is forwarded so every worker drains and closes LMDB in order. A worker
also dies with its parent: a parent killed with SIGKILL cannot forward anything, so each
worker asks the kernel for SIGTERM when its parent goes (PR_SET_PDEATHSIG), drains, and
frees the port for the next `hashmatch serve`.

Sharing a port needs SO_REUSEPORT on every socket bound to it, which would also let an
unrelated server (of the same user) join silently. So the parent first binds a probe
socket *without* SO_REUSEPORT: if anything listens on the port, that fails and the
command fails loudly. It then holds a bound, non-listening guard socket with
SO_REUSEPORT for its lifetime, so the port stays claimed even while a worker restarts.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import logging
import multiprocessing
import os
import queue
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from multiprocessing.process import BaseProcess
from typing import Any

from hashmatch.server import logs
from hashmatch.server.app import build
from hashmatch.server.metrics import MULTIPROC_ENV
from hashmatch.server.store import checks

log = logging.getLogger(__name__)

# A worker that dies within this many seconds of starting, this many times in a row,
# is not started again: the whole server stops (e.g. the data folder is unusable).
QUICK_DEATH_SECONDS = 5.0
MAX_QUICK_DEATHS = 3
READY_TIMEOUT = 300.0
# prctl(2): the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1


class PortInUse(RuntimeError):
    pass


def split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen address must be HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


def claim_port(host: str, port: int) -> socket.socket:
    """Fails with PortInUse if anything listens on host:port; returns the guard socket."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR only forgives connections in TIME_WAIT; a listener still conflicts.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)
        port = probe.getsockname()[1]
    except OSError as exc:
        raise PortInUse(f"{host}:{port} is already in use ({exc.strerror})") from None
    finally:
        probe.close()
    guard = socket.socket(family, socket.SOCK_STREAM)
    try:
        guard.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        guard.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        guard.bind((address[0], port, *address[2:]))
    except OSError as exc:
        guard.close()
        raise PortInUse(f"{host}:{port} was taken while claiming it ({exc.strerror})") from None
    return guard


def die_with_parent(parent: int) -> None:
    """Asks the kernel for SIGTERM when the parent dies (Linux), then makes sure it has
    not died already: a parent gone before the request was made sends nothing.

    The kernel sends it when the parent *thread* that forked this process ends: the
    supervisor starts every worker from its main thread, which lives as long as it does."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            log.warning("cannot ask to die with the parent: %s", os.strerror(err))
    if os.getppid() != parent:
        raise SystemExit(1)


def _worker_main(index: int, settings: Any, events: Any, parent: int | None = None) -> None:
    """Entry point of a spawned worker: build, report ready, serve until signalled."""
    faulthandler.enable()
    logs.configure(settings.log_format, settings.log_level)
    stopping = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if parent is not None:
        die_with_parent(parent)
    try:
        # One worker copies the primary into the shared store; two would race each other.
        with checks.damage_named(settings.data_dir, opening=True):
            service = build(settings, reuse_port=True, serve_metrics=False, replicate=index == 0)
    except checks.StoreUnusable as exc:
        events.put(("unusable", index, str(exc)))
        raise SystemExit(1) from None
    except Exception as exc:
        events.put(("failed", index, f"{type(exc).__name__}: {exc}"))
        raise SystemExit(1) from None
    events.put(("ready", index, os.getpid()))
    log.info("worker %d serving", index, extra={"worker": index})
    stopping.wait()
    log.info("worker %d draining", index, extra={"worker": index})
    service.stop()
    log.info("worker %d stopped", index, extra={"worker": index})


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    started: float
    quick_deaths: int = 0


class Supervisor:
    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.ctx = multiprocessing.get_context("spawn")
        self.events: Any = self.ctx.Queue()
        self.workers: dict[int, _Worker] = {}
        self.stopping = threading.Event()

    def start(self, index: int, quick_deaths: int = 0) -> None:
        process = self.ctx.Process(
            target=_worker_main,
            args=(index, self.settings, self.events, os.getpid()),
            name=f"hashmatch-worker-{index}",
        )
        process.start()
        self.workers[index] = _Worker(index, process, time.monotonic(), quick_deaths)

    def wait_ready(self, indexes: set[int]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        waiting = set(indexes)
        while waiting:
            try:
                kind, index, detail = self.events.get(timeout=0.2)
            except queue.Empty:
                for i in list(waiting):
                    proc = self.workers[i].process
                    if not proc.is_alive():
                        raise RuntimeError(f"worker {i} exited with code {proc.exitcode}") from None
                if time.monotonic() > deadline or self.stopping.is_set():
                    raise RuntimeError("workers did not become ready") from None
                continue
            if kind == "unusable":
                raise checks.StoreDamaged(detail)
            if kind == "failed":
                raise RuntimeError(f"worker {index} failed to start: {detail}")
            waiting.discard(index)

    def watch(self) -> None:
        """Restarts workers that die, until stopping is set."""
        from hashmatch.server.metrics import mark_dead

        while not self.stopping.wait(0.5):
            for worker in list(self.workers.values()):
                proc = worker.process
                if proc.is_alive():
                    continue
                assert proc.pid is not None
                mark_dead(proc.pid)
                lived = time.monotonic() - worker.started
                quick = worker.quick_deaths + 1 if lived < QUICK_DEATH_SECONDS else 0
                log.error(
                    "worker %d (pid %d) exited with code %s after %.1f s",
                    worker.index,
                    proc.pid,
                    proc.exitcode,
                    lived,
                )
                if quick >= MAX_QUICK_DEATHS:
                    raise RuntimeError(f"worker {worker.index} keeps dying; giving up")
                self.start(worker.index, quick)
                self._drain_events()

    def _drain_events(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                kind, index, detail = self.events.get_nowait()
                if kind in ("failed", "unusable"):
                    log.error("worker %d failed to start: %s", index, detail)

    def stop(self) -> None:
        """Forwards SIGTERM to every worker and waits for them to drain."""
        for worker in self.workers.values():
            if worker.process.is_alive() and worker.process.pid is not None:
                os.kill(worker.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.grace + 30.0
        for worker in self.workers.values():
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                log.error("worker %d did not stop in time; killing it", worker.index)
                worker.process.kill()
                worker.process.join()


def supervise(settings: Any) -> None:
    """Runs settings.workers serving processes until SIGTERM/SIGINT."""
    from hashmatch.server import demo
    from hashmatch.server.metrics import aggregate_registry, serve_http
    from hashmatch.server.store import Store

    host, port = split_listen(settings.listen)
    guard = claim_port(host, port)
    port = guard.getsockname()[1]
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if settings.demo:
        # Once, before any worker opens LMDB (spawned workers inherit no handle).
        with checks.damage_named(settings.data_dir, opening=True):
            store = Store(settings.data_dir, map_size=settings.map_size)
        try:
            demo.ensure_demo(store, settings.data_dir)
        finally:
            store.close()
    metrics_dir = tempfile.mkdtemp(prefix="hashmatch-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir  # read by each spawned worker at import
    supervisor = Supervisor(replace(settings, listen=listen, demo=False))
    metrics_http = None

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received signal %d: stopping workers", signum)
        supervisor.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        for i in range(settings.workers):
            supervisor.start(i)
        supervisor.wait_ready(set(range(settings.workers)))
        checks.mark_created(settings.data_dir)
        if settings.metrics_listen:
            metrics_http, metrics_port = serve_http(
                settings.metrics_listen, aggregate_registry(metrics_dir)
            )
            log.info("metrics on port %d", metrics_port, extra={"metrics_port": metrics_port})
        log.info("%d workers serving on %s", settings.workers, listen)
        # Tests and scripts read this line to learn the port when it was chosen by the OS.
        print(f"hashmatch serving on {listen}", flush=True)
        supervisor.watch()
    finally:
        supervisor.stop()
        if metrics_http is not None:
            metrics_http.shutdown()
            metrics_http.server_close()
        guard.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        os.environ.pop(MULTIPROC_ENV, None)
    log.info("stopped")

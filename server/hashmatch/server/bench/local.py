"""A temporary local `hashmatch serve` on 127.0.0.1 (an OS-chosen port) for the sign-off."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from hashmatch.server.store import Role, Store

START_TIMEOUT = 600.0


def create_tenants(data_dir: Path) -> dict[str, str]:
    """Creates a platform and a hotline tenant directly in the store; returns their tokens."""
    store = Store(data_dir)
    try:
        return {
            "platform": store.add_tenant("signoff-platform", Role.PLATFORM),
            "hotline": store.add_tenant("signoff-hotline", Role.HOTLINE),
        }
    finally:
        store.close()


def _command() -> list[str]:
    exe = shutil.which("hashmatch", path=str(Path(sys.executable).parent))
    if exe:
        return [exe]
    return [sys.executable, "-c", "from hashmatch.server.cli import main; raise SystemExit(main())"]


@dataclass
class LocalServer:
    """`hashmatch serve --workers N` on a data folder; `start()` returns once it serves."""

    data_dir: Path
    workers: int = 1
    log_path: Path | None = None
    extra: tuple[str, ...] = ()
    proc: subprocess.Popen[str] | None = None
    address: str = ""
    start_seconds: float = 0.0
    _log: IO[str] | None = None

    def start(self) -> LocalServer:
        command = [*_command(), "serve", "--data-dir", str(self.data_dir)]
        command += ["--listen", "127.0.0.1:0", "--workers", str(self.workers), *self.extra]
        self._log = open(self.log_path or os.devnull, "w")  # noqa: SIM115
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self._log, text=True, start_new_session=True
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        line = ""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                break
            if self.proc.poll() is not None:
                break
        if not line.startswith("hashmatch serving on "):
            self.stop()
            raise RuntimeError(
                f"hashmatch serve did not start (see {self.log_path or 'its log'}): {line!r}"
            )
        self.start_seconds = time.perf_counter() - t0
        self.address = line.split()[-1]
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 60.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

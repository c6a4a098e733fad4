"""The service's settings, passed explicitly from the CLI to every part that needs them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hashmatch.server.store import DEFAULT_MAP_SIZE


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    listen: str = "127.0.0.1:50051"
    workers: int = 1
    # LMDB address space reserved up front; the file only grows as data is written.
    map_size: int = DEFAULT_MAP_SIZE
    # How often a serving process polls the change log for batches committed elsewhere.
    poll_interval: float = 0.02
    # gRPC handler threads per process; calls beyond this wait in grpcio's queue.
    threads: int = 16
    max_message_bytes: int = 64 * 1024 * 1024
    # Seconds in-flight calls get to finish on shutdown.
    grace: float = 5.0
    # Create the benign demo list (and demo tenants) when the data folder has none.
    demo: bool = False
    # A read replica's primary (HOST:PORT) and the replica token it authenticates with.
    follow: str | None = None
    follow_token: str | None = None

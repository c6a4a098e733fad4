"""Shared fixtures: a real server on an ephemeral loopback port over a real LMDB folder."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from platform_skips import (  # noqa: F401  (CI fails on undocumented skips)
    pytest_make_collect_report,
    pytest_runtest_makereport,
)

from hashmatch.client import (
    Connection,
    ListClient,
    MatchClient,
    RetryPolicy,
    Unauthenticated,
    Unavailable,
)
from hashmatch.server.app import Service, build
from hashmatch.server.settings import Settings
from hashmatch.server.store import Role

# Meta's PDQ test data, a copy kept in the repository (tests/data/pdq, its README).
PDQ_DATA = Path(__file__).resolve().parent / "data" / "pdq"


@dataclass
class Running:
    service: Service
    tokens: dict[str, str]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.service.port}"

    def connection(self, tenant: str | None) -> Connection:
        token = self.tokens[tenant] if tenant is not None else None
        # No retries: tests assert the first answer.
        return Connection(server=self.address, token=token, retry=RetryPolicy(attempts=1))

    def matcher(self, tenant: str = "platform") -> MatchClient:
        return MatchClient(self.connection(tenant))

    def lists(self, tenant: str = "hotline-a") -> ListClient:
        return ListClient(self.connection(tenant))


TENANTS = {
    "platform": Role.PLATFORM,
    "hotline-a": Role.HOTLINE,
    "hotline-b": Role.HOTLINE,
    "replica": Role.REPLICA,
}


def start(data_dir: Path, tokens: dict[str, str] | None = None) -> Running:
    service = build(Settings(data_dir=data_dir, listen="127.0.0.1:0", poll_interval=0.01))
    if tokens is None:
        tokens = {name: service.store.add_tenant(name, role) for name, role in TENANTS.items()}
    return Running(service, tokens)


def start_replica(data_dir: Path, primary: str, tokens: dict[str, str]) -> Running:
    """A replica server following `primary` (HOST:PORT) with the replica tenant's token."""
    service = build(
        Settings(
            data_dir=data_dir,
            listen="127.0.0.1:0",
            poll_interval=0.01,
            follow=primary,
            follow_token=tokens["replica"],
        )
    )
    return Running(service, tokens)


def same_lists(primary: Running, replica: Running) -> bool:
    """Whether the replica holds every list of the primary at the same version and digest."""
    try:
        # (A restarted primary: gRPC shares the replica's connection backoff with clients.)
        ours = {(x.name, x.version, x.digest) for x in primary.lists("replica").list_lists()}
    except Unavailable:
        return False
    try:
        theirs = {(x.name, x.version, x.digest) for x in replica.lists("replica").list_lists()}
    except Unauthenticated:  # tenants not copied yet
        return False
    return ours == theirs


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    r = start(tmp_path)
    yield r
    r.service.stop(grace=0)


@pytest.fixture
def shared_pdq() -> Path:
    # Part of the repository: its absence is a broken checkout, not a skip.
    assert PDQ_DATA.is_dir(), f"PDQ test data not found at {PDQ_DATA}"
    return PDQ_DATA

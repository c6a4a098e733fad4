"""How a client reaches the server: address, bearer token, TLS, retries."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc

from hashmatch.client.errors import HashmatchError, from_rpc_error

DEFAULT_SERVER = "127.0.0.1:50051"
# Lists of millions of entries travel in batches; keep headroom over the server's own cap.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)

T = TypeVar("T")


@dataclass(frozen=True)
class TlsConfig:
    """Server CA (None = system roots) and, for mTLS, the client's certificate and key."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        def read(p: Path | None) -> bytes | None:
            return p.read_bytes() if p is not None else None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_file),
            private_key=read(self.key_file),
            certificate_chain=read(self.cert_file),
        )


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter on UNAVAILABLE and RESOURCE_EXHAUSTED."""

    attempts: int = 4
    initial_backoff: float = 0.1
    max_backoff: float = 5.0

    def delay(self, attempt: int, hint: float | None) -> float:
        if hint is not None:
            return min(hint, self.max_backoff)
        return random.uniform(0, min(self.max_backoff, self.initial_backoff * 2**attempt))


@dataclass(frozen=True)
class Connection:
    """Everything needed to open a channel. `from_env` reads HASHMATCH_SERVER/TOKEN."""

    server: str = DEFAULT_SERVER
    token: str | None = None
    tls: TlsConfig | None = None
    timeout: float = 10.0
    retry: RetryPolicy = RetryPolicy()

    @classmethod
    def from_env(
        cls, server: str | None = None, token: str | None = None, **kwargs: object
    ) -> Connection:
        return cls(
            server=server or os.environ.get("HASHMATCH_SERVER") or DEFAULT_SERVER,
            token=token or os.environ.get("HASHMATCH_TOKEN") or None,
            **kwargs,  # type: ignore[arg-type]
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def channel_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ]

    def open_channel(self) -> grpc.Channel:
        if self.tls is None:
            return grpc.insecure_channel(self.server, options=self.channel_options())
        return grpc.secure_channel(
            self.server, self.tls.credentials(), options=self.channel_options()
        )

    def call(self, fn: Callable[[], T], *, retry: bool = True) -> T:
        """Runs one call, mapping failures to typed errors and retrying transient ones."""
        attempts = self.retry.attempts if retry else 1
        for attempt in range(attempts):
            try:
                return fn()
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
                if error.code not in _RETRYABLE or attempt == attempts - 1:
                    raise error from None
                time.sleep(self.retry.delay(attempt, error.retry_delay))
        raise HashmatchError("retries exhausted")  # unreachable: the loop returns or raises

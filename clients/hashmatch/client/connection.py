"""How a client reaches the server: address, bearer token, TLS, deadlines and retries.

The retry decisions live in `RetryPolicy` and `Attempts`, which the synchronous clients
(`Connection.call`, `Connection.invoke`) and the asyncio client (`Connection.ainvoke`) share:
only the way they wait (``time.sleep`` or ``await asyncio.sleep``) differs.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

import grpc
import grpc.aio

from hashmatch.client.errors import HashmatchError, from_rpc_error

DEFAULT_SERVER = "127.0.0.1:50051"
# Lists of millions of entries travel in batches; keep headroom over the server's own cap.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
# The shortest time an attempt is given: below this a call cannot even reach the server.
_MIN_ATTEMPT_SECONDS = 0.001

T = TypeVar("T")


@dataclass(frozen=True)
class TlsConfig:
    """Server CA (None = system roots) and, for mTLS, the client's certificate and key.

    ``server_name`` overrides the name checked against the server's certificate (for a
    certificate issued to a name other than the address dialled, e.g. in tests).
    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("mTLS needs both a client certificate and its private key")

    def credentials(self) -> grpc.ChannelCredentials:
        def read(p: Path | None) -> bytes | None:
            return Path(p).read_bytes() if p is not None else None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_file),
            private_key=read(self.key_file),
            certificate_chain=read(self.cert_file),
        )


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter on UNAVAILABLE and RESOURCE_EXHAUSTED.

    ``attempts`` counts the first try. When the server sends a google.rpc ``RetryInfo``
    delay, that delay is honoured (plus up to 10% jitter, so clients told the same delay do
    not come back in step); a requested delay above ``max_retry_delay`` ends the call instead.
    """

    attempts: int = 4
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0
    max_retry_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoffs must be >= 0 and the multiplier >= 1")

    def delay(self, attempt: int, hint: float | None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based)."""
        if hint is not None:
            return hint + random.uniform(0, hint / 10)
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier**attempt)
        return random.uniform(0, ceiling)

    def retryable(self, error: HashmatchError) -> bool:
        if error.code not in RETRYABLE_CODES:
            return False
        return error.retry_delay is None or error.retry_delay <= self.max_retry_delay


class Attempts:
    """The attempts of one call under a policy and an overall deadline (None = no deadline).

    Use: ``fn(attempts.remaining())`` for each try; on ``grpc.RpcError`` call
    ``attempts.failed(exc)``, which either raises the typed error (not retryable, attempts
    used up, or the wait would pass the deadline) or returns the seconds to wait first.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        timeout: float | None,
        *,
        retry: bool = True,
        clock: Callable[[], float] = time.monotonic,
        tls: bool | None = None,
        client_cert: bool = False,
    ) -> None:
        self.policy = policy
        # How the channel was set up, to explain a failed TLS handshake (errors.tls_hint).
        self.tls = tls
        self.client_cert = client_cert
        self.limit = policy.attempts if retry else 1
        self.clock = clock
        self.deadline = None if timeout is None else clock() + timeout
        self.made = 0
        self.errors: list[HashmatchError] = []

    def remaining(self) -> float | None:
        """The timeout to give the next attempt: whatever is left of the overall deadline."""
        if self.deadline is None:
            return None
        return max(self.deadline - self.clock(), _MIN_ATTEMPT_SECONDS)

    def failed(self, exc: grpc.RpcError) -> float:
        error = from_rpc_error(exc, tls=self.tls, client_cert=self.client_cert)
        self.errors.append(error)
        self.made += 1
        if not self.policy.retryable(error) or self.made >= self.limit:
            raise error from None
        wait = self.policy.delay(self.made - 1, error.retry_delay)
        if self.deadline is not None and self.clock() + wait >= self.deadline:
            raise error from None
        return wait


@dataclass(frozen=True)
class Connection:
    """Everything needed to open a channel. `from_env` reads HASHMATCH_SERVER/TOKEN.

    ``timeout`` is the deadline of one SDK call in seconds, retries and waits included
    (None: no deadline).
    """

    server: str = DEFAULT_SERVER
    token: str | None = None
    tls: TlsConfig | None = None
    timeout: float | None = 10.0
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

    def channel_options(self) -> list[tuple[str, int | str]]:
        options: list[tuple[str, int | str]] = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            # gRPC's own reconnect backoff (1 s, growing to 120 s) would make every retry of a
            # server that is back fail fast until it elapses; follow the retry policy instead.
            ("grpc.initial_reconnect_backoff_ms", max(int(self.retry.initial_backoff * 1000), 1)),
            ("grpc.max_reconnect_backoff_ms", max(int(self.retry.max_backoff * 1000), 1)),
        ]
        if self.tls is not None and self.tls.server_name:
            options.append(("grpc.ssl_target_name_override", self.tls.server_name))
        return options

    def open_channel(self) -> grpc.Channel:
        if self.tls is None:
            return grpc.insecure_channel(self.server, options=self.channel_options())
        return grpc.secure_channel(
            self.server, self.tls.credentials(), options=self.channel_options()
        )

    def open_aio_channel(self) -> grpc.aio.Channel:
        """An asyncio channel; open it inside the event loop that will use it."""
        if self.tls is None:
            return grpc.aio.insecure_channel(self.server, options=self.channel_options())
        return grpc.aio.secure_channel(
            self.server, self.tls.credentials(), options=self.channel_options()
        )

    def attempts(self, timeout: float | None = None, *, retry: bool = True) -> Attempts:
        return Attempts(
            self.retry,
            self.timeout if timeout is None else timeout,
            retry=retry,
            tls=self.tls is not None,
            client_cert=self.tls is not None and self.tls.cert_file is not None,
        )

    def invoke(
        self,
        fn: Callable[[float | None], T],
        *,
        timeout: float | None = None,
        retry: bool = True,
    ) -> T:
        """Runs ``fn(per_attempt_timeout)`` until it succeeds, within one overall deadline.

        Failures become typed errors; UNAVAILABLE and RESOURCE_EXHAUSTED are retried per the
        policy. ``timeout`` overrides the connection's deadline for this call.
        """
        attempts = self.attempts(timeout, retry=retry)
        while True:
            try:
                return fn(attempts.remaining())
            except grpc.RpcError as exc:
                wait = attempts.failed(exc)
            time.sleep(wait)

    async def ainvoke(
        self,
        fn: Callable[[float | None], Awaitable[T]],
        *,
        timeout: float | None = None,
        retry: bool = True,
    ) -> T:
        """The asyncio form of `invoke`: same policy, same deadline rules."""
        attempts = self.attempts(timeout, retry=retry)
        while True:
            try:
                return await fn(attempts.remaining())
            except grpc.RpcError as exc:
                wait = attempts.failed(exc)
            await asyncio.sleep(wait)

    def call(self, fn: Callable[[], T], *, retry: bool = True) -> T:
        """Runs one call whose attempts carry their own timeout (no overall deadline)."""
        attempts = Attempts(
            self.retry,
            None,
            retry=retry,
            tls=self.tls is not None,
            client_cert=self.tls is not None and self.tls.cert_file is not None,
        )
        while True:
            try:
                return fn()
            except grpc.RpcError as exc:
                wait = attempts.failed(exc)
            time.sleep(wait)


class ChannelClient:
    """Owns one channel to the server: close it, or use the client as a context manager."""

    def __init__(self, connection: Connection | None = None) -> None:
        self.connection = connection or Connection.from_env()
        self._channel = self.connection.open_channel()

    def _kw(self) -> dict[str, object]:
        return {"timeout": self.connection.timeout, "metadata": self.connection.metadata()}

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


__all__ = [
    "DEFAULT_SERVER",
    "RETRYABLE_CODES",
    "Attempts",
    "ChannelClient",
    "Connection",
    "RetryPolicy",
    "TlsConfig",
]
